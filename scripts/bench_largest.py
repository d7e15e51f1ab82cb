#!/usr/bin/env python
"""The largest square image one process paints within a memory budget: nst-jax against PyTorch eager.

    python scripts/bench_largest.py --budget-gib 21 --json scripts/results/largest.json

Each trial is one fresh process (``scripts/benchmark.py``'s child, ``memory_only``) that computes the
targets and runs the recipe for ``--iterations`` at one size, under a watchdog that kills it as
soon as its resident memory passes the budget (a trial "fits" when it finished under the budget;
no trial is left to the kernel's out-of-memory killer). Per recipe: two small anchor sizes, then
sizes on a ``--step`` grid from the line ``RSS = a + b · pixels`` through the anchors until the
largest size that fits and the smallest that does not are found. Every trial also prints what
nst-jax's memory model (``memory.estimate_run_bytes`` + ``RUN_OVERHEAD_BYTES``, what the CLI's
check compares with free memory) predicted for it, so the same run validates the model at three
sizes or more. A measurement, not a test.

PyTorch's ``optim.LBFGS`` grows its history as it goes (one pair an iteration, up to 100), so after
a few evaluations it holds almost none; its L-BFGS rows add the grown history's bytes (2 · 100 ·
3 · 4 per pixel), computed, not measured, and say so. nst-jax allocates its history up front, so
its trials measure it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

RECIPES = {  # name: (benchmark variant, benchmark.py options)
    "nst-jax default": ("nst-jax", []),
    "torch default": ("torch", []),
    "nst-jax adam": ("nst-jax", ["--optimizer", "adam"]),
    "torch adam": ("torch", ["--optimizer", "adam"]),
    "nst-jax adam remat": ("nst-jax", ["--optimizer", "adam", "--remat"]),
    "nst-jax adam bf16": ("nst-jax", ["--optimizer", "adam", "--precision", "bf16"]),
}


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def trial(recipe: str, size: int, budget: int, iterations: int, timeout: float) -> dict[str, Any]:
    """One process at ``size``²: whether it fit, its peak RSS and what the memory model said."""
    import benchmark
    from nst_jax.engine import memory

    variant, opts = RECIPES[recipe]
    args = benchmark.make_parser().parse_args(["--size", str(size), "--iterations", str(iterations),
                                               "--repeats", "1", *opts])
    cfg = benchmark.build_config(args)
    model = memory.estimate_run_bytes(size, size, cfg, style_shapes=[(size, size)]) + memory.RUN_OVERHEAD_BYTES
    row: dict[str, Any] = {"recipe": recipe, "size": size, "model_bytes": model}
    with tempfile.TemporaryDirectory(prefix="nst-largest-") as tmp:
        work = Path(tmp)
        spec = benchmark.write_spec(args, cfg, work, memory_only=True)
        env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
        cmd = [sys.executable, str(HERE / "benchmark.py"), "--child", variant, "--spec", str(spec),
               "--child-out", str(work / "out.json")]
        t0 = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        watched, killed = 0, None
        while proc.poll() is None:
            watched = max(watched, _rss(proc.pid))
            if watched > budget:
                killed = "over the budget"
            elif time.time() - t0 > timeout:
                killed = "timed out"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.1)
        row["seconds"] = round(time.time() - t0, 1)
        row["watched_peak_bytes"] = watched
        out = work / "out.json"
        if killed or proc.returncode != 0 or not out.exists():
            err = (proc.stderr.read().decode(errors="replace").strip().splitlines() or ["?"])[-1] if proc.stderr else "?"
            row.update(fits=False, why=killed or f"exit {proc.returncode}: {err[-200:]}")
            return row
        result = json.loads(out.read_text())
    row["peak_rss_bytes"] = int(result["peak_rss"])
    row["rss_base_bytes"] = result.get("rss_base")  # the process with its framework and weights loaded
    row["fits"] = row["peak_rss_bytes"] <= budget
    if variant == "torch" and cfg.optimizer == "lbfgs":
        row["grown_history_bytes"] = 2 * cfg.lbfgs_memory * 3 * 4 * size * size
        row["fits"] = row["peak_rss_bytes"] + row["grown_history_bytes"] <= budget
    return row


def _need(row: dict[str, Any]) -> int:
    return row.get("peak_rss_bytes", row["watched_peak_bytes"]) + row.get("grown_history_bytes", 0)


def search(recipe: str, budget: int, step: int, anchors: tuple[int, int], iterations: int, timeout: float,
           log) -> dict[str, Any]:
    """Anchors, then a walk on the ``step`` grid from the anchors' line to the first size that fails."""
    rows = [trial(recipe, s, budget, iterations, timeout) for s in anchors]
    for r in rows:
        log(r)
    broken = [r for r in rows if str(r.get("why", "")).startswith("exit")]
    if broken:  # not a memory limit: nothing to search
        return {"recipe": recipe, "largest_fit": None, "smallest_fail": None, "trials": rows,
                "error": broken[0]["why"]}

    def guess() -> int:
        """Where the line through the two largest completed trials meets the budget (grid size)."""
        done = sorted((r["size"], _need(r)) for r in rows if "peak_rss_bytes" in r)[-2:]
        if len(done) < 2:
            return 0
        (s0, r0), (s1, r1) = done
        slope = (r1 - r0) / (s1 * s1 - s0 * s0)
        if slope <= 0:
            return 2 * s1
        return int(math.sqrt(max(budget - (r0 - slope * s0 * s0), 0) / slope)) // step * step

    fit = max((r["size"] for r in rows if r["fits"]), default=None)
    fail = min((r["size"] for r in rows if not r["fits"]), default=None)
    while len(rows) < 10:
        if fit is not None and fail is not None:
            if fail - fit <= step:
                break
            size = max((fit + fail) // 2 // step * step, fit + step)
        elif fit is None:
            assert fail is not None
            size = max(fail // 2 // step * step, step)
            if size == fail:
                break
        else:
            size = max(guess(), fit + step)
        r = trial(recipe, size, budget, iterations, timeout)
        rows.append(r)
        log(r)
        if str(r.get("why", "")).startswith("exit"):
            break
        if r["fits"]:
            fit = size if fit is None else max(fit, size)
        else:
            fail = size if fail is None else min(fail, size)
    return {"recipe": recipe, "largest_fit": fit, "smallest_fail": fail, "trials": rows}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-gib", type=float, default=21.0)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--step", type=int, default=128)
    ap.add_argument("--anchors", default="512,1024")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a trial")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from machine import cpu_model_and_features

    budget = int(args.budget_gib * 2**30)
    anchors = tuple(int(s) for s in args.anchors.split(","))
    gib = 2**30

    def log(r: dict[str, Any]) -> None:
        print(f"# {r['recipe']} {r['size']}²: {'fits' if r['fits'] else 'does not fit'}, "
              f"peak {_need(r) / gib:.2f} GiB, model {r['model_bytes'] / gib:.2f} GiB, {r['seconds']} s"
              + (f" ({r['why']})" if r.get("why") else ""), file=sys.stderr, flush=True)

    results = [search(name, budget, args.step, anchors, args.iterations, args.timeout, log)  # type: ignore[arg-type]
               for name in args.recipes.split(",")]
    cpu = cpu_model_and_features()[0]
    print(f"CPU: {cpu}; budget {args.budget_gib} GiB of this machine's "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / gib:.0f} GiB; {args.iterations} iterations a trial\n")
    print("| recipe | largest square that fits | its peak RSS | smallest that does not |")
    print("|---|---:|---:|---:|")
    for res in results:
        fit_row = next((r for r in res["trials"] if r["size"] == res["largest_fit"]), None)
        peak = f"{_need(fit_row) / gib:.2f} GiB" if fit_row else "-"
        if fit_row and fit_row.get("grown_history_bytes"):
            peak += " (incl. the grown history)"
        if res.get("error"):
            print(f"| {res['recipe']} | failed: {res['error']} | - | - |")
            continue
        print(f"| {res['recipe']} | {res['largest_fit']}² | {peak} | {res['smallest_fail']}² |")
    print("\n| recipe | size | peak RSS (measured) | + grown L-BFGS history (computed) | nst-jax's model | "
          "model / (measured − the loaded process) | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for res in results:
        for r in sorted(res["trials"], key=lambda r: r["size"]):
            if "peak_rss_bytes" not in r:
                print(f"| {r['recipe']} | {r['size']}² | > {args.budget_gib} GiB ({r['why']}) | - | "
                      f"{r['model_bytes'] / gib:.2f} GiB | - | {r['seconds']} |")
                continue
            # the model counts what the run needs of free memory: the peak less the process as it
            # was before the run (the framework and weights loaded), when the child could tell
            need = r["peak_rss_bytes"] - (r.get("rss_base_bytes") or 0)
            ratio = f"{r['model_bytes'] / need:.2f}" if r["recipe"].startswith("nst-jax") else "-"
            hist = f"{r['grown_history_bytes'] / gib:.2f} GiB" if r.get("grown_history_bytes") else "-"
            print(f"| {r['recipe']} | {r['size']}² | {r['peak_rss_bytes'] / gib:.2f} GiB | {hist} | "
                  f"{r['model_bytes'] / gib:.2f} GiB | {ratio} | {r['seconds']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu, "budget_bytes": budget, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
