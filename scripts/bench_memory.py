#!/usr/bin/env python
"""Experiment: peak memory (RSS) of one nst-jax run against image size, and the largest size that fits.

    python scripts/bench_memory.py --sizes 256,512,768,1024 --preset default --budget-gb 8

Each size runs ``scripts/benchmark.py --variants nst-jax`` (and torch with ``--torch``) for a few
iterations in its own process and reads the process's peak RSS. A line ``RSS = a + b · pixels`` is
fitted (per variant) and solved for the budget; ``estimate_bytes_per_result`` is printed
beside it (the estimate ``stylize_many`` sizes its batches by). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512,768,1024")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--optimizer", default=None)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--budget-gb", type=float, default=8.0)
    ap.add_argument("--torch", action="store_true", help="also measure torch eager")
    ap.add_argument("--remat", action="store_true", help="nst-jax with jax.checkpoint per VGG block")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from nst_jax import preset
    from nst_jax.engine.memory import estimate_bytes_per_result

    variants = "nst-jax,torch" if args.torch else "nst-jax"
    rows = []
    for size in map(int, args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            cmd = [sys.executable, str(HERE / "benchmark.py"), "--preset", args.preset, "--size", str(size),
                   "--iterations", str(args.iterations), "--repeats", "1", "--variants", variants, "--json", str(out)]
            if args.optimizer:
                cmd += ["--optimizer", args.optimizer]
            if args.remat:
                cmd += ["--remat"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if not out.exists():
                print(f"{size}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            report = json.loads(out.read_text())
        cfg = preset(args.preset).replace(shape=(size, size), size=None, remat=args.remat,
                                          **({"optimizer": args.optimizer} if args.optimizer else {}))
        row = {"size": size, "pixels": size * size, "estimate_bytes": estimate_bytes_per_result(size, size, cfg),
               "loadavg": os.getloadavg()[0]}
        for v, r in report["results"].items():
            if "peak_rss" in r:
                row[v] = {"peak_rss": r.get("peak_rss_first_run", r["peak_rss"]), "rss_base": r.get("rss_base"),
                          "ms_per_iteration": report["summary"][v]["ms_per_iteration"]}
        rows.append(row)
        print(f"{size}x{size}: " + ", ".join(
            f"{v} peak RSS {row[v]['peak_rss'] / 2**30:.2f} GiB ({row[v]['ms_per_iteration']:.0f} ms/it)"
            for v in variants.split(",") if v in row) + f"; estimate_bytes_per_result {row['estimate_bytes'] / 2**30:.2f} GiB",
            flush=True)
    budget = args.budget_gb * 2**30
    fits = {}
    for v in variants.split(","):
        pts = [(r["pixels"], r[v]["peak_rss"]) for r in rows if v in r]
        if len(pts) < 2:
            continue
        (p0, m0), (p1, m1) = pts[-2], pts[-1]  # the two largest sizes: the per-pixel slope at scale
        b = (m1 - m0) / (p1 - p0)
        a = m1 - b * p1
        side = math.isqrt(int(max(budget - a, 0) / b)) if b > 0 else None
        fits[v] = {"base_bytes": a, "bytes_per_pixel": b, "largest_square_side": side}
        print(f"# {v}: RSS ~ {a / 2**20:.0f} MiB + {b:.0f} B/pixel -> largest square within {args.budget_gb:g} GB: "
              f"{side}x{side}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "fits": fits, "args": vars(args)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
