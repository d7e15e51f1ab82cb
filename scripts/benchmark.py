#!/usr/bin/env python
"""Benchmark one style-transfer recipe in nst-jax and in PyTorch, same device, weights, images and iterations.

    python scripts/benchmark.py --preset default --optimizer adam --size 256 --iterations 20 --repeats 3
    python scripts/benchmark.py --preset pytorch --size 128 --iterations 300 --repeats 1   # L-BFGS time-to-loss
    python scripts/benchmark.py --preset keras --size 256 --variants nst-jax,torch,keras-way
    python scripts/benchmark.py --preset matlab --size 128 --styles 4 --json out.json

Variants (each runs in its own Python process, so thread pools and memory peaks never mix):

  nst-jax        ``nst_jax.stylize``: targets precomputed once, the optimisation loop compiled
                 in chunks (``lax.while_loop``). Warm-up (first ``stylize``: compilation included) is timed
                 apart from the steady state; the steady state times the compiled chunk itself.
  nst-jax-direct the same with ``conv_algorithm="direct"`` (XLA's own convolutions): shows what the
                 Winograd convolutions (``--conv``, the ``default`` preset's ``auto``) buy.
  torch          PyTorch eager, as a PyTorch user writes it: the tutorial's own model and closure
                 (loss modules after the convolutions, ``optim.LBFGS`` / ``optim.Adam``) for the
                 ``pytorch`` recipe; the same structure (targets once, one forward per evaluation) with
                 the recipe's loss formulas for the others (scripts/bench_torch.py).
  torch-cl       ``torch`` with the network and images in ``torch.channels_last`` (NHWC) memory
                 format: PyTorch's faster CPU layout for oneDNN convolutions, one line for a user.
  torch-compile  the same loss module under ``torch.compile`` (inductor); its first run includes the
                 compilation. Reported as failed if inductor cannot build on this machine.
  keras-way      the Keras example's structure: [content, style, result] through VGG as one batch every
                 iteration (``torch_reference.keras_compute_loss`` for the keras recipes).

Per variant: warm-up time, median ms per iteration over ``--repeats`` runs of ``--iterations``
(forward + backward + update; for L-BFGS one iteration is one function evaluation), peak memory
(RSS of the process on the CPU; device peak on GPU), and the loss trajectory. The parent checks
that nst-jax and torch computed the same thing (first and final loss), and for L-BFGS how many
evaluations (and how long) each variant needs to reach torch eager's final loss. With
``--styles N`` it also times N results: ``stylize_many`` (one vmapped program) against N
sequential torch runs, as results per second.

A measurement, not a test: nothing here asserts a duration. ``main(argv) -> int`` is importable
(``nst-jax bench ARGS``).
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
from typing import Any, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # torch_reference, bench_torch
sys.path.insert(0, str(HERE.parent))  # run from a checkout

from machine import cpu_busy_fraction, cpu_model_and_features, other_load, stat_sample, usable_cpus  # noqa: E402

VARIANTS = ("nst-jax", "nst-jax-direct", "torch", "torch-cl", "torch-compile", "keras-way")
PRESET_NAMES = ("keras", "keras-lecture", "pytorch", "matlab", "gatys", "jcjohnson", "default")
PRECISIONS = {"float32": "default", "highest": "highest", "bf16": "bf16"}


# --------------------------------------------------------------------------------------------
# machine


def machine_info() -> dict[str, Any]:
    model, features = cpu_model_and_features()
    versions = {}
    for mod in ("jax", "jaxlib", "torch", "numpy", "optax"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    mem = None
    try:
        mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pass
    return {
        "cpu": model,
        "cpu_features": features,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "memory_bytes": mem,
        "python": platform.python_version(),
        **versions,
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
    }


# --------------------------------------------------------------------------------------------
# the recipe


def parse_size(text: str) -> tuple[int, int]:
    if "x" in text.lower():
        h, w = text.lower().split("x")
        return int(h), int(w)
    return int(text), int(text)


def build_config(args: argparse.Namespace):
    """The preset's StyleConfig at the benchmark's shape, optimiser and precision."""
    from nst_jax import preset

    cfg = preset(args.preset)
    changes: dict[str, Any] = {"shape": parse_size(args.size), "size": None, "precision": PRECISIONS[args.precision],
                               "chunk_size": max(1, args.iterations)}
    if args.optimizer and args.optimizer != cfg.optimizer:
        changes["optimizer"] = args.optimizer
        if args.optimizer == "adam":
            # neural-style's Adam (lr 10 on the 0-255 network image); 0.02 on RGB [0, 1]
            changes["learning_rate"] = 10.0 if cfg.variable_space == "network" else 0.02
            changes["adam_eps_mode"] = "sqrt_vhat"
        elif args.optimizer == "lbfgs":
            changes["learning_rate"] = 1.0
        changes["lr_decay_rate"] = None
    if args.lr is not None:
        changes["learning_rate"] = args.lr
    if args.conv is not None:
        changes["conv_algorithm"] = args.conv
    if getattr(args, "remat", False):
        changes["remat"] = True
    return cfg.replace(**changes)


def _smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random RGB image in [0, 1]: coarse noise upsampled plus fine noise."""
    from nst_jax import image

    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, h // 8), max(2, w // 8), 3), dtype=np.float32)
    img = image.resize(coarse, (h, w), "bicubic") + 0.05 * rng.standard_normal((h, w, 3)).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _pattern_image(h: int, w: int, seed: int) -> np.ndarray:
    """A style-like RGB image in [0, 1]: oriented stripes of a different frequency per channel, plus noise
    (statistics unlike the content's, so the style loss has work to do for hundreds of evaluations)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / np.float32(max(h, w))
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(6.0, 20.0, 2)
        img[..., c] = 0.5 + 0.4 * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    img += 0.1 * rng.standard_normal((h, w, 3)).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _load(path: str, shape: tuple[int, int], resample: str) -> np.ndarray:
    from nst_jax import image

    return image.resize(image.load_image(path), shape, resample).astype(np.float32)


def prepare_inputs(args: argparse.Namespace, cfg, workdir: Path) -> dict[str, Any]:
    """Images, start image and conventions, written once for every child (identical inputs)."""
    import jax
    import jax.numpy as jnp

    from nst_jax.network import backbones as network, vgg
    from nst_jax.engine.loop import initial_variable

    h, w = cfg.shape
    content = _load(args.content, (h, w), cfg.resample) if args.content else _smooth_image(h, w, args.seed + 1)
    style = _load(args.style, (h, w), cfg.resample) if args.style else _pattern_image(h, w, args.seed + 2)
    n = max(1, args.styles)
    styles = np.stack([style] + [_pattern_image(h, w, args.seed + 100 + i) for i in range(1, n)])
    if args.weights:
        from nst_jax.weights import load_weights

        base = load_weights(args.weights).convention
    else:
        base = vgg.TORCHVISION if args.preset == "pytorch" else vgg.CAFFE
    eff = network.with_pixel_scale(network.as_spec(base), cfg.pixel_scale).convention
    v0 = initial_variable(jnp.asarray(content), jnp.asarray(style), cfg, eff, jax.random.PRNGKey(args.seed))
    path = workdir / "inputs.npz"
    np.savez(path, content=content, style=style, styles=styles, v0=np.asarray(v0, np.float32))
    return {"inputs": str(path), "convention": base.to_dict(), "effective_convention": eff.to_dict()}


def write_spec(args: argparse.Namespace, cfg, workdir: Path, **extra: Any) -> Path:
    """The children's spec (config, run sizes, inputs) as ``workdir/spec.json``; ``extra`` keys
    are added (``memory_only``: scripts/bench_largest.py)."""
    spec = {"config": cfg.to_dict(), "iterations": args.iterations, "repeats": args.repeats,
            "styles": args.styles, "device": args.device, "weights": args.weights, "arch": args.arch,
            "seed": args.seed, "compilation_cache": args.compilation_cache,
            **prepare_inputs(args, cfg, workdir), **extra}
    path = workdir / "spec.json"
    path.write_text(json.dumps(spec))
    return path


# --------------------------------------------------------------------------------------------
# children


def _rss_now() -> Optional[int]:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001
        return None


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def _load_params(spec: dict):
    if spec["weights"]:
        from nst_jax.weights import load_weights

        return load_weights(spec["weights"]).params
    from nst_jax.weights import synthetic_params

    return synthetic_params(spec["arch"], spec["seed"])


def _config(spec: dict):
    from nst_jax import StyleConfig

    d = dict(spec["config"])
    for k in ("shape",):
        if d.get(k) is not None:
            d[k] = tuple(d[k])
    return StyleConfig(**d)


def child_jax(spec: dict, direct: bool = False) -> dict:
    if spec.get("compilation_cache"):
        import jax

        jax.config.update("jax_compilation_cache_dir", spec["compilation_cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    import jax
    import jax.numpy as jnp

    from nst_jax.engine import driver, loop
    from nst_jax.network import vgg
    from nst_jax.engine.batching import stylize_many
    from nst_jax.engine.single import stylize
    from nst_jax.network.backbones import uses_winograd

    cfg = _config(spec)
    if direct:
        cfg = cfg.replace(conv_algorithm="direct")
    n, reps = spec["iterations"], spec["repeats"]
    data = np.load(spec["inputs"])
    content, style = data["content"], data["style"]
    base = vgg.Convention(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["convention"].items()})
    params = jax.device_put(_load_params(spec))
    rss_base = _rss_now()
    out: dict[str, Any] = {"structure": "stylize: targets once, compiled chunk, conv "
                           + ("winograd" if uses_winograd(cfg, base, content.shape) else "direct")}

    # (each Result holds its final LoopState, L-BFGS memory included: keep only the losses, so the
    # peak RSS is that of one run at a time, as a user's)
    t0 = time.perf_counter()
    first_losses = stylize(content, style, params, cfg, iterations=n, seed=spec["seed"], convention=base,
                                    chunk_size=n).losses
    out["first_run_s"] = time.perf_counter() - t0
    out["peak_rss_first_run"] = _peak_rss()
    if spec.get("memory_only"):  # scripts/bench_largest.py: one run's peak, nothing else
        return {**out, "rss_base": rss_base, "peak_rss": out["peak_rss_first_run"],
                "losses": [float(x) for x in np.asarray(first_losses).ravel()]}
    t0 = time.perf_counter()
    run_losses = stylize(content, style, params, cfg, iterations=n, seed=spec["seed"], convention=base,
                                  chunk_size=n).losses
    out["second_run_s"] = time.perf_counter() - t0
    out["warmup_s"] = out["first_run_s"] - out["second_run_s"]
    out["first_run_losses_match"] = bool(np.array_equal(first_losses, run_losses, equal_nan=True))

    v0 = jnp.asarray(data["v0"])  # the start every child shares, as a one-member state

    def fresh_state():
        return driver.stack([loop.init_state(v0, cfg.program(), cfg.values())])

    # what stylize runs: driver.prepare's arguments (Winograd kernels added, targets, values, state)
    t0 = time.perf_counter()
    prep = jax.block_until_ready(driver.prepare(params, [content], [style], [cfg], convention=base,
                                                resume=fresh_state()))
    out["setup_s"] = time.perf_counter() - t0  # targets (steady)
    program, conv, run_params, targets, values = prep.program, prep.spec, prep.params, prep.targets, prep.values
    n_arr = jnp.asarray([n], jnp.int32)
    state_shape = jax.eval_shape(fresh_state)  # lowering needs shapes only
    jax.clear_caches()  # the chunk compiled by stylize above would be reused: time a fresh compile
    t0 = time.perf_counter()
    lowered = loop.run_chunk.lower(run_params, targets, values, state_shape, n_arr, program=program, spec=conv, length=n)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    out["trace_s"], out["compile_s"] = t1 - t0, time.perf_counter() - t1
    times, losses, evals = [], None, None
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        state = None  # the previous repeat's state: freed before the next is made
        state = jax.block_until_ready(fresh_state())
        t0 = time.perf_counter()
        state, chunk_losses = compiled(run_params, targets, values, state, n_arr)
        jax.block_until_ready((state, chunk_losses))
        times.append(time.perf_counter() - t0)
        losses, evals = np.asarray(chunk_losses)[0, :, 0], int(state.evals[0])  # rows: total, then the terms
    out["minor_faults_per_iteration"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / (reps * n)
    out["times_s"] = times
    out["evaluations"] = evals
    out["losses"] = [float(x) for x in losses]
    out["stylize_losses_match"] = bool(np.allclose(run_losses, losses, rtol=1e-5, equal_nan=True))
    del state

    if spec["styles"] > 1:
        styles = list(data["styles"])
        t0 = time.perf_counter()
        stylize_many(content, styles, params, cfg, iterations=n, convention=base, chunk_size=n,
                              batch_size=len(styles), seeds=[spec["seed"]] * len(styles))
        out["many_first_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        many = stylize_many(content, styles, params, cfg, iterations=n, convention=base, chunk_size=n,
                                     batch_size=len(styles), seeds=[spec["seed"]] * len(styles))
        out["many_s"] = time.perf_counter() - t0
        out["many_final_losses"] = [float(x) for x in many.losses[:, -1]]
    out["rss_base"] = rss_base
    out["peak_rss"] = _peak_rss()
    dev = jax.devices()[0]
    out["device"] = str(dev)
    try:
        stats = dev.memory_stats() or {}
        out["device_peak_bytes"] = stats.get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001
        out["device_peak_bytes"] = None
    return out


def child_torch(spec: dict, variant: str) -> dict:
    import torch

    import bench_torch as bt
    import torch_reference as ref
    from nst_jax.network import vgg

    cfg = _config(spec)
    n, reps = spec["iterations"], spec["repeats"]
    device = torch.device("cuda" if spec["device"] == "gpu" else "cpu")
    if device.type == "cuda":
        # what a PyTorch user tuning for speed sets: cuDNN's autotuner, and TF32 matmuls and
        # convolutions (JAX's default precision on NVIDIA GPUs is TF32 too)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = np.load(spec["inputs"])

    cl = variant == "torch-cl"

    def nchw(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)[None])).to(device)
        return t.contiguous(memory_format=torch.channels_last) if cl else t

    eff = vgg.Convention(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["effective_convention"].items()})
    features = ref.vgg_features(_load_params(spec), cfg.pooling).to(device)
    if cl:
        features = features.to(memory_format=torch.channels_last)
    space = bt.Space(eff, cfg.variable_space, device)
    content, v0 = nchw(data["content"]), nchw(data["v0"])
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    rss_base = _rss_now()

    def make_loss(style: torch.Tensor):
        if variant == "keras-way":
            if bt.keras_way_exact(cfg) and dtype == torch.float32:
                return bt.KerasWayLoss(features, cfg, space, content, style), "keras_compute_loss: 3 images/iteration"
            return bt.PresetLoss(features, cfg, space, content, style, three_images=True, dtype=dtype), \
                "PresetLoss(three_images): 3 images/iteration"
        if variant == "torch" and dtype == torch.float32 and bt.tutorial_applies(cfg, eff):
            return bt.TutorialLoss(features, cfg, content, style), "tutorial model (loss modules), eager"
        module = bt.PresetLoss(features, cfg, space, content, style, dtype=dtype)
        if variant == "torch-compile":
            return torch.compile(module), "PresetLoss under torch.compile (inductor)"
        return module, "PresetLoss (targets once), eager" + (", channels_last" if cl else "")

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    loss_fn, out["structure"] = make_loss(nchw(data["style"]))
    out["setup_s"] = time.perf_counter() - t0
    optimiser = {"lbfgs": "optim.LBFGS" + (" strong_wolfe" if cfg.lbfgs_linesearch == "zoom" else ""),
                 "adam": "adamupdate (MATLAB)" if cfg.adam_eps_mode == "sqrt_v" else "optim.Adam",
                 "sgd": "optim.SGD"}[cfg.optimizer]
    out["structure"] += f", {optimiser}"
    first = bt.run_loop(loss_fn, cfg, space, v0, n, device)
    out["first_run_s"] = first["wall_s"]
    out["peak_rss_first_run"] = _peak_rss()
    if spec.get("memory_only"):  # scripts/bench_largest.py: one run's peak, nothing else
        return {**out, "rss_base": rss_base, "peak_rss": out["peak_rss_first_run"], "losses": first["losses"]}
    times = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        r = bt.run_loop(loss_fn, cfg, space, v0, n, device)
        times.append(r["wall_s"])
    out["minor_faults_per_iteration"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / (reps * n)
    out["times_s"] = times
    out["evaluations"] = r["evaluations"]
    out["losses"] = r["losses"]
    out["warmup_s"] = first["wall_s"] - statistics.median(times)
    if spec["styles"] > 1 and variant == "torch":
        t0 = time.perf_counter()
        finals = []
        for st in data["styles"]:
            fn, _ = make_loss(nchw(st))
            finals.append(bt.run_loop(fn, cfg, space, v0, n, device)["losses"][-1])
        out["many_s"] = time.perf_counter() - t0
        out["many_final_losses"] = finals
    out["rss_base"] = rss_base
    out["peak_rss"] = _peak_rss()
    out["torch_threads"] = torch.get_num_threads()
    out["device"] = str(device)
    out["device_peak_bytes"] = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return out


def run_child(variant: str, spec_path: Path, out_path: Path, env: dict[str, str], timeout: float) -> dict:
    """Run one variant in a fresh interpreter; add the share of the machine other processes used."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--spec", str(spec_path),
           "--child-out", str(out_path)]
    s0 = stat_sample()
    u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s1 = stat_sample()
    if proc.returncode != 0 or not out_path.exists():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        msg = next((l for l in reversed(tail) if l.strip() and not l.startswith(" ")), "failed")
        return {"error": msg[-400:], "stderr_tail": "\n".join(tail[-30:])}
    result = json.loads(out_path.read_text())
    result["process_wall_s"] = wall
    result["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    result["other_load"] = other_load(s0, s1, u0, u1)
    return result


# --------------------------------------------------------------------------------------------
# report


def _evals_to_reach(losses: list[float], target: float) -> Optional[int]:
    for i, v in enumerate(losses):
        if np.isfinite(v) and v <= target:
            return i + 1
    return None


def summarise(results: dict[str, dict], cfg, n: int) -> dict[str, Any]:
    """Per variant: ms per iteration / evaluation, speed relative to torch eager, loss agreement."""
    summary: dict[str, Any] = {}
    torch_r = results.get("torch", {})
    torch_ms = None
    if "times_s" in torch_r:
        torch_ms = 1e3 * statistics.median(torch_r["times_s"]) / max(torch_r["evaluations"], 1)
    jax_r = results.get("nst-jax", {})
    target = best = None
    if cfg.optimizer == "lbfgs" and torch_r.get("losses"):
        # L-BFGS without a line search is not monotone (on random weights it spikes now and then):
        # report the time to torch's final loss and to the lowest loss torch saw.
        target = torch_r["losses"][-1]
        best = float(np.nanmin(torch_r["losses"]))
        summary["target_loss"] = target
        summary["target_best_loss"] = best
    for name, r in results.items():
        if "times_s" not in r:
            summary[name] = {"error": r.get("error", "no result")}
            continue
        med = statistics.median(r["times_s"])
        evals = max(r["evaluations"], 1)
        s: dict[str, Any] = {
            "ms_per_iteration": 1e3 * med / n,
            "ms_per_evaluation": 1e3 * med / evals,
            "ms_per_iteration_min": 1e3 * min(r["times_s"]) / n,
            "ms_per_iteration_max": 1e3 * max(r["times_s"]) / n,
            "evaluations": r["evaluations"],
            "first_loss": r["losses"][0] if r["losses"] else None,
            "final_loss": r["losses"][-1] if r["losses"] else None,
            "warmup_s": r.get("warmup_s"),
            "compile_s": r.get("compile_s"),
            # the process's peak during its first run (compilation, one run), as a user's run
            "peak_rss_mb": r.get("peak_rss_first_run", r["peak_rss"]) / 2**20,
            "peak_rss_whole_process_mb": r["peak_rss"] / 2**20,
            "rss_increase_mb": (r.get("peak_rss_first_run", r["peak_rss"]) - r["rss_base"]) / 2**20 if r.get("rss_base") else None,
            "device_peak_mb": r["device_peak_bytes"] / 2**20 if r.get("device_peak_bytes") else None,
            "other_load": r.get("other_load"),
        }
        if torch_ms:
            s["speedup_vs_torch_eager"] = torch_ms / s["ms_per_evaluation"]
        if torch_r.get("losses") and r["losses"]:
            a, b = np.asarray(r["losses"], np.float64), np.asarray(torch_r["losses"], np.float64)
            k = min(len(a), len(b))
            s["first_loss_rel_diff_vs_torch"] = float(abs(a[0] / b[0] - 1))
            s["final_loss_rel_diff_vs_torch"] = float(abs(a[-1] / b[-1] - 1))
            s["max_rel_diff_vs_torch_first_k"] = float(np.max(np.abs(a[: min(k, 5)] / b[: min(k, 5)] - 1)))
        if target is not None:
            for key, value in (("final", target), ("best", best)):
                e = _evals_to_reach(r["losses"], value)
                s[f"evals_to_torch_{key}_loss"] = e
                s[f"s_to_torch_{key}_loss"] = None if e is None else e * s["ms_per_evaluation"] / 1e3
                if e is not None and r.get("warmup_s") is not None:
                    s[f"s_to_torch_{key}_loss_with_warmup"] = s[f"s_to_torch_{key}_loss"] + max(r["warmup_s"], 0.0)
            s["best_loss"] = float(np.nanmin(r["losses"]))
        if "many_s" in r:
            s["results_per_s"] = len(r["many_final_losses"]) / r["many_s"]
            s["many_s"] = r["many_s"]
            if "many_first_s" in r:
                s["many_first_s"] = r["many_first_s"]
        summary[name] = s
    if jax_r.get("losses") and torch_r.get("losses"):
        summary["same_work"] = {
            "first_loss_rel_diff": summary["nst-jax"].get("first_loss_rel_diff_vs_torch"),
            "final_loss_rel_diff": summary["nst-jax"].get("final_loss_rel_diff_vs_torch"),
        }
    return summary


def print_table(summary: dict, results: dict, info: dict, args, cfg) -> None:
    h, w = cfg.shape
    print(f"# {args.preset} recipe, {h}x{w}, {cfg.optimizer}"
          f"{' (' + cfg.lbfgs_linesearch + ' line search)' if cfg.optimizer == 'lbfgs' else ''}, "
          f"{args.iterations} iterations x {args.repeats} repeats, precision {args.precision}, device {args.device}, "
          f"weights {'synthetic' if not args.weights else args.weights}")
    print(f"# machine: {info['cpu']} ({', '.join(info['cpu_features'])}), {info['usable_cpus']}/{info['logical_cpus']} CPUs, "
          f"python {info['python']}, jax {info['jax']}, torch {info['torch']}, loadavg {info['loadavg_start']} -> "
          f"{info.get('loadavg_end')}")
    unit = "ms/eval" if cfg.optimizer == "lbfgs" else "ms/iter"
    head = (f"{'variant':<14} {'warm-up s':>9} {unit + ' (median)':>17} {'min':>7} {'max':>7} {'vs torch':>8} "
            f"{'peak RSS MB':>11} {'first loss':>11} {'final loss':>11} {'other load':>10}")
    print(head)
    print("-" * len(head))
    for name, s in summary.items():
        if name not in results:
            continue
        if "error" in s:
            print(f"{name:<14} FAILED: {s['error']}")
            continue
        per = s["ms_per_evaluation"] if cfg.optimizer == "lbfgs" else s["ms_per_iteration"]
        scale = per / s["ms_per_iteration"]
        vs = f"{s['speedup_vs_torch_eager']:.2f}x" if s.get("speedup_vs_torch_eager") else "-"
        other = "?" if s["other_load"] is None else f"{100 * s['other_load']:.0f}%"
        mem = s["device_peak_mb"] if s.get("device_peak_mb") else s["peak_rss_mb"]
        print(f"{name:<14} {s['warmup_s']:>9.2f} {per:>17.1f} {s['ms_per_iteration_min'] * scale:>7.1f} "
              f"{s['ms_per_iteration_max'] * scale:>7.1f} {vs:>8} {mem:>11.0f} {s['first_loss']:>11.5g} "
              f"{s['final_loss']:>11.5g} {other:>10}")
    for name, r in results.items():
        if "structure" in r:
            print(f"#   {name}: {r['structure']}" + (f"; compile {r['compile_s']:.2f} s (AOT chunk)" if r.get("compile_s") else ""))
    if "same_work" in summary:
        sw = summary["same_work"]
        print(f"# same work: nst-jax vs torch loss, first evaluation rel. diff {sw['first_loss_rel_diff']:.1e}, "
              f"final {sw['final_loss_rel_diff']:.1e}")
    if "target_loss" in summary:
        for key in ("final", "best"):
            print(f"# L-BFGS: evaluations (seconds: steady / with warm-up) to reach torch eager's {key} loss "
                  f"{summary['target_' + ('' if key == 'final' else 'best_') + 'loss']:.6g}:")
            for name, s in summary.items():
                if isinstance(s, dict) and f"evals_to_torch_{key}_loss" in s:
                    e = s[f"evals_to_torch_{key}_loss"]
                    if e is None:
                        print(f"#   {name}: not reached in {s['evaluations']} (its best {s['best_loss']:.6g})")
                    else:
                        ww = s.get(f"s_to_torch_{key}_loss_with_warmup")
                        print(f"#   {name}: {e} evaluations, {s[f's_to_torch_{key}_loss']:.2f} s"
                              + (f" / {ww:.2f} s" if ww is not None else ""))
    many = {k: s for k, s in summary.items() if isinstance(s, dict) and "results_per_s" in s}
    if many:
        print(f"# {args.styles} styles x {args.iterations} iterations: results per second")
        for name, s in many.items():
            how = "stylize_many (vmapped)" if name == "nst-jax" else f"{args.styles} sequential runs"
            extra = f", first call {s['many_first_s']:.1f} s" if "many_first_s" in s else ""
            print(f"#   {name} ({how}): {s['results_per_s']:.3f} results/s ({s['many_s']:.1f} s{extra})")


# --------------------------------------------------------------------------------------------
# main


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nst-jax bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", choices=PRESET_NAMES)
    ap.add_argument("--optimizer", choices=("sgd", "adam", "lbfgs"), help="override the preset's optimiser")
    ap.add_argument("--lr", type=float, help="override the learning rate")
    ap.add_argument("--size", default="256", help="S (square) or HxW (default 256)")
    ap.add_argument("--iterations", type=int, default=20, help="per run (L-BFGS without line search: evaluations)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median)")
    ap.add_argument("--styles", type=int, default=1, help="N > 1: also time N results (stylize_many vs N torch runs)")
    ap.add_argument("--precision", default="float32", choices=tuple(PRECISIONS),
                    help="bf16: convolutions in bfloat16, losses in float32 (both sides)")
    ap.add_argument("--conv", choices=("direct", "winograd", "auto"), help="override the preset's conv_algorithm")
    ap.add_argument("--remat", action="store_true", help="nst-jax: jax.checkpoint per VGG block")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--weights", help="converted weights file (default: synthetic weights, seed 0)")
    ap.add_argument("--arch", default="vgg19", choices=("vgg19", "vgg16"), help="synthetic weights' architecture")
    ap.add_argument("--content", help="content image file (default: generated)")
    ap.add_argument("--style", help="style image file (default: generated)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--xla-flags", default=None, help="XLA_FLAGS for the nst-jax process")
    ap.add_argument("--compilation-cache", default=None, metavar="DIR",
                    help="persistent JAX compilation cache directory for the nst-jax process")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per variant process")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="first wait up to S seconds for other processes to use < 10%% of the CPUs")
    ap.add_argument("--json", type=Path, help="write the full results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    ap = make_parser()
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(Path(args.spec).read_text())
        if args.child.startswith("nst-jax"):
            out = child_jax(spec, direct=args.child == "nst-jax-direct")
        else:
            out = child_torch(spec, args.child)
        Path(args.child_out).write_text(json.dumps(out))
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {', '.join(bad)}; valid: {', '.join(VARIANTS)}")
    if args.iterations < 1 or args.repeats < 1 or args.styles < 1:
        ap.error("--iterations, --repeats and --styles must be >= 1")
    from nst_jax.errors import ConfigError

    try:
        cfg = build_config(args)
    except ConfigError as err:
        ap.error(str(err))
    deadline = time.monotonic() + args.wait_quiet
    while time.monotonic() < deadline and (cpu_busy_fraction() or 0.0) > 0.10:
        pass
    info = machine_info()
    info["cpu_busy_before"] = cpu_busy_fraction(0.5)
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cuda" if args.device == "gpu" else "cpu"
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="nst-bench-") as tmp:
        workdir = Path(tmp)
        spec_path = write_spec(args, cfg, workdir)
        for v in variants:
            venv = dict(env)
            if v.startswith("nst-jax") and args.xla_flags is not None:
                venv["XLA_FLAGS"] = args.xla_flags
            print(f"# running {v} ...", file=sys.stderr, flush=True)
            results[v] = run_child(v, spec_path, workdir / f"{v}.json", venv, args.timeout)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = summarise(results, cfg, args.iterations)
    print_table(summary, results, info, args, cfg)
    if args.json:
        report = {
            "benchmark": "recipe",
            "command": "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("child", "spec", "child_out")},
            "config": cfg.to_dict(),
            "machine": info,
            "summary": summary,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
