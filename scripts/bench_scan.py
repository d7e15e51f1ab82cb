#!/usr/bin/env python
"""Experiment: per-step time of the engine's chunked ``lax.while_loop`` against other loop structures.

    python scripts/bench_scan.py --size 128 --steps 10 --repeats 5 --variants plain,scan,scan_nocond

Variants (all run the same ``engine.step`` on the same state):
  plain         ``jax.jit(engine.step)`` called from Python once per step (state donated)
  plain_nodonate  the same without donation
  scan          ``engine.run_chunk`` (the engine as it is: a while_loop up to n_active)
  scan_cond     the engine before: ``lax.scan`` with a ``lax.cond`` masking each step
  scan_nocond   ``lax.scan`` over ``step`` without the n_active ``lax.cond``
  scan_unrollK  ``scan_nocond`` with ``unroll=K``
  fori          ``lax.fori_loop`` over ``step`` (no per-step losses)
  vag           only ``jax.jit(value_and_grad(loss))`` per step (no optimiser, no bookkeeping)
  feat          only the network: ``jax.jit(value_and_grad(sum of the deepest layer))`` per step

Each variant runs in its own process (``--child``) so compiled programs and thread pools never mix.
A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nst_jax.engine import driver, loop as engine
    from nst_jax.network import backbones as network, vgg
    from nst_jax.objective import terms as objective
    from nst_jax import preset
    from nst_jax.engine.loop import init_state, initial_variable
    from nst_jax.objective.targets import compute_targets
    from nst_jax.weights import synthetic_params

    if args.vjp in ("jax", "conv"):  # the engine as it was: JAX's own VJPs (for the pools, or all)
        pool = vgg._pool
        vgg._pool = lambda x, pooling, custom_vjp=False: pool(x, pooling, False)
    if args.vjp == "jax":
        conv_ = vgg._conv
        vgg._conv = lambda x, p, precision, custom_vjp=False: conv_(x, p, precision, False)

    cfg = preset(args.preset).replace(optimizer=args.optimizer, shape=(args.size, args.size), size=None,
                                      precision=args.precision)
    if args.optimizer == "adam":
        cfg = cfg.replace(learning_rate=0.02 if cfg.variable_space == "rgb" else 2.0, adam_eps_mode="sqrt_vhat")
    params = jax.device_put(synthetic_params("vgg19", 0))
    conv = network.as_spec(vgg.CAFFE)
    program, values = cfg.program(), cfg.values()
    rng = np.random.default_rng(1)
    content = rng.random((args.size, args.size, 3), dtype=np.float32)
    style = rng.random((args.size, args.size, 3), dtype=np.float32)
    targets = compute_targets(params, conv, content, style, cfg)
    v0 = initial_variable(jnp.asarray(content), None, cfg, conv, jax.random.PRNGKey(0))
    n = args.steps
    v = args.variant

    def fresh():
        return init_state(v0, cfg.program(), cfg.values())

    if v.startswith("plain") or v in ("vag", "feat"):
        if v in ("vag", "feat"):
            def objective(params, targets, x):
                xn = engine.to_network(x, program, conv)
                if v == "feat":  # the network alone: sum of the deepest layer's features
                    deepest = max(network.all_layers(program), key=vgg.layer_names(cfg.arch).index)
                    return jnp.sum(network.features(params, xn, [deepest], program, conv)[deepest])
                return objective.network_objective(params, targets, xn, values, program, conv)[0]
            f = jax.jit(jax.value_and_grad(objective, argnums=2))

            def run(state):
                x = state.v
                for _ in range(n):
                    val, g = f(params, targets, x)
                    x = x - 1e-3 * g
                jax.block_until_ready(x)
                return state, val
        else:
            donate = (2,) if v == "plain" else ()
            step = jax.jit(lambda p, t, s: engine.step(p, t, values, s, program, conv), donate_argnums=donate)

            def run(state):
                vals = []
                for _ in range(n):
                    state, val = step(params, targets, state)
                    vals.append(val)
                jax.block_until_ready(state)
                return state, vals[-1]
    else:
        if v == "scan":
            def prog(p, t, s):
                # the engine as it is: a batch of one (squeezed inside the compiled chunk)
                s1, rows = engine.run_chunk(p, *driver.stack([(t, values, s)]), jnp.asarray([n], jnp.int32),
                                            program=program, spec=conv, length=n)
                return jax.tree.map(lambda x: x[0], (s1, rows))
        else:
            unroll = 1
            if v.startswith("scan_unroll"):
                unroll = int(v[len("scan_unroll"):])

            def loop(p, t, s):
                if v == "scan_cond":  # the engine before: lax.scan with a lax.cond masking each step
                    n_active = jnp.asarray(n, jnp.int32)

                    def body(st, i):
                        return jax.lax.cond(i < n_active, lambda s_: engine.step(p, t, values, s_, program, conv),
                                            lambda s_: (s_, jnp.asarray(jnp.nan, jnp.float32)), st)

                    return jax.lax.scan(body, s, jnp.arange(n))
                if v == "fori":
                    out = jax.lax.fori_loop(0, n, lambda i, st: engine.step(p, t, values, st, program, conv)[0], s)
                    return out, jnp.zeros((n,))
                return jax.lax.scan(lambda st, _: engine.step(p, t, values, st, program, conv), s, None, length=n,
                                    unroll=unroll)
            prog = jax.jit(loop, donate_argnums=(2,))

        def run(state):
            state, losses = prog(params, targets, state)
            jax.block_until_ready(state)
            return state, losses[-1]

    t0 = time.perf_counter()
    state, last = run(fresh())  # compile + first run
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        s = fresh()
        jax.block_until_ready(s)
        t0 = time.perf_counter()
        _, last = run(s)
        times.append((time.perf_counter() - t0) / n)
    return {"variant": v, "vjp": args.vjp, "xla_flags": os.environ.get("XLA_FLAGS"),
            "size": args.size, "optimizer": args.optimizer, "first_s": first, "per_step_ms": [t * 1e3 for t in times],
            "median_ms": statistics.median(times) * 1e3, "last_loss": float(np.ravel(last)[0]),
            "loadavg": os.getloadavg()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--preset", default="jcjohnson")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--precision", default="default")
    ap.add_argument("--variants", default="plain,scan,scan_nocond")
    ap.add_argument("--vjp", default="custom", choices=("custom", "conv", "jax"),
                    help="custom: the engine's VJPs for convs and pools; conv: for convs only; jax: JAX's own")
    ap.add_argument("--xla-flags", default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.child:
        args.variant = args.child
        print(json.dumps(child(args)))
        return 0
    results = []
    for v in args.variants.split(","):
        cmd = [sys.executable, __file__, "--child", v, "--size", str(args.size), "--steps", str(args.steps),
               "--repeats", str(args.repeats), "--preset", args.preset, "--optimizer", args.optimizer,
               "--precision", args.precision] + ["--vjp", args.vjp]
        env = dict(os.environ)
        if args.xla_flags is not None:
            env["XLA_FLAGS"] = args.xla_flags
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            print(v, "FAILED", out.stderr[-2000:])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{v:<16} vjp {args.vjp:<6} first {r['first_s']:.2f}s  median {r['median_ms']:.1f} ms/step  "
              f"all {[round(x, 1) for x in r['per_step_ms']]}  loss {r['last_loss']:.6g}  load {r['loadavg'][0]:.2f}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
