#!/usr/bin/env python
"""Per-iteration time of two checkouts side by side, in one run; and a sweep against a batch of styles.

    python scripts/bench_before_after.py --before /tmp/base --after . --repeats 3

Each measurement runs ``scripts/benchmark.py --variants nst-jax`` of that checkout in its own
process (its steady state times the compiled chunk alone, warm-up apart), and the command a user
types, ``nst-jax stylize`` with the recipe's options (4N iterations less N), alternating before and
after ``--rounds`` times so drift in the machine's load hits both alike; the table reports each
side's median over the rounds. Recipes: 256² Adam (the default preset) and 128² L-BFGS (the
pytorch preset). Then, in the *after* checkout only: N results as N style images against N values
of the style weight on one style (``stylize_many(configs=...)``), the same program either way, as
ms per result-iteration. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import cpu_model_and_features, usable_cpus  # noqa: E402

RECIPES = [
    ("256² Adam (default preset)", ["--preset", "default", "--optimizer", "adam", "--size", "256"]),
    ("128² L-BFGS (pytorch preset)", ["--preset", "pytorch", "--size", "128"]),
]

SWEEP_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import jax
from nst_jax import preset, stylize_many
try:
    from nst_jax.network import vgg
except ImportError:  # a tree from before the stage packages (2026-12-07)
    from nst_jax import vgg
from nst_jax.weights import synthetic_params
n, size, iters = {n}, {size}, {iters}
cfg = preset("default").replace(optimizer="adam", learning_rate=2.0, conv_algorithm="direct", iterations=iters,
                                chunk_size=iters, shape=(size, size), size=None)
params = synthetic_params("vgg19", 0)
rng = np.random.default_rng(0)
content = rng.random((size, size, 3), dtype=np.float32)
styles = [rng.random((size, size, 3), dtype=np.float32) for _ in range(n)]
out = {{}}
for label, kw in (("styles", dict(styles=styles)),
                  ("sweep", dict(styles=[styles[0]] * n, configs=cfg.sweep(style_weight=[10.0 ** k for k in range(n)])))):
    times = []
    for rep in range(3):  # the first includes compilation
        t0 = time.perf_counter()
        many = stylize_many(content, kw["styles"], params, cfg, configs=kw.get("configs"), batch_size=n,
                            convention=vgg.CAFFE)
        np.asarray(many.images)
        times.append(time.perf_counter() - t0)
    out[label] = min(times[1:]) / (n * iters) * 1e3
print(json.dumps(out))
"""


def run_benchmark(root: Path, args: list[str], iterations: int, repeats: int) -> tuple[float, float]:
    """(ms per iteration of the compiled chunk alone, median of the repeats; ms per iteration of a
    whole warm ``stylize`` call: targets, the driver's chunks and callbacks, the host copies)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, str(root / "scripts" / "benchmark.py"), *args, "--iterations", str(iterations),
               "--repeats", str(repeats), "--variants", "nst-jax", "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        if not out.exists():
            raise SystemExit(f"{root}: benchmark failed: {proc.stderr[-2000:]}")
        report = json.loads(out.read_text())
    raw = report["results"]["nst-jax"]
    return float(report["summary"]["nst-jax"]["ms_per_iteration"]), 1e3 * float(raw["second_run_s"]) / iterations


CLI = "import sys; sys.path.insert(0, sys.argv.pop(1)); from nst_jax.cli import main; sys.exit(main(sys.argv[1:]))"


def run_cli(root: Path, args: list[str], iterations: int, weights: Path) -> float:
    """ms per iteration through ``nst-jax stylize`` as a user types it: the wall time of a run of
    4N iterations less one of N, over 3N (process start, loading and the compilation cancel out:
    a first run of N fills this checkout's own persistent compilation cache, so both timed runs
    read their programs from it)."""
    assets = root / "nst_jax" / "assets"
    cache = Path(tempfile.gettempdir()) / f"nst-jax-bench-cache-{abs(hash(str(root)))}"
    env = {**os.environ, "NST_JAX_CACHE_DIR": str(cache)}
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (iterations, iterations, 4 * iterations):  # the first only warms the cache
            cmd = [sys.executable, "-c", CLI, str(root), "stylize", str(assets / "content.png"),
                   str(assets / "style.png"), "-o", str(Path(tmp) / f"o{len(times)}.png"), *args, "--iterations",
                   str(n), "--weights", str(weights), "--no-progress"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env)
            times.append(time.perf_counter() - t0)
            if proc.returncode:
                raise SystemExit(f"{root}: nst-jax stylize failed: {proc.stderr[-2000:]}")
    return 1e3 * (times[2] - times[1]) / (3 * iterations)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="the checkout before (e.g. a git worktree)")
    ap.add_argument("--after", type=Path, default=HERE.parent)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sweep-n", type=int, default=4)
    ap.add_argument("--sweep-size", type=int, default=128)
    args = ap.parse_args(argv)
    cpu, _ = cpu_model_and_features()
    print(f"# {cpu}, {usable_cpus()} CPUs; before {args.before}, after {args.after}; "
          f"{args.iterations} iterations x {args.repeats} repeats, {args.rounds} rounds alternating", flush=True)
    print("| recipe | measured | before ms/it | after ms/it | after / before |")
    print("|---|---|---|---|---|")
    weights = Path(tempfile.mkdtemp()) / "vgg19-synthetic.h5"
    subprocess.run([sys.executable, "-c", CLI, str(args.after.resolve()), "weights", "synthetic", "-o", str(weights)],
                   check=True, capture_output=True)
    for label, rargs in RECIPES:
        before, after = [], []
        for _ in range(args.rounds):
            before.append((*run_benchmark(args.before.resolve(), rargs, args.iterations, args.repeats),
                           run_cli(args.before.resolve(), rargs, args.iterations, weights)))
            after.append((*run_benchmark(args.after.resolve(), rargs, args.iterations, args.repeats),
                           run_cli(args.after.resolve(), rargs, args.iterations, weights)))
        for k, what in enumerate(("compiled chunk", "whole `stylize` call", "`nst-jax stylize` (4N − N its)")):
            bs, as_ = [x[k] for x in before], [x[k] for x in after]
            b, a = statistics.median(bs), statistics.median(as_)
            print(f"| {label} | {what} | {b:.1f} ({', '.join(f'{x:.1f}' for x in bs)}) | "
                  f"{a:.1f} ({', '.join(f'{x:.1f}' for x in as_)}) | {a / b:.3f} |", flush=True)
    code = SWEEP_CHILD.format(root=str(args.after.resolve()), n=args.sweep_n, size=args.sweep_size,
                              iters=args.iterations)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n| {args.sweep_n} results at {args.sweep_size}², Adam, one program | ms per result-iteration |")
    print("|---|---|")
    print(f"| {args.sweep_n} style images | {r['styles']:.1f} |")
    print(f"| {args.sweep_n} style weights, one style | {r['sweep']:.1f} |")
    print(f"\n# {time.time() - t0:.0f} s for the sweep comparison")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
