"""``make bench``: measure the project's figures into ``build/bench/bench.json``.

Each entry of :data:`BENCHES` is ``"module:function"``; the function returns a flat dict of
named figures. The JSON file is one flat object; a run replaces the figures it measures and
keeps the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

BENCHES = [
    "tools.bench_similarity:run",
    "tools.bench_golden:run",
    "tools.bench_matcher:run",
    "tools.bench_merge:run",
]

OUT = Path("build/bench/bench.json")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run only benches whose module name contains this")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    figures = {}
    if args.out.exists():
        figures = json.loads(args.out.read_text())
    for spec in BENCHES:
        if args.only and args.only not in spec:
            continue
        mod, fn = spec.split(":")
        print(f"== bench {spec}", flush=True)
        t0 = time.perf_counter()
        got = getattr(importlib.import_module(mod), fn)()
        print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)
        figures.update(got)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(sorted(figures.items())), indent=2) + "\n")
    width = max(len(k) for k in figures) if figures else 10
    print(f"\n{'figure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for k, v in sorted(figures.items()):
        val = f"{v:.4g}" if isinstance(v, float) else str(v)
        print(f"{k:<{width}}  {val}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
