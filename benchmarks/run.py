"""`make bench`: run every benchmark, print its table, write JSON to bench-results/.

    python -m benchmarks.run [--only preprocess,tracking,...] [--long]

`--long` adds the 5-minute 1080p memory run (several minutes). Benchmarks that need
../shared/data say so and are skipped when it is absent.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time

from benchmarks.common import RESULTS, SHARED_DATA

# name -> (module, needs shared data); run in this order
BENCHMARKS = {
    "preprocess": ("benchmarks.preprocess", True),
    "tracking": ("benchmarks.tracking", False),
    "audio": ("benchmarks.audio", False),
    "synth": ("benchmarks.synth", False),
    "render": ("benchmarks.render", False),
    "motion": ("benchmarks.motion", False),
    "e2e": ("benchmarks.e2e", False),
}
LONG = {"memory_long": ("benchmarks.memory_long", True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    ap.add_argument("--long", action="store_true", help="also run the long benchmarks")
    args = ap.parse_args()
    chosen = {**BENCHMARKS, **(LONG if args.long else {})}
    if args.only:
        chosen = {k: v for k, v in {**BENCHMARKS, **LONG}.items() if k in args.only.split(",")}
    summary = {}
    for name, (module, needs_data) in chosen.items():
        if needs_data and not SHARED_DATA.is_dir():
            print(f"[{name}] skipped: {SHARED_DATA} not found\n")
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            print(f"[{name}] not available yet ({exc.name})\n")
            continue
        t0 = time.perf_counter()
        print(f"[{name}] running ...", flush=True)
        mod.main([])
        summary[name] = round(time.perf_counter() - t0, 1)
        print(flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps({"seconds": summary}, indent=2))
    print(f"benchmark wall times (s): {summary}")


if __name__ == "__main__":
    main()
