"""Synthetic subjects: generation speed (target: a 10 s clip at 256x256 in under 10 s, >= 50 frames/s)
and how well `erlnet preprocess` recovers the ground truth (pose error, blinks, mouth correlation).

    python -m benchmarks.synth [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CHILD_RSS, median, run_child, table, write_json

GEN_CHILD = """
import json, sys, tempfile, time
from pathlib import Path
from erlnet.synth import SynthConfig, generate
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    res = generate(SynthConfig(seconds=10.0, size=int(sys.argv[1]), seed=1), Path(tmp) / "c", progress=False)
    wall = time.perf_counter() - t0
""" + CHILD_RSS + """
print(json.dumps({"wall_s": wall, "n_frames": res.n_frames, "render_fps": res.render_fps,
                  "speech": res.speech_source, "peak_rss_mb": peak_rss_mb}))
"""

STYLES = ["neutral", "expressive", "subdued", "nodding", "still", "happy", "surprised", "angry"]


def recovery(style: str, seed: int, seconds: float = 10.0) -> dict[str, float]:
    from erlnet.face.blink import detect_blinks
    from erlnet.face.pose import rotation_angle_deg
    from erlnet.io.subject import Subject
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
    from erlnet.synth import SynthConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        res = generate(SynthConfig(seconds=seconds, size=256, seed=seed, style=style), Path(tmp) / "c", progress=False)
        run_preprocess(res.video, Path(tmp) / "s", PreprocessConfig(size=256), show_progress=False)
        tr = Subject(Path(tmp) / "s").tracking()
        with np.load(res.truth) as z:
            truth = {k: z[k] for k in ("R", "blink", "mouth_open")}
    r_true, r_est = truth["R"].astype(np.float64), tr["rotation"].astype(np.float64)
    u, _, vt = np.linalg.svd(np.einsum("tji,tjk->ik", r_true, r_est))
    offset = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    err = rotation_angle_deg(r_true @ offset, r_est)
    true_b = detect_blinks(truth["blink"], 0.5)
    found = detect_blinks(tr["blink"], 0.5)
    hits = sum(any(fa <= b + 2 and fb >= a - 2 for fa, fb in found) for a, b in true_b)
    return {
        "pose_err_median_deg": float(np.median(err)), "pose_err_p90_deg": float(np.percentile(err, 90)),
        "head_motion_range_deg": float(rotation_angle_deg(r_true[0], r_true).max()),
        "blinks_true": len(true_b), "blinks_found": hits, "blinks_extra": max(0, len(found) - hits),
        "mouth_pearson_r": float(np.corrcoef(truth["mouth_open"], tr["mouth_opening"])[0, 1]),
    }


def bench(runs: int = 3) -> dict[str, Any]:
    gens = [run_child(GEN_CHILD, ["256"])[0] for _ in range(runs)]
    out: dict[str, Any] = {
        "generation_256": {
            "runs": runs, "n_frames": gens[0]["n_frames"], "speech": gens[0]["speech"],
            "wall_s_median": median([g["wall_s"] for g in gens]),
            "render_fps_median": median([g["render_fps"] for g in gens]),
            "peak_rss_mb_max": max(g["peak_rss_mb"] for g in gens),
        },
        "recovery": {s: recovery(s, seed=i) for i, s in enumerate(STYLES)},
    }
    return out


def report(res: dict[str, Any]) -> str:
    g = res["generation_256"]
    rows = [("10 s clip at 256x256", f"{g['wall_s_median']:.1f} s wall (median of {g['runs']}), "
                                    f"{g['render_fps_median']:.0f} frames/s render+encode, speech: {g['speech']}")]
    for style, r in res["recovery"].items():
        rows.append((f"recovery [{style}]",
                     f"pose err median {r['pose_err_median_deg']:.2f} deg (p90 {r['pose_err_p90_deg']:.2f}, "
                     f"range {r['head_motion_range_deg']:.1f}); blinks {r['blinks_found']}/{r['blinks_true']} "
                     f"(+{r['blinks_extra']}); mouth r={r['mouth_pearson_r']:.3f}"))
    return table("synthetic subjects", rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    res = bench(ap.parse_args(argv).runs)
    print(report(res))
    print(f"json: {write_json('synth', res)}")


if __name__ == "__main__":
    main()
