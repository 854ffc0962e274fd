"""Helpers shared by the benchmarks: repeated runs in subprocesses, medians, peak RSS, tables, JSON."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ERLNET_SHARED_DATA", ROOT / ".." / "shared" / "data")).resolve()
RESULTS = ROOT / "bench-results"


CHILD_RSS = "import resource; peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0\n"


def run_child(code: str, args: Sequence[str] = (), threads: int = 0) -> tuple[dict[str, Any], float]:
    """Run `python -c code args...` in a fresh process, so its peak RSS is its own.

    The child prints one JSON object on its last stdout line (`CHILD_RSS` appended to the code gives
    it `peak_rss_mb`). `threads` > 0 limits its intra-op threads (OMP_NUM_THREADS), for children that
    run side by side. Returns (that object, wall seconds).
    """
    env = os.environ | ({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads > 0 else {})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(title: str, rows: list[tuple[str, str]]) -> str:
    """A two-column text table."""
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path
