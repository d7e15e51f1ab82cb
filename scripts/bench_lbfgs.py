#!/usr/bin/env python
"""Experiment: the cost of the engine's L-BFGS bookkeeping alone (no network), per step.

    python scripts/bench_lbfgs.py --sizes 256,512 --stored 100,20

Runs ``scale_by_torch_lbfgs(100)`` updates (and, for comparison, a copy of the update as it
was before the performance log's L-BFGS changes) on an S×S×3 image inside a jitted ``lax.scan``
with a cheap stand-in gradient, (a) the update alone and (b) the update plus the engine's
"keep the old state if the step was not finite" selection (``loop.keep_if_ok``; the copy of the
old update gets the plain ``where`` over the whole state the engine used before). The memory
starts with ``--stored`` pairs. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nst_jax.engine.loop import keep_if_ok  # noqa: E402
from nst_jax.program.optimizers import TorchLBFGSState, scale_by_torch_lbfgs  # noqa: E402


def before_update(memory: int):
    """``scale_by_torch_lbfgs``'s update as it was before the performance log's L-BFGS changes:
    whole-memory ``where`` for the write, loops over every slot (a copy kept for measurement)."""
    vdot = lambda a, b: jnp.vdot(a, b)  # noqa: E731

    def update(grad, state, params=None):
        first = state.count == 0
        y = grad - state.prev_grad
        s = state.prev_step
        ys = vdot(y, s)
        store = (~first) & (ys > 1e-10)
        s_mem = jnp.where(store, state.s_mem.at[state.head].set(s), state.s_mem)
        y_mem = jnp.where(store, state.y_mem.at[state.head].set(y), state.y_mem)
        rho = jnp.where(store, state.rho.at[state.head].set(1.0 / jnp.where(store, ys, 1.0)), state.rho)
        head = jnp.where(store, (state.head + 1) % memory, state.head)
        size = jnp.where(store, jnp.minimum(state.size + 1, memory), state.size)
        h_diag = jnp.where(store, ys / jnp.where(store, vdot(y, y), 1.0), state.h_diag)
        slot = lambda k: (head - 1 - k) % memory  # noqa: E731

        def backward(k, carry):
            q, alphas = carry
            i = slot(k)
            a = jnp.where(k < size, rho[i] * vdot(s_mem[i], q), 0.0)
            return q - a * y_mem[i], alphas.at[i].set(a)

        q, alphas = jax.lax.fori_loop(0, memory, backward, (-grad, jnp.zeros((memory,), jnp.float32)))
        r = q * h_diag

        def forward(j, r):
            k = memory - 1 - j
            i = slot(k)
            coef = jnp.where(k < size, alphas[i] - rho[i] * vdot(y_mem[i], r), 0.0)
            return r + coef * s_mem[i]

        d = jax.lax.fori_loop(0, memory, forward, r)
        t = jnp.where(first, jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(grad))), 1.0)
        return t * d, TorchLBFGSState(state.count + 1, grad, t * d, s_mem, y_mem, rho, head, size, h_diag)

    return update


def measure(size: int, stored: int, steps: int, repeats: int, with_keep: bool, before: bool = False) -> float:
    opt = scale_by_torch_lbfgs(100, 1.0)
    if before:
        opt = opt._replace(update=before_update(100))
    x = jnp.asarray(np.random.default_rng(0).random((size, size, 3), dtype=np.float32))
    keep = None if before else keep_if_ok

    def body(carry, _):
        v, st = carry
        g = jnp.sin(3.0 * v) + v  # stand-in gradient
        if with_keep and keep is not None:  # the engine's _step: store only finite pairs, keep-if-ok
            u, st2 = opt.update(g, st, v, value=jnp.sum(g))  # a NaN value stores no pair
        else:
            u, st2 = opt.update(g, st, v)
        new = (v + 1e-3 * u, st2)
        if with_keep:
            ok = jnp.all(jnp.isfinite(new[0]))
            if keep is not None:
                return (new[0], keep(ok, st2, st)), 0.0
            return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, carry), 0.0
        return new, 0.0

    run = jax.jit(lambda c: jax.lax.scan(body, c, None, length=steps)[0], donate_argnums=0)
    st0 = opt.init(x)._replace(size=jnp.asarray(stored, jnp.int32), head=jnp.asarray(stored % 100, jnp.int32),
                               count=jnp.asarray(5, jnp.int32))
    fresh = lambda: jax.block_until_ready(jax.tree.map(jnp.copy, (x, st0)))  # noqa: E731
    jax.block_until_ready(run(fresh()))
    times = []
    for _ in range(repeats):
        c = fresh()
        t0 = time.perf_counter()
        jax.block_until_ready(run(c))
        times.append((time.perf_counter() - t0) / steps)
    return 1e3 * statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--stored", default="100")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"# loadavg {os.getloadavg()}")
    for size in map(int, args.sizes.split(",")):
        for stored in map(int, args.stored.split(",")):
            for before in (True, False):
                a = measure(size, stored, args.steps, args.repeats, False, before)
                b = measure(size, stored, args.steps, args.repeats, True, before)
                print(f"{size}x{size} stored {stored:>3} {'before' if before else 'now   '}: update {a:7.1f} ms/step, "
                      f"update + keep-if-ok {b:7.1f} ms/step  (loadavg {os.getloadavg()[0]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
