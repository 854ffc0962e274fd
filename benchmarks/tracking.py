"""Landmark jitter and mouth lag of the tracker + smoother (issue: smoothing must remove jitter
without lagging the mouth).

- Still stretch with known zero motion: a photo held still for 4 s with sensor noise, H.264 encoded
  (every frame-to-frame landmark displacement is jitter).
- Real clips: jitter of the rigid points in the stillest 1 s window of the clip, and the mouth:
  lag of the smoothed mouth opening against the unsmoothed track (cross-correlation peak, frames)
  and how much of its frame-to-frame motion survives (correlation of the two, std ratio).

    python -m benchmarks.tracking
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED_DATA, table, write_json

CLIPS = ["sadtalker/WDA_KatieHill_000.mp4", "retalking/face_3.mp4", "grid_s1/video/bbaf2n.mpg",
         "styletalk/video/Obama_clip1.mp4"]


def _track(video: Path, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Raw and smoothed landmarks (T, 478, 3) in working-crop pixels, via the real pipeline steps."""
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "s"
        run_preprocess(video, root, PreprocessConfig(size=size, tracking_only=True), show_progress=False)
        tr = np.load(root / "tracking.npz")
        return tr["landmarks_raw"].astype(np.float64), tr["landmarks"].astype(np.float64)


def _still_video(path: Path, seconds: float = 4.0, noise: float = 3.0) -> Path:
    from skimage import data

    from erlnet.io.video import VideoWriter

    img = data.astronaut()[0:384, 64:448].astype(np.float32)
    rng = np.random.default_rng(0)
    with VideoWriter(path, fps=25) as w:
        for _ in range(int(seconds * 25)):
            w.write(np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8))
    return path


def _stillest_window(lms: np.ndarray, n: int = 25) -> slice:
    from erlnet.face import topology as tp

    speed = np.linalg.norm(np.diff(lms[:, tp.RIGID, :2].mean(axis=1), axis=0), axis=1)
    smooth = np.convolve(speed, np.ones(n) / n, mode="valid")
    start = int(np.argmin(smooth))
    return slice(start, start + n + 1)


def bench() -> dict[str, Any]:
    from erlnet.face import topology as tp
    from erlnet.face.smoothing import jitter, lag_frames

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        raw, sm = _track(_still_video(Path(tmp) / "still.mp4"))
    out["still_photo"] = {
        "jitter_raw_px": jitter(raw), "jitter_smoothed_px": jitter(sm),
        "jitter_raw_mouth_px": jitter(raw, points=tp.MOUTH), "jitter_smoothed_mouth_px": jitter(sm, points=tp.MOUTH),
    }
    for clip in CLIPS:
        video = SHARED_DATA / clip
        if not video.exists():
            continue
        raw, sm = _track(video)
        win = _stillest_window(sm)
        m_raw, m_sm = tp.mouth_opening(raw), tp.mouth_opening(sm)
        d_raw, d_sm = np.diff(m_raw), np.diff(m_sm)
        out[clip] = {
            "frames": len(raw),
            "still_window": [win.start, win.stop],
            "jitter_rigid_raw_px": jitter(raw, win, tp.RIGID),
            "jitter_rigid_smoothed_px": jitter(sm, win, tp.RIGID),
            "mouth_lag_frames": lag_frames(m_raw, m_sm, max_lag=5),
            "mouth_velocity_lag_frames": lag_frames(d_raw, d_sm, max_lag=5),
            "mouth_corr": float(np.corrcoef(m_raw, m_sm)[0, 1]),
            "mouth_std_ratio": float(m_sm.std() / m_raw.std()),
        }
    return out


def report(res: dict[str, Any]) -> str:
    s = res["still_photo"]
    rows = [("still photo (true motion 0)",
             f"jitter {s['jitter_raw_px']:.3f} -> {s['jitter_smoothed_px']:.3f} px "
             f"({s['jitter_raw_px'] / s['jitter_smoothed_px']:.1f}x less); mouth "
             f"{s['jitter_raw_mouth_px']:.3f} -> {s['jitter_smoothed_mouth_px']:.3f} px")]
    for clip, r in res.items():
        if clip == "still_photo":
            continue
        rows.append((Path(clip).name,
                     f"rigid jitter (stillest 1 s) {r['jitter_rigid_raw_px']:.3f} -> {r['jitter_rigid_smoothed_px']:.3f} px; "
                     f"mouth lag {r['mouth_lag_frames']} fr (velocity {r['mouth_velocity_lag_frames']}), "
                     f"r={r['mouth_corr']:.3f}, std ratio {r['mouth_std_ratio']:.2f}"))
    return table("tracking jitter and mouth lag (512 px crops)", rows)


def main(argv: list[str] | None = None) -> None:
    res = bench()
    print(report(res))
    print(f"json: {write_json('tracking', res)}")


if __name__ == "__main__":
    main()
