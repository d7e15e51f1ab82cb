#!/usr/bin/env python
"""Benchmark: VGG forward to a layer (default relu5_1) + gradient w.r.t. the input image.

JAX (``nst_jax.network.vgg.features`` under ``jax.jit``, NHWC) against PyTorch eager
(``torch.nn.functional``, NCHW float32, and the channels_last variant), on the same random
He-initialised weights and the same input. Compile / warm-up time is reported apart from the
steady state; the steady state is the median of ``--repeats`` timed calls.

    python scripts/time_features.py --size 256 --repeats 5 [--arch vgg19] [--json out.json]

Each variant runs in its own Python process: XLA's and PyTorch's (OpenMP) thread pools in one
process fight over the cores (we measured torch 10-30x slower after a JAX run in the same
process on a 2-core machine). The parent checks that all variants computed the same gradient.

This is a measurement, not a test: nothing here asserts a duration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from machine import cpu_busy_fraction, cpu_model_and_features, other_load, stat_sample, usable_cpus  # noqa: E402
from nst_jax.network import vgg  # noqa: E402  (importing jax starts no threads)

VARIANTS: dict[str, str] = {
    "jax": "jax jit NHWC",
    "jax_vjp": "jax, engine VJPs",  # vgg.features(custom_vjp=True): what stylize runs
    "jax_winograd": "jax, engine VJPs, Winograd",  # ... with vgg.with_winograd params (conv auto)
    "torch": "torch eager NCHW",
    "torch_cl": "torch eager channels_last",
}


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, object]:
    """CPU model, core counts, load and library versions."""
    import jax
    import torch

    model, features = cpu_model_and_features()
    return {
        "cpu": model,
        "cpu_features": features,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
        "cpu_busy_before_start": cpu_busy_fraction(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------- inputs


def random_params(arch: str, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """He-initialised float32 params for ``arch`` (HWIO kernels), independent of weights.py."""
    rng = np.random.default_rng(seed)
    params = {}
    for spec in vgg.conv_specs(arch):
        std = np.sqrt(2.0 / (9 * spec.in_channels))
        params[spec.name] = {
            "kernel": (rng.standard_normal((3, 3, spec.in_channels, spec.out_channels)) * std)
            .astype(np.float32),
            "bias": (rng.standard_normal(spec.out_channels) * 0.1).astype(np.float32),
        }
    return params


def network_input(size: int, seed: int = 1) -> np.ndarray:
    """A random RGB image in [0, 1], Caffe-preprocessed in numpy (NHWC, float32)."""
    rgb = np.random.default_rng(seed).random((1, size, size, 3), dtype=np.float32)
    c = vgg.CAFFE
    x = rgb * c.scale
    if c.channel_order == "BGR":
        x = x[..., ::-1]
    return np.ascontiguousarray((x - np.float32(c.mean)) / np.float32(c.std), np.float32)


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` (which must block until done)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------- variants


def bench_jax(params: dict, x_nhwc: np.ndarray, layer: str, repeats: int, mode: str = "jax") -> tuple[dict, np.ndarray]:
    """Jitted value_and_grad of sum(features[layer]) w.r.t. the NHWC input."""
    import jax
    import jax.numpy as jnp

    custom = mode != "jax"

    def loss(p: dict, x: jax.Array) -> jax.Array:
        return jnp.sum(vgg.features(p, x, [layer], custom_vjp=custom)[layer])

    if mode == "jax_winograd":
        params = vgg.with_winograd(params, [layer])
    p = jax.device_put(params)
    x = jax.device_put(x_nhwc)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss, argnums=1)).lower(p, x).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(p, x))
    first_s = time.perf_counter() - t0
    times = time_calls(lambda: jax.block_until_ready(compiled(p, x)), repeats)
    _, grad = compiled(p, x)
    return {"compile_s": compile_s, "first_call_s": first_s, "times_s": times}, np.asarray(grad)


def bench_torch(
    params: dict, x_nhwc: np.ndarray, layer: str, repeats: int, channels_last: bool
) -> tuple[dict, np.ndarray]:
    """Eager forward (torch.nn.functional, max pooling) + torch.autograd.grad w.r.t. the input.

    Weights do not require grad, so autograd computes only the input gradient, like JAX.
    """
    import torch
    import torch.nn.functional as F

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    tparams = {
        name: (
            torch.from_numpy(np.ascontiguousarray(p["kernel"].transpose(3, 2, 0, 1)))
            .contiguous(memory_format=fmt),
            torch.from_numpy(p["bias"]),
        )
        for name, p in params.items()
    }
    order = vgg.layer_names(vgg.arch_of(params))
    order = order[: order.index(layer) + 1]
    x0 = torch.from_numpy(np.array(x_nhwc)).permute(0, 3, 1, 2).contiguous(memory_format=fmt)

    def step() -> torch.Tensor:
        x = x0.detach().requires_grad_(True)
        h = x
        for name in order:
            if name.startswith("conv"):
                h = F.conv2d(h, *tparams[name], padding=1)
            elif name.startswith("relu"):
                h = F.relu(h)
            else:
                h = F.max_pool2d(h, 2, 2)
        (grad,) = torch.autograd.grad(h.sum(), x)
        return grad

    t0 = time.perf_counter()
    step()
    first_s = time.perf_counter() - t0
    times = time_calls(step, repeats)
    grad = step().permute(0, 2, 3, 1).contiguous().numpy()
    return {"compile_s": None, "first_call_s": first_s, "times_s": times}, grad


def run_child(args: argparse.Namespace) -> None:
    """Time one variant in this process; write the result JSON and the gradient (.npy)."""
    params = random_params(args.arch)
    x = network_input(args.size)
    if args.child.startswith("jax"):
        result, grad = bench_jax(params, x, args.layer, args.repeats, args.child)
    else:
        result, grad = bench_torch(params, x, args.layer, args.repeats, args.child == "torch_cl")
    out = Path(args.child_out)
    np.save(out.with_suffix(".npy"), grad)
    out.with_suffix(".json").write_text(json.dumps(result))


def run_variant(variant: str, args: argparse.Namespace, tmp: Path) -> tuple[dict, np.ndarray]:
    """Run ``variant`` in a fresh interpreter and read its results back."""
    out = tmp / variant
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant,
           "--child-out", str(out), "--size", str(args.size), "--repeats", str(args.repeats),
           "--arch", args.arch, "--layer", args.layer]  # fmt: skip
    stat0 = stat_sample()
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True)
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.with_suffix(".json").read_text())
    # Share of the machine used by *other* processes while this variant ran. High: noisy numbers.
    result["other_load"] = other_load(stat0, stat_sample(), usage0, usage1)
    return result, np.load(out.with_suffix(".npy"))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="square image side (default 256)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per variant (median)")
    ap.add_argument("--arch", default="vgg19", choices=vgg.ARCHS)
    ap.add_argument("--layer", default="relu5_1", help="deepest layer (default relu5_1)")
    ap.add_argument("--no-channels-last", action="store_true", help="skip torch channels_last")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="on a shared machine, first wait up to S seconds for the CPUs to be "
                         "less than 10%% busy")  # fmt: skip
    ap.add_argument("--child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    vgg.validate_layers(args.arch, [args.layer])
    if args.child:
        run_child(args)
        return None

    deadline = time.monotonic() + args.wait_quiet
    while time.monotonic() < deadline and (cpu_busy_fraction() or 0.0) > 0.10:
        pass
    info = machine_info()
    variants = [v for v in VARIANTS if not (args.no_channels_last and v == "torch_cl")]
    results: dict[str, dict] = {}
    grads: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            results[VARIANTS[v]], grads[v] = run_variant(v, args, Path(tmp))
    info["cpu_busy_after"] = cpu_busy_fraction()
    ref = grads["torch"]
    rel = {
        VARIANTS[v]: float(np.linalg.norm(g - ref) / np.linalg.norm(ref))
        for v, g in grads.items()
        if v != "torch"
    }

    busy = [100 * (info[k] or 0.0) for k in ("cpu_busy_before_start", "cpu_busy_after")]
    print(f"# {args.arch} forward to {args.layer} + d/d input, {args.size}x{args.size}, batch 1, "
          f"float32, median of {args.repeats}, each variant in its own process")  # fmt: skip
    print(f"# machine: {info['cpu']} ({', '.join(info['cpu_features'])}), "
          f"{info['usable_cpus']}/{info['logical_cpus']} CPUs usable, loadavg "
          f"{info['loadavg_at_start']}, other load before/after: {busy[0]:.0f}%/{busy[1]:.0f}%")  # fmt: skip
    print(f"# python {info['python']}, jax {info['jax']}, torch {info['torch']} "
          f"({info['torch_threads']} threads), numpy {info['numpy']}")  # fmt: skip
    print("# input gradient vs torch NCHW (relative L2): "
          + ", ".join(f"{k} {v:.1e}" for k, v in rel.items()))  # fmt: skip
    header = (f"{'variant':<28} {'compile ms':>11} {'1st call ms':>12} {'median ms':>10} "
              f"{'min ms':>8} {'max ms':>8} {'other load':>11}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        ts = [t * 1e3 for t in r["times_s"]]
        r["median_s"] = statistics.median(r["times_s"])
        comp = f"{r['compile_s'] * 1e3:.0f}" if r["compile_s"] is not None else "-"
        other = "?" if r["other_load"] is None else f"{100 * r['other_load']:.0f}%"
        print(f"{name:<28} {comp:>11} {r['first_call_s'] * 1e3:>12.0f} "
              f"{statistics.median(ts):>10.1f} {min(ts):>8.1f} {max(ts):>8.1f} {other:>11}")  # fmt: skip

    report = {
        "benchmark": "vgg_forward_input_grad",
        "command": " ".join(["scripts/time_features.py"]
                            + (argv if argv is not None else sys.argv[1:])),  # fmt: skip
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if not k.startswith("child")},  # fmt: skip
        "machine": info,
        "grad_rel_diff_vs_torch_nchw": rel,
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
