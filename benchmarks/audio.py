"""Speed of the default audio encoder (MelFormantEncoder) on 5 minutes of speech-like audio.

    python -m benchmarks.audio [--runs 5]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.common import median, table, write_json

SR = 16000


def speech_like(seconds: float, sr: int = SR) -> np.ndarray:
    """Alternating 250 ms voiced (gliding-F0 buzz) and unvoiced (noise) stretches -> (S,) float32."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.3 * t)
    buzz = 0.3 * np.sign(np.sin(2 * np.pi * np.cumsum(f0) / sr))
    noise = 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return np.where(np.sin(2 * np.pi * 2 * t) > 0, buzz, noise).astype(np.float32)


def bench(seconds: float = 300.0, runs: int = 5) -> dict[str, Any]:
    from erlnet.audio.melformant import MelFormantEncoder

    enc = MelFormantEncoder()
    wav = speech_like(seconds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        enc.encode(wav, SR)
        times.append(time.perf_counter() - t0)
    med = median(times)
    return {"encoder": enc.cache_key, "audio_seconds": seconds, "runs": runs, "median_s": med,
            "x_realtime_median": seconds / med, "feature_dim": enc.feature_dim}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    res = bench(runs=ap.parse_args(argv).runs)
    print(table("audio features (MelFormantEncoder)", [
        ("audio", f"{res['audio_seconds']:.0f} s speech-like, feature_dim {res['feature_dim']}"),
        ("encode", f"{res['median_s']:.2f} s median of {res['runs']} = {res['x_realtime_median']:.0f}x real time"),
    ]))
    print(f"json: {write_json('audio', res)}")


if __name__ == "__main__":
    main()
