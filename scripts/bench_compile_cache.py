#!/usr/bin/env python
"""Experiment: what JAX's persistent compilation cache saves on a second process run.

    python scripts/bench_compile_cache.py --size 512 --preset default

Runs ``scripts/benchmark.py --variants nst-jax`` three times in fresh processes: without a cache,
then twice with a new, empty cache directory (the first fills it, the second reads it). Reports
each run's warm-up (first ``stylize`` minus a steady one: compilation of the chunk and of the
eager target computation) and the AOT compile time of the chunk. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(args, cache: str | None, out: Path) -> dict:
    cmd = [sys.executable, str(HERE / "benchmark.py"), "--preset", args.preset, "--size", str(args.size),
           "--iterations", str(args.iterations), "--repeats", "1", "--variants", "nst-jax", "--json", str(out)]
    if args.optimizer:
        cmd += ["--optimizer", args.optimizer]
    if cache:
        cmd += ["--compilation-cache", cache]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    r = json.loads(out.read_text())["results"]["nst-jax"]
    return {k: r.get(k) for k in ("first_run_s", "second_run_s", "warmup_s", "compile_s", "trace_s")} | {
        "loadavg": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="512")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--optimizer", default=None)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        rows["no cache"] = run(args, None, Path(tmp) / "a.json")
        rows["cache, cold (fills it)"] = run(args, cache, Path(tmp) / "b.json")
        rows["cache, warm (2nd process)"] = run(args, cache, Path(tmp) / "c.json")
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
    print(f"# {args.preset}, {args.size}, {args.iterations} iterations; cache size {size / 2**20:.1f} MiB")
    print(f"{'run':<28} {'first run s':>11} {'steady run s':>12} {'warm-up s':>9} {'chunk compile s':>15} {'load':>5}")
    for name, r in rows.items():
        print(f"{name:<28} {r['first_run_s']:>11.2f} {r['second_run_s']:>12.2f} {r['warmup_s']:>9.2f} "
              f"{r['compile_s']:>15.2f} {r['loadavg']:>5.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "cache_bytes": size, "args": vars(args)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
