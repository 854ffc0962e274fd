"""The HTML report of `erlnet evaluate`: one self-contained page next to its video and plots.

```
REPORT_DIR/
  index.html          metrics table, side-by-side video, plots, notes (all links relative)
  side_by_side.mp4    truth | generated, with the held-out audio (written by `evaluate_subject`)
  mouth.png           mouth opening of the real and rendered frames against the audio loudness
  pose.png            head pose (pitch, yaw, roll): driving motion, seen in real and in rendered frames
  errors.png          per-frame PSNR, neck-band error and head-pose error over time
  strip.png           a few frames: truth / generated / |error| heat map
  metrics.json        the metrics and every per-frame curve, also of the training frames (NaN as null)
```
Plots are drawn with matplotlib when it is installed (it is not an erlnet dependency), otherwise
with OpenCV line drawings of the same curves.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from erlnet.eval.avatar import TABLE, AvatarEvaluation, format_value
from erlnet.eval.motion import json_safe

PLOTS = ("mouth.png", "pose.png", "errors.png")
STRIP = "strip.png"
INDEX = "index.html"

# What each row of the table means, for the reader of the report.
HELP = {
    "psnr": "pixel fidelity to the real frame (higher is better)",
    "ssim": "structural similarity to the real frame (1 = identical)",
    "mouth_psnr": "PSNR inside a box around the real frame's lips (grown by a quarter of the mouth width)",
    "mouth_ssim": "SSIM inside that box",
    "mouth_open_corr": "correlation of the rendered and the real mouth opening over the frames (1 = follows it)",
    "mouth_open_ratio": "how far the rendered mouth opens: 5-95 percentile range of its opening / the real "
                        "one's (1 = as far, 0 = does not move)",
    "cpbd_generated": "no-reference sharpness of the rendered frames (higher = sharper)",
    "cpbd_truth": "the same for the real frames: what the renderer should reach",
    "mouth_lmd_px": "distance of the tracked mouth points, rendered vs real (lower is better)",
    "neck_l1": "mean error in the strip where head meets torso (lower is better)",
    "neck_psnr": "PSNR inside that strip",
    "pose_error_deg": "angle between the head pose seen in rendered and in real frames",
    "face_found_generated": "share of rendered frames in which the tracker finds a face",
    "render_fps": "renderer alone, on the evaluation device",
    "lpips": "learned perceptual distance to the real frame, VGG LPIPS (lower is better; needs weights)",
    "fid": "Frechet Inception distance, rendered vs real frames (lower is better; biased high on few "
           "frames: compare avatars on the same frames; needs weights)",
    "lse_d": "SyncNet distance of lips and audio at the best offset (lower is better; needs weights)",
    "lse_c": "SyncNet confidence: median minus best distance over offsets (higher is better)",
    "av_offset": "offset of the best lip-audio match; 0 = in sync (> 0: the video lags)",
    "lse_d_truth": "LSE-D of the real frames: what the renderer should reach",
    "lse_c_truth": "LSE-C of the real frames: what the renderer should reach",
    "train_psnr": "PSNR on frames spread over the training part (what the avatar was fitted to)",
    "train_mouth_psnr": "mouth-box PSNR on those training frames",
    "train_mouth_open_corr": "mouth opening correlation on those training frames",
    "train_mouth_open_ratio": "mouth opening amplitude ratio on those training frames",
}

COLORS = {"truth": (0.12, 0.47, 0.71), "generated": (0.85, 0.37, 0.01), "driving": (0.4, 0.4, 0.4),
          "audio": (0.5, 0.5, 0.5), "other": (0.17, 0.63, 0.17)}


@dataclass
class Line:
    """One curve: y (T,) with NaN gaps; `right` puts it on a second y axis."""

    label: str
    y: np.ndarray
    color: tuple[float, float, float]
    right: bool = False
    dashed: bool = False


@dataclass
class Panel:
    """One plot panel: curves over the shared time axis."""

    title: str
    ylabel: str
    lines: list[Line]
    right_label: str = ""


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- plots


def _plot_matplotlib(path: Path, t: np.ndarray, panels: list[Panel], xlabel: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    fig = Figure(figsize=(9, 2.4 * len(panels)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, p in zip(axes, panels, strict=True):
        twin = ax.twinx() if any(ln.right for ln in p.lines) else None
        handles = []
        for ln in p.lines:
            target = twin if (ln.right and twin is not None) else ax
            (h,) = target.plot(t, ln.y, color=ln.color, linestyle="--" if ln.dashed else "-", linewidth=1.4,
                               label=ln.label, marker="." if len(t) < 40 else None)
            handles.append(h)
        if not any(np.isfinite(ln.y).any() for ln in p.lines):
            ax.text(0.5, 0.5, "not measured in this clip", transform=ax.transAxes, ha="center", va="center",
                    color="0.4")
        ax.set_title(p.title, fontsize=10, loc="left")
        ax.set_ylabel(p.ylabel)
        ax.grid(alpha=0.3)
        if twin is not None:
            twin.set_ylabel(p.right_label)
        ax.legend(handles=handles, fontsize=8, loc="upper right", framealpha=0.8)
    axes[-1].set_xlabel(xlabel)
    fig.savefig(path)


def _to_bgr(c: tuple[float, float, float]) -> tuple[int, int, int]:
    return int(c[2] * 255), int(c[1] * 255), int(c[0] * 255)


def _plot_cv2(path: Path, t: np.ndarray, panels: list[Panel], xlabel: str) -> None:
    """The same panels as plain OpenCV line drawings (when matplotlib is not installed)."""
    w, h, ml, mr, mt, mb = 900, 220, 60, 60, 28, 26
    font = cv2.FONT_HERSHEY_SIMPLEX
    images = []
    for p in panels:
        img = np.full((h, w, 3), 255, np.uint8)
        x0, x1, y0, y1 = ml, w - mr, mt, h - mb
        cv2.rectangle(img, (x0, y0), (x1, y1), (180, 180, 180), 1)
        cv2.putText(img, p.title, (x0, 18), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        t0 = float(t[0])
        t1 = float(t[-1]) if t[-1] > t[0] else t0 + 1.0
        cv2.putText(img, f"{t0:.2f}", (x0, y1 + 14), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{t1:.2f}", (x1 - 30, y1 + 14), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        if not any(np.isfinite(ln.y).any() for ln in p.lines):
            cv2.putText(img, "not measured in this clip", (w // 2 - 100, h // 2), font, 0.45, (100, 100, 100), 1,
                        cv2.LINE_AA)
        for side in (False, True):
            lines = [ln for ln in p.lines if ln.right == side]
            vals = np.concatenate([ln.y[np.isfinite(ln.y)] for ln in lines]) if lines else np.zeros(0)
            if vals.size == 0:
                continue
            lo, hi = float(vals.min()), float(vals.max())
            hi = hi if hi > lo else lo + 1.0
            label_x = x1 + 4 if side else 2
            cv2.putText(img, f"{hi:.3g}", (label_x, y0 + 10), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(img, f"{lo:.3g}", (label_x, y1), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
            for ln in lines:
                px = x0 + (t - t0) / (t1 - t0) * (x1 - x0)
                py = y1 - (ln.y - lo) / (hi - lo) * (y1 - y0)
                ok = np.isfinite(py)
                pts = np.stack([px, py], axis=1)
                for a, b, good in zip(pts[:-1], pts[1:], ok[:-1] & ok[1:], strict=True):
                    if good:
                        cv2.line(img, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)),
                                 _to_bgr(ln.color), 1, cv2.LINE_AA)
                for q in pts[ok]:
                    cv2.circle(img, tuple(np.round(q).astype(int)), 2, _to_bgr(ln.color), -1)
        for k, ln in enumerate(p.lines):  # legend
            cv2.putText(img, ln.label + (" (right axis)" if ln.right else ""), (x1 - 260, y0 + 14 + 14 * k),
                        font, 0.4, _to_bgr(ln.color), 1, cv2.LINE_AA)
        images.append(img)
    out = np.concatenate(images, axis=0)
    cv2.putText(out, xlabel, (w // 2 - 20, out.shape[0] - 6), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), out)


def plot_panels(path: Path, t: np.ndarray, panels: list[Panel], xlabel: str = "time (s)",
                use_matplotlib: bool | None = None) -> Path:
    """Draw `panels` over time `t` (T,) seconds into the PNG `path` (matplotlib when installed)."""
    mpl = has_matplotlib() if use_matplotlib is None else use_matplotlib
    (_plot_matplotlib if mpl else _plot_cv2)(path, np.asarray(t, np.float64), panels, xlabel)
    return path


def report_panels(ev: AvatarEvaluation) -> dict[str, list[Panel]]:
    """The panels of mouth.png, pose.png and errors.png."""
    s = ev.series
    mouth = [Line("real (tracked)", s["mouth_open_truth"], COLORS["truth"]),
             Line("rendered (tracked)", s["mouth_open_generated"], COLORS["generated"])]
    if "audio_db" in s:
        mouth.append(Line("audio loudness", s["audio_db"], COLORS["audio"], right=True, dashed=True))
    pose = []
    for j, name in enumerate(("pitch", "yaw", "roll")):
        pose.append(Panel(f"head {name}", "deg", [
            Line("driving motion", ev.pose["driving"][:, j], COLORS["driving"], dashed=True),
            Line("seen in real frames", ev.pose["truth"][:, j], COLORS["truth"]),
            Line("seen in rendered frames", ev.pose["generated"][:, j], COLORS["generated"])]))
    errors = [Panel("PSNR per frame", "dB", [Line("PSNR", s["psnr"], COLORS["generated"])]),
              Panel("sharpness (CPBD) per frame", "CPBD", [Line("real", s["cpbd_truth"], COLORS["truth"]),
                                                            Line("rendered", s["cpbd_generated"], COLORS["generated"])]),
              Panel("neck-band |error| per frame", "/255", [Line("neck |error|", s["neck_l1"], COLORS["generated"])]),
              Panel("head-pose error per frame (rendered vs real, as tracked)", "deg",
                    [Line("pose error", s["pose_error_deg"], COLORS["other"])])]
    if "lpips" in s:  # only when LPIPS weights were given
        errors.insert(1, Panel("LPIPS per frame (rendered vs real)", "LPIPS",
                               [Line("LPIPS", s["lpips"], COLORS["generated"])]))
    return {"mouth.png": [Panel("mouth opening (inner-lip gap / eye distance) and audio loudness",
                                "mouth opening", mouth, right_label="dB")],
            "pose.png": pose, "errors.png": errors}


def error_strip(samples: list[tuple[int, np.ndarray, np.ndarray]], max_size: int = 192) -> np.ndarray:
    """Rows truth / generated / |error| (heat map, 0..64 of 255 mapped to the full scale) for each
    sampled frame, side by side, the frame index written on the truth -> (3 s, n s, 3) uint8 RGB,
    with s <= max_size."""
    cols = []
    for index, truth, pred in samples:
        err = np.abs(truth.astype(np.int16) - pred.astype(np.int16)).max(axis=2)
        heat = cv2.applyColorMap(np.clip(err * 4, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
        col = np.concatenate([truth, pred, heat], axis=0)
        s = truth.shape[0]
        if s > max_size:
            col = cv2.resize(col, (max_size, 3 * max_size), interpolation=cv2.INTER_AREA)
        else:
            col = col.copy()
        scale = col.shape[1] / 256
        for color, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # outlined: readable on any image
            cv2.putText(col, f"frame {index}", (4, max(10, int(18 * scale))), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5 * scale, color, thick, cv2.LINE_AA)
        cols.append(col)
    return np.ascontiguousarray(np.concatenate(cols, axis=1))


# ---------------------------------------------------------------- HTML

CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
td.v{text-align:right;font-variant-numeric:tabular-nums}.help{color:#666;font-size:90%}
img,video{max-width:100%;border:1px solid #ddd}code{background:#f4f4f4;padding:1px 4px}h2{margin-top:1.6em}"""


def _rows(ev: AvatarEvaluation) -> str:
    out = []
    for key, label, unit, spec in TABLE:
        raw = ev.metrics.get(key)
        value = format_value(raw, spec)
        unit = "" if isinstance(raw, str) else unit  # a reason, not a number
        out.append(f"<tr><td>{html.escape(label)}</td><td class=v>{html.escape(value)}</td>"
                   f"<td>{html.escape(unit)}</td><td class=help>{html.escape(HELP.get(key, ''))}</td></tr>")
    return "\n".join(out)


def render_html(ev: AvatarEvaluation, video: str | None, plots: list[str], strip: str | None) -> str:
    """The report page; `video`, `plots`, `strip` are paths relative to the page."""
    e = html.escape
    duration = len(ev.frames) / ev.fps
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>erlnet evaluation: {e(Path(ev.subject).name)}</title><style>{CSS}</style></head><body>",
        "<h1>Avatar evaluation</h1>",
        f"<p>Avatar <code>{e(ev.avatar)}</code> re-rendering the held-out part of subject <code>{e(ev.subject)}</code>: "
        f"{len(ev.frames)} frames (subject frames {int(ev.frames[0])}-{int(ev.frames[-1])}, {duration:.1f} s at "
        f"{ev.fps:g} fps), driven by their own tracked motion, compared at {ev.image_size}x{ev.image_size}."
        + (f" The rows \"training frames\" score {len(ev.train_frames)} frames spread over the training part "
           f"(subject frames {int(ev.train_frames[0])}-{int(ev.train_frames[-1])}) the same way."
           if len(ev.train_frames) else "") + "</p>",
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>unit</th><th></th></tr>",
        _rows(ev), "</table>",
    ]
    if video:
        parts += ["<h2>Side by side</h2><p>Left: real frames. Right: rendered by the avatar. With the held-out audio.</p>",
                  f'<video controls preload=metadata src="{e(video)}"></video>',
                  f'<p><a href="{e(video)}">{e(video)}</a></p>']
    m = ev.metrics
    captions = {"mouth.png": "Mouth opening over time, tracked in the real and in the rendered frames, "
                             "against the audio loudness (dB). The rendered mouth should follow the real one: "
                             f"correlation {format_value(m.get('mouth_open_corr'), '.3f')}, amplitude ratio "
                             f"(rendered / real 5-95 percentile range) {format_value(m.get('mouth_open_ratio'), '.2f')}.",
                "pose.png": "Head pose over time: the driving motion, and the pose the tracker sees in the real and "
                            "in the rendered frames.",
                "errors.png": "Per-frame errors and sharpness: where in the clip the renderer does worst. The "
                              "head-pose error includes the tracker's own noise (compare the real-frame curve "
                              "with the driving motion above)."}
    headings = {"mouth.png": "Mouth opening and audio", "pose.png": "Head pose", "errors.png": "Per-frame errors"}
    for p in plots:
        parts += [f"<h2>{e(headings.get(p, Path(p).stem))}</h2><p>{e(captions.get(Path(p).name, ''))}</p>",
                  f'<img src="{e(p)}" alt="{e(p)}">']
    if strip:
        parts += ["<h2>Error strip</h2><p>Sampled frames: real (top), rendered (middle), |error| heat map "
                  "(bottom, full scale = 64/255).</p>", f'<img src="{e(strip)}" alt="{e(strip)}">']
    if ev.notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{e(n)}</li>" for n in ev.notes] + ["</ul>"]
    parts += ['<p class=help>Numbers and per-frame curves: <a href="metrics.json">metrics.json</a>.</p>',
              "</body></html>"]
    return "\n".join(parts)


def to_json(ev: AvatarEvaluation) -> dict[str, Any]:
    """Metrics and per-frame curves as JSON-able data (NaN -> None)."""
    return json_safe({
        "avatar": ev.avatar, "subject": ev.subject, "fps": ev.fps, "image_size": ev.image_size,
        "frames": ev.frames.tolist(), "metrics": ev.metrics, "notes": ev.notes,
        "series": {k: np.asarray(v, np.float64).tolist() for k, v in ev.series.items()},
        "train_frames": np.asarray(ev.train_frames).tolist(),
        "train_series": {k: np.asarray(v, np.float64).tolist() for k, v in ev.train_series.items()},
        "pose_deg": {k: np.asarray(v, np.float64).tolist() for k, v in ev.pose.items()},
    })


def write_report(ev: AvatarEvaluation, out_dir: str | Path, use_matplotlib: bool | None = None) -> Path:
    """Write the report (see the module doc) into `out_dir`; returns the path of index.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = np.asarray(ev.frames, np.float64) / ev.fps
    plots = []
    for name, panels in report_panels(ev).items():
        plot_panels(out / name, t, panels, use_matplotlib=use_matplotlib)
        plots.append(name)
    strip = None
    if ev.samples:
        cv2.imwrite(str(out / STRIP), error_strip(ev.samples)[..., ::-1])
        strip = STRIP
    video = None
    if ev.video is not None and Path(ev.video).exists():
        video = Path(os.path.relpath(Path(ev.video).resolve(), out.resolve())).as_posix()  # relative, wherever it is
    (out / "metrics.json").write_text(json.dumps(to_json(ev), indent=1))
    index = out / INDEX
    index.write_text(render_html(ev, video, plots, strip))
    return index
