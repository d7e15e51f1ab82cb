#!/usr/bin/env python
"""The GPU suite: one command, under 8 minutes on one accelerator, JSON plus a Markdown table.

    python scripts/gpu_suite.py --out gpu_suite/            # on a machine with a GPU
    python scripts/gpu_suite.py --out /tmp/smoke --smoke     # the same steps, tiny, on this CPU

Steps, each in its own processes with a timeout, stopping early when ``--budget`` seconds are spent:

1. ms per iteration at 512² (``scripts/benchmark.py --device gpu``): the ``default`` preset
   (L-BFGS) and Adam, nst-jax against PyTorch eager (``cudnn.benchmark``, TF32), eager
   ``channels_last`` and ``torch.compile`` (Adam, float32 only: its compile is the slow part),
   in float32/TF32 and in bf16 (convolutions in bfloat16, Gram matrices and losses in float32:
   fp16 Grams overflow). nst-jax's warm-up (compile + first run) is the compile time.
2. The largest square image one device paints (3 Adam iterations of the default layers), without
   and with ``--remat``: sizes grow by √2 from 2048 until a run fails (out of memory) or the step's
   time share is spent.
3. With more than one device visible: one 2048² image split over all of them
   (``stylize(devices=...)``) against one device, ms per iteration.

A measurement, not a test. Record its table in BENCHMARKS.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    from nst_jax import preset, stylize
    from nst_jax.network import vgg
    from nst_jax.weights import synthetic_params
    side, remat, devices, iterations = {side}, {remat}, {devices}, {iterations}
    net = synthetic_params("vgg19", seed=0)
    rng = np.random.default_rng(0)
    content = rng.random((side, side, 3), dtype=np.float32)
    cfg = preset("default").replace(optimizer="adam", learning_rate=0.02, iterations=iterations,
                                    chunk_size=iterations, remat=remat, size=side)
    devs = jax.devices()[:devices] if devices > 1 else None
    t0 = time.time()
    stylize(content, content, net, cfg, devices=devs, convention=vgg.CAFFE)  # compile + run
    t1 = time.time()
    r = stylize(content, content, net, cfg, devices=devs, seed=1, convention=vgg.CAFFE)
    t2 = time.time()
    stats = jax.devices()[0].memory_stats() or {{}}
    print(json.dumps(dict(ok=bool(np.isfinite(r.final_loss)), first_s=t1 - t0, ms_per_iteration=1e3 * (t2 - t1) / iterations,
                          peak_bytes=stats.get("peak_bytes_in_use"), device=str(jax.devices()[0]),
                          device_count=len(jax.devices()))))
    """
)


def _run(cmd: list[str], timeout: float) -> tuple[int, str, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1))
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return 124, "", "timed out"


def _child(side: int, remat: bool, devices: int, iterations: int, timeout: float) -> dict[str, Any]:
    code = CHILD.format(root=str(ROOT), side=side, remat=remat, devices=devices, iterations=iterations)
    rc, out, err = _run([sys.executable, "-c", code], timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if rc == 0 and lines:
        return json.loads(lines[-1])
    tail = (err.strip().splitlines() or ["?"])[-1][:200]
    return {"ok": False, "rc": rc, "error": tail}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for suite.json and suite.md")
    ap.add_argument("--budget", type=float, default=470, help="seconds for the whole suite")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks the suite itself)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    def left() -> float:
        return args.budget - (time.time() - t_start)

    device = "cpu" if args.smoke else "gpu"
    size = 64 if args.smoke else 512
    its, reps = (4, 1) if args.smoke else (50, 3)
    report: dict[str, Any] = {"smoke": args.smoke, "speed": [], "largest": [], "sharded": []}
    # 1. speed (torch's L-BFGS .view()s its gradients, which a channels_last tensor refuses: eager only)
    runs = [("default", None, "float32", "nst-jax,torch"),
            ("default", "adam", "float32", "nst-jax,torch,torch-cl" + ("" if args.smoke else ",torch-compile")),
            ("default", None, "bf16", "nst-jax,torch"),
            ("default", "adam", "bf16", "nst-jax,torch,torch-cl")]
    for k, (name, optimizer, precision, variants) in enumerate(runs):
        share = left() * 0.55 / (len(runs) - k)
        if share < 20:
            report["speed"].append({"preset": name, "optimizer": optimizer, "precision": precision, "skipped": "budget"})
            continue
        js = args.out / f"speed_{k}.json"
        js.unlink(missing_ok=True)  # never report an earlier suite's file
        cmd = [sys.executable, str(HERE / "benchmark.py"), "--preset", name, "--size", str(size), "--iterations", str(its),
               "--repeats", str(reps), "--device", device, "--precision", precision, "--variants", variants,
               "--timeout", str(int(share)), "--json", str(js)]
        if optimizer:
            cmd += ["--optimizer", optimizer]
        rc, _, err = _run(cmd, share + 30)
        entry: dict[str, Any] = {"preset": name, "optimizer": optimizer or "lbfgs", "precision": precision, "rc": rc}
        if js.exists():
            summary = json.loads(js.read_text())["summary"]
            entry["variants"] = {v: summary.get(v) for v in variants.split(",")}
            entry["machine"] = json.loads(js.read_text()).get("machine")
        else:
            entry["error"] = (err.strip().splitlines() or ["?"])[-1][:200]
        report["speed"].append(entry)
    # 2. the largest image, without and with remat
    start = 64 if args.smoke else 2048
    for remat in (False, True):
        side, trials = start, 0
        while left() > 30 and trials < (2 if args.smoke else 5):
            r = _child(side, remat, 1, 3, min(left() * 0.4, 150))
            report["largest"].append({"side": side, "remat": remat, **r})
            trials += 1
            if not r.get("ok"):
                break
            side = int(round(side * math.sqrt(2) / 16)) * 16
    # 3. one image over every device
    probe = _child(64 if args.smoke else 256, False, 1, 2, min(left(), 120))
    n = int(probe.get("device_count") or 1)
    if n > 1 and left() > 60:
        side = 96 if args.smoke else 2048
        for devices in (1, n):
            report["sharded"].append({"side": side, "devices": devices, **_child(side, False, devices, 5, left() * 0.45)})
    report["seconds"] = round(time.time() - t_start, 1)
    (args.out / "suite.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "suite.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The suite's tables."""
    lines = ["| recipe | precision | variant | ms / iteration | vs torch eager | warm-up s | device peak MiB |",
             "|---|---|---|---|---|---|---|"]
    for e in report["speed"]:
        for v, s in (e.get("variants") or {}).items():
            if not s or "error" in s:
                lines.append(f"| {e['preset']} {e['optimizer']} | {e['precision']} | {v} | failed | | | |")
                continue
            sp = s.get("speedup_vs_torch_eager")
            lines.append(f"| {e['preset']} {e['optimizer']} | {e['precision']} | {v} | {s['ms_per_iteration']:.2f} | "
                         f"{'' if sp is None else f'{sp:.2f}x'} | {s.get('warmup_s') or 0:.1f} | "
                         f"{'' if s.get('device_peak_mb') is None else round(s['device_peak_mb'])} |")
        if e.get("skipped") or e.get("error"):
            lines.append(f"| {e['preset']} {e['optimizer']} | {e['precision']} | - | {e.get('skipped') or e.get('error')} | | | |")
    lines += ["", "| largest image: side | remat | ok | ms / iteration (3 its, set-up included) | device peak GiB |",
              "|---|---|---|---|---|"]
    for e in report["largest"]:
        peak = e.get("peak_bytes")
        lines.append(f"| {e['side']} | {e['remat']} | {e.get('ok')} | {e.get('ms_per_iteration', float('nan')):.1f} | "
                     f"{'' if not peak else f'{peak / 2**30:.1f}'} |")
    if report["sharded"]:
        lines += ["", "| one image split: side | devices | ms / iteration |", "|---|---|---|"]
        for e in report["sharded"]:
            lines.append(f"| {e['side']} | {e['devices']} | {e.get('ms_per_iteration', float('nan')):.1f} |")
    lines.append(f"\n{report['seconds']} s in all{' (smoke run on the CPU)' if report['smoke'] else ''}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
