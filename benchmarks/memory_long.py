"""Peak RSS while preprocessing a 5-minute 1080p video (target: <= 4 GB).

The long video is built from a real clip: upscaled to 1920x1080 (pillarboxed) and looped, with its
audio, so memory use is measured on real faces at full length. Takes several minutes.

    python -m benchmarks.memory_long [--minutes 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import CHILD_RSS, SHARED_DATA, run_child, table, write_json

SOURCE = SHARED_DATA / "sadtalker" / "WDA_KatieHill_000.mp4"

CHILD = """
import json, sys, time
from pathlib import Path
from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
t0 = time.perf_counter()
results = run_preprocess(Path(sys.argv[1]), Path(sys.argv[2]), PreprocessConfig(), show_progress=False)
total = time.perf_counter() - t0
""" + CHILD_RSS + """
n = next(r.info["n_frames"] for r in results if r.name == "track")
print(json.dumps({"total_s": total, "n_frames": n, "peak_rss_mb": peak_rss_mb,
                  "tracked": next(r.info["tracked_fraction"] for r in results if r.name == "track")}))
"""


def make_long_video(path: Path, minutes: float) -> Path:
    """Loop SOURCE, upscaled into a 1920x1080 frame, for `minutes` (streamed, bounded memory)."""
    import cv2
    import numpy as np

    from erlnet.io.audio import load_audio
    from erlnet.io.video import VideoWriter, iter_frames

    clip = [cv2.resize(f, (1080, 1080), interpolation=cv2.INTER_LINEAR) for f in iter_frames(SOURCE)]
    wav = load_audio(SOURCE, sr=16000)
    n = int(minutes * 60 * 25)
    reps = int(np.ceil(n / len(clip)))
    audio = np.tile(wav, reps)[: int(minutes * 60 * 16000)]
    canvas = np.zeros((1080, 1920, 3), np.uint8)
    with VideoWriter(path, fps=25, audio=audio, preset="ultrafast", crf=23) as w:
        for i in range(n):
            canvas[:, 420:1500] = clip[i % len(clip)]
            w.write(canvas)
    return path


def bench(minutes: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        video = make_long_video(Path(tmp) / "long1080p.mp4", minutes)
        out, wall = run_child(CHILD, [str(video), str(Path(tmp) / "subject")])
    return {"minutes": minutes, "resolution": "1920x1080", **out, "fps": out["n_frames"] / out["total_s"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=5.0)
    args = ap.parse_args(argv)
    if not SOURCE.exists():
        print(f"skipped: {SOURCE} not found")
        return
    res = bench(args.minutes)
    print(table("long 1080p preprocessing", [
        ("video", f"{res['minutes']:g} min {res['resolution']} ({res['n_frames']} frames)"),
        ("time", f"{res['total_s']:.0f} s ({res['fps']:.1f} frames/s)"),
        ("tracked", f"{100 * res['tracked']:.1f}%"),
        ("peak RSS", f"{res['peak_rss_mb']:.0f} MB (target <= 4096)"),
    ]))
    print(f"json: {write_json('memory_long', res)}")


if __name__ == "__main__":
    main()
