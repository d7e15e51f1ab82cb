#!/usr/bin/env python
"""Batched serving against one-after-another runs, in one run: N small jobs of 4 programs.

    python scripts/bench_serve.py --jobs 32 --size 64 --iterations 40

1. **CLI, one after another**: each job as its own ``nst-jax stylize`` process, as a user would
   script it (each process starts Python and JAX and loads the weights; compilations come from
   the persistent cache after the first of each program).
2. **serve, --max-batch 1**: the same jobs from N concurrent clients to a warm ``nst-jax serve``
   that runs one job at a time (warm programs, no batching).
3. **serve, --max-batch 8**: the same, batched.

Reports the wall time for all N, the throughput per result, and the p50/p95 latency a client
saw (submit to done); checks every job's PNG against its CLI run (SGD and Adam jobs: the same
bytes). Everything on 127.0.0.1; the server is started before the clock runs (its start-up is
reported apart). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from machine import cpu_model_and_features, usable_cpus  # noqa: E402
from nst_jax import weights  # noqa: E402


def programs(size: int, iterations: int) -> list[dict]:
    base = {"size": str(size), "iterations": str(iterations), "chunk-size": "10", "init": "noise"}
    return [{**base, "optimizer": "adam", "learning-rate": "0.02"},
            {**base, "optimizer": "adam", "learning-rate": "0.02", "size": str(size + 16)},
            {**base, "optimizer": "sgd", "learning-rate": "1e-4"},
            {**base, "optimizer": "adam", "learning-rate": "0.02", "pooling": "avg"}]


def job(k: int, progs: list[dict]) -> dict:
    return {**progs[k % len(progs)], "seed": str(k), "style-weight": f"{1e3 * (1 + k):g}"}


def inputs(d: pathlib.Path, weights_file: str | None) -> pathlib.Path:
    rng = np.random.default_rng(0)
    for name, shape in (("content.png", (96, 128, 3)), ("style.png", (100, 100, 3))):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(d / name)
    if weights_file:
        return pathlib.Path(weights_file)
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    return d / "syn.h5"


def cli_runs(d: pathlib.Path, w: pathlib.Path, jobs: list[dict]) -> tuple[float, list[float], list[bytes]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times, pngs = [], []
    t0 = time.perf_counter()
    for k, opts in enumerate(jobs):
        out = d / f"cli-{k}.png"
        argv = [sys.executable, "-m", "nst_jax", "stylize", str(d / "content.png"), str(d / "style.png"), "-o",
                str(out), "--weights", str(w), "--no-progress", "--overwrite", *[f"--{a}={v}" for a, v in opts.items()]]
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t)
        pngs.append(out.read_bytes())
    return time.perf_counter() - t0, times, pngs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(d: pathlib.Path, w: pathlib.Path, jobs: list[dict], max_batch: int) -> dict:
    port, data = free_port(), d / f"data-{max_batch}"
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t_start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nst_jax", "serve", "--port", str(port), "--data-dir", str(data),
                             "--weights", str(w), "--max-batch", str(max_batch), "--max-pending", str(len(jobs))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        with httpx.Client() as h:
            for _ in range(600):
                try:
                    if h.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        startup = time.perf_counter() - t_start

        def client(k: int) -> tuple[float, bytes, int]:
            with httpx.Client(timeout=60) as c:
                t = time.perf_counter()
                files = [("content", ("c.png", (d / "content.png").read_bytes())),
                         ("style", ("s.png", (d / "style.png").read_bytes()))]
                job_id = c.post(url + "/jobs", files=files, data=jobs[k]).json()["id"]
                for _ in range(36000):  # bounded: at most an hour
                    j = c.get(f"{url}/jobs/{job_id}").json()
                    if j["status"] in ("done", "failed", "cancelled"):
                        break
                    time.sleep(0.05)
                assert j["status"] == "done", j
                return time.perf_counter() - t, c.get(f"{url}/jobs/{job_id}/image").content, j["batch"]["size"]

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(client, range(len(jobs))))
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(60)
    return {"wall": wall, "latency": [r[0] for r in results], "pngs": [r[1] for r in results],
            "sizes": [r[2] for r in results], "startup": startup}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--weights", help="converted weights (default: synthetic)")
    args = ap.parse_args(argv)
    cpu, _ = cpu_model_and_features()
    progs = programs(args.size, args.iterations)
    jobs = [job(k, progs) for k in range(args.jobs)]
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        w = inputs(d, args.weights)
        cli_wall, cli_times, cli_pngs = cli_runs(d, w, jobs)
        one = served(d, w, jobs, 1)
        many = served(d, w, jobs, 8)
    print(f"# {cpu}, {usable_cpus()} CPUs; {args.jobs} jobs of {len(progs)} programs ({args.size}-{args.size + 16} px, "
          f"{args.iterations} iterations, SGD/Adam), {args.jobs} concurrent clients on 127.0.0.1")
    print("| how | wall for all | per result | p50 latency | p95 latency | same PNG as the CLI run |")
    print("|---|---|---|---|---|---|")
    rows = [("CLI processes, one after another", cli_wall, cli_times, cli_pngs),
            ("serve --max-batch 1 (warm, unbatched)", one["wall"], one["latency"], one["pngs"]),
            ("serve --max-batch 8 (batched)", many["wall"], many["latency"], many["pngs"])]
    for name, wall, lat, pngs in rows:
        q = statistics.quantiles(lat, n=20)
        same = sum(a == b for a, b in zip(pngs, cli_pngs))
        print(f"| {name} | {wall:.1f} s | {wall / args.jobs:.2f} s | {statistics.median(lat):.1f} s | {q[18]:.1f} s | "
              f"{same}/{args.jobs} |")
    print(f"\nserver start-up (weights, before the clock): {one['startup']:.1f} s and {many['startup']:.1f} s; "
          f"batch sizes seen with --max-batch 8: {sorted(set(many['sizes']))}")
    print("(CLI latency: each process's own run time, as if submitted when the previous one ended)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
