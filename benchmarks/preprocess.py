"""Preprocessing throughput (frames of video per second, whole pipeline and per step) and peak RSS
on a real 512x512 clip. Target on 2 cores: >= 25 frames/s for the whole pipeline.

    python -m benchmarks.preprocess [--runs 3] [--video PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.common import CHILD_RSS, SHARED_DATA, median, run_child, table, write_json

DEFAULT_VIDEO = SHARED_DATA / "sadtalker" / "WDA_KatieHill_000.mp4"

CHILD = """
import json, sys, tempfile, time
from pathlib import Path
from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
video = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    results = run_preprocess(video, Path(tmp) / "s", PreprocessConfig(size=int(sys.argv[2])), show_progress=False)
    total = time.perf_counter() - t0
""" + CHILD_RSS + """
steps = {r.name: r.seconds for r in results}
n = next(r.info["n_frames"] for r in results if r.name == "track")
print(json.dumps({"total_s": total, "steps": steps, "n_frames": n, "peak_rss_mb": peak_rss_mb}))
"""


def bench(video: Path = DEFAULT_VIDEO, runs: int = 3, size: int = 512) -> dict[str, Any]:
    """Median over `runs` fresh preprocessing runs, each in its own process."""
    outs = [run_child(CHILD, [str(video), str(size)])[0] for _ in range(runs)]
    n = outs[0]["n_frames"]
    total = median([o["total_s"] for o in outs])
    steps = {k: median([o["steps"][k] for o in outs]) for k in outs[0]["steps"]}
    return {
        "video": str(video),
        "size": size,
        "runs": runs,
        "n_frames": n,
        "total_s_median": total,
        "fps_whole_pipeline": n / total,
        "realtime_factor": (n / total) / 25.0,
        "fps_per_step": {k: (n / s if s > 0 else float("inf")) for k, s in steps.items()},
        "seconds_per_step": steps,
        "peak_rss_mb_max": max(o["peak_rss_mb"] for o in outs),
    }


def report(res: dict[str, Any]) -> str:
    rows = [
        ("clip", f"{Path(res['video']).name} ({res['n_frames']} frames, working size {res['size']})"),
        ("whole pipeline", f"{res['fps_whole_pipeline']:.1f} frames/s  ({res['realtime_factor']:.2f}x real time, "
                           f"median of {res['runs']})"),
    ]
    rows += [(f"  step {k}", f"{v:.1f} frames/s ({res['seconds_per_step'][k]:.2f} s)") for k, v in res["fps_per_step"].items()]
    rows.append(("peak RSS", f"{res['peak_rss_mb_max']:.0f} MB"))
    return table("preprocessing throughput", rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args(argv)
    if not args.video.exists():
        print(f"skipped: {args.video} not found")
        return
    res = bench(args.video, args.runs, args.size)
    print(report(res))
    print(f"json: {write_json('preprocess', res)}")


if __name__ == "__main__":
    main()
