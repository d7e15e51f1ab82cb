#!/usr/bin/env python
"""Throughput of many styles: one vmapped ``stylize_many`` program against N sequential ``stylize`` runs.

    python scripts/bench_many.py --size 256 --counts 1,2,4,8 --iterations 5 --json many.json

For each N: N different style images against one content image, the same config, seeds and
iteration count both ways; the Winograd kernels (when the config uses them) are made once for
both. Both paths are compiled first (a warm-up run each, untimed), then the
steady state is timed: result-iterations per second = N x iterations / wall seconds. The first
result of both paths is compared (they must be the same work). nst-jax only; one process. A
measurement, not a test: nothing asserts a duration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--counts", default="1,2,4,8")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--conv", choices=("direct", "winograd", "auto"))
    ap.add_argument("--default-batch", action="store_true",
                    help="let stylize_many pick its batch size (default: all N in one batch)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import jax

    from benchmark import _pattern_image, _smooth_image, build_config, machine_info
    from nst_jax.network import vgg
    from nst_jax.engine.batching import default_batch_size, stylize_many
    from nst_jax.engine.single import stylize
    from nst_jax.network.backbones import engine_params, uses_winograd
    from nst_jax.weights import synthetic_params

    bargs = argparse.Namespace(preset=args.preset, size=str(args.size), iterations=args.iterations,
                               optimizer=args.optimizer, lr=None, precision="float32", conv=args.conv)
    cfg = build_config(bargs)
    params = jax.device_put(synthetic_params(cfg.arch, seed=0))
    # Both paths get the Winograd kernels made once (as a user looping over stylize would do);
    # otherwise every sequential call would transform them again (~1 s each).
    params = engine_params(params, cfg, vgg.CAFFE, (args.size, args.size))
    h = w = args.size
    content = _smooth_image(h, w, 1)
    counts = [int(c) for c in args.counts.split(",")]
    styles_all = [_pattern_image(h, w, 100 + i) for i in range(max(counts))]
    n_it = args.iterations
    rows = []
    info = machine_info()
    print(f"# {args.preset} recipe ({cfg.optimizer}), {h}x{w}, {n_it} iterations per result, conv "
          f"{'winograd' if uses_winograd(cfg, vgg.CAFFE, (h, w)) else 'direct'}, devices {jax.devices()}")
    print(f"# machine: {info['cpu']}, {info['usable_cpus']} CPUs, jax {info['jax']}")
    print(f"{'N':>3} {'vmapped s':>10} {'sequential s':>13} {'vmapped res-it/s':>17} {'sequential res-it/s':>20} "
          f"{'speed-up':>8} {'same result':>11}")
    for n in counts:
        styles = styles_all[:n]
        seeds = list(range(n))

        def many():
            return stylize_many(content, styles, params, cfg, iterations=n_it, convention=vgg.CAFFE,
                                         chunk_size=n_it, batch_size=None if args.default_batch else n, seeds=seeds)

        def sequential():
            return [stylize(content, s, params, cfg, iterations=n_it, convention=vgg.CAFFE,
                                     chunk_size=n_it, seed=seed) for s, seed in zip(styles, seeds)]

        many()  # compile (untimed)
        sequential()
        t0 = time.perf_counter()
        m = many()
        jax.block_until_ready(m.images)
        t_many = time.perf_counter() - t0
        t0 = time.perf_counter()
        seq = sequential()
        t_seq = time.perf_counter() - t0
        diff = float(np.max(np.abs(np.asarray(m.losses[0]) / np.asarray(seq[0].losses) - 1)))
        row = {"n": n, "batch_size": default_batch_size(h, w, cfg, n) if args.default_batch else n,
               "vmapped_s": t_many, "sequential_s": t_seq,
               "vmapped_result_iterations_per_s": n * n_it / t_many,
               "sequential_result_iterations_per_s": n * n_it / t_seq,
               "speedup": t_seq / t_many, "first_result_loss_max_rel_diff": diff,
               "loadavg": os.getloadavg()[0]}
        rows.append(row)
        print(f"{n:>3} (batches of {row['batch_size']}) {t_many:>10.2f} {t_seq:>13.2f} {row['vmapped_result_iterations_per_s']:>17.2f} "
              f"{row['sequential_result_iterations_per_s']:>20.2f} {row['speedup']:>7.2f}x {diff:>11.1e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": info, "args": vars(args), "python": platform.python_version()},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
