"""The optimisers: optax transforms, built from a program (their kind and sizes) and values (their numbers).

Written as optax writes its own: small ``GradientTransformationExtraArgs`` with NamedTuple states,
composed with ``optax.chain``. The numbers (learning rate, decay, Adam's constants) may be traced
scalars, so one compiled loop serves every value of them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

# ``values`` below is a ``config.Values`` (the traced numbers): named in the docstrings, not imported,
# because config reads this module's table (an import of config here would be a cycle).
Values = Any

Array = jax.Array


def scale_by_matlab_adam(b1: Any, b2: Any, eps: Any, log_b1: Any = None,
                         log_b2: Any = None) -> optax.GradientTransformationExtraArgs:
    """MATLAB's ``adamupdate`` direction: ``sqrt(1-b2^t)/(1-b1^t) · m / (sqrt(v) + eps)``.

    optax's Adam adds eps to sqrt(v̂) instead of sqrt(v); the two differ by the scale of eps only.

    Args:
      b1, b2, eps: Adam's constants (floats or traced scalars).
      log_b1, log_b2: log(b1), log(b2), ideally computed in float64 (``Values`` carries them); by
        default computed here (in float64 from Python numbers).

    Returns:
      The transform (its state is optax's ``ScaleByAdamState``).
    """
    base = optax.scale_by_adam(b1=0.9, b2=0.999, eps=0.0)  # only its init is used
    if log_b1 is None:  # in float64 when b1 is a Python number, else log(float32(b1))
        log_b1 = math.log(b1) if isinstance(b1, (int, float)) else jnp.log(b1)
    if log_b2 is None:
        log_b2 = math.log(b2) if isinstance(b2, (int, float)) else jnp.log(b2)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        # 1 - b**t as -expm1(t log b): MATLAB computes this scalar in double; in float32 the naive
        # form loses ~1e-5 relative at t = 1 (0.999 is not exact in binary).
        corr = jnp.sqrt(-jnp.expm1(t * log_b2)) / -jnp.expm1(t * log_b1)
        out = jax.tree.map(lambda m, v: corr * m / (jnp.sqrt(v) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformationExtraArgs(base.init, update)


class TorchLBFGSState(NamedTuple):
    """State of ``scale_by_torch_lbfgs``: a circular memory of (s, y, 1/yᵀs) pairs."""

    count: Array  # type: ignore[assignment]  # (optax's states name their step counter so too)
    prev_grad: Any
    prev_step: Any
    s_mem: Any  # (memory, *shape) per leaf
    y_mem: Any
    rho: Array  # (memory,)
    head: Array  # next slot to write
    size: Array  # pairs stored
    h_diag: Array


# The fields the update itself leaves as they were after a non-finite evaluation (it stores a pair
# only from a finite one), so the engine need not select them back (``loop.keep_if_ok``).
TorchLBFGSState.self_guarded = ("s_mem", "y_mem", "rho", "head", "size", "h_diag")  # type: ignore[attr-defined]


def _vdot(a: Any, b: Any) -> Any:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _two_loop(grad: Any, s_mem: Any, y_mem: Any, rho: jax.Array, head: jax.Array, size: jax.Array,
              h_diag: jax.Array, memory: int) -> Any:
    """L-BFGS's two-loop recursion over the stored pairs (torch's order): the direction ``-H·grad``.

    Both loops visit only the ``size`` stored pairs (a dynamic trip count): the empty slots added
    exact zeros, so the result is the same as looping over the whole memory.
    """

    def slot(k):  # k-th newest pair
        return (head - 1 - k) % memory

    def backward(k, carry):
        q, alphas = carry
        i = slot(k)
        s_i = jax.tree.map(lambda m: m[i], s_mem)
        y_i = jax.tree.map(lambda m: m[i], y_mem)
        a = rho[i] * _vdot(s_i, q)
        q = jax.tree.map(lambda qq, yy: qq - a * yy, q, y_i)
        return q, alphas.at[i].set(a)

    q = jax.tree.map(jnp.negative, grad)
    q, alphas = jax.lax.fori_loop(0, size, backward, (q, jnp.zeros((memory,), jnp.float32)))
    r = jax.tree.map(lambda x: x * h_diag, q)

    def forward(j, r):
        i = slot(size - 1 - j)  # oldest first
        s_i = jax.tree.map(lambda m: m[i], s_mem)
        y_i = jax.tree.map(lambda m: m[i], y_mem)
        coef = alphas[i] - rho[i] * _vdot(y_i, r)
        return jax.tree.map(lambda rr, ss: rr + coef * ss, r, s_i)

    return jax.lax.fori_loop(0, size, forward, r)


def scale_by_torch_lbfgs(memory: int, learning_rate: Any = 1.0) -> optax.GradientTransformationExtraArgs:
    """``torch.optim.LBFGS`` without a line search, one function evaluation per update.

    Mirrors torch's step exactly: s is the step taken (t·d), y the change of gradient; a pair is
    stored only when yᵀs > 1e-10 (torch skips the others, optax.scale_by_lbfgs keeps them, which
    lets a negative-curvature pair flip the direction on non-convex losses); the initial inverse
    Hessian is γ = yᵀs / yᵀy of the newest pair; the first step is ``min(1, 1/‖g‖₁)·lr``, later
    ones ``lr``. torch's per-``step()`` stopping tests (tolerance_change on the loss and step) are
    not applied: the loop runs the requested number of evaluations, as the tutorial's loop does.
    The output is the update to add (already negated and scaled).

    A pair is also stored only from a finite evaluation: pass the loss as the extra argument
    ``value`` (a NaN there, or a non-finite gradient, stores nothing), so a failed step leaves the
    memory as it was and the engine need not copy the memory to undo it.

    Args:
      memory: pairs kept (torch's ``history_size``; static: the memory is preallocated).
      learning_rate: torch's ``lr`` (a float or a traced scalar).

    Returns:
      The transform; its update takes the extra argument ``value``.
    """

    def init(params):
        stack = lambda x: jnp.zeros((memory,) + x.shape, x.dtype)  # noqa: E731
        zeros = lambda x: jnp.zeros_like(x)  # noqa: E731
        return TorchLBFGSState(
            count=jnp.zeros((), jnp.int32),
            prev_grad=jax.tree.map(zeros, params),
            prev_step=jax.tree.map(zeros, params),
            s_mem=jax.tree.map(stack, params),
            y_mem=jax.tree.map(stack, params),
            rho=jnp.zeros((memory,), jnp.float32),
            head=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
            h_diag=jnp.ones((), jnp.float32),
        )

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        grad = updates
        vdot = _vdot
        first = state.count == 0
        y = jax.tree.map(jnp.subtract, grad, state.prev_grad)
        s = state.prev_step
        ys = vdot(y, s)
        yy = vdot(y, y)
        finite = jnp.isfinite(ys) & jnp.isfinite(yy)
        if value is not None:
            finite = finite & jnp.isfinite(value)
        store = (~first) & (ys > 1e-10) & finite
        # Select the one slot, not the whole memory: where(store, m.at[h].set(v), m) reads and writes
        # all `memory` images every step; this is an in-place write of one.
        s_mem = jax.tree.map(lambda m, v: m.at[state.head].set(jnp.where(store, v, m[state.head])), state.s_mem, s)
        y_mem = jax.tree.map(lambda m, v: m.at[state.head].set(jnp.where(store, v, m[state.head])), state.y_mem, y)
        rho = jnp.where(store, state.rho.at[state.head].set(1.0 / jnp.where(store, ys, 1.0)), state.rho)
        head = jnp.where(store, (state.head + 1) % memory, state.head)
        size = jnp.where(store, jnp.minimum(state.size + 1, memory), state.size)
        h_diag = jnp.where(store, ys / jnp.where(store, yy, 1.0), state.h_diag)

        d = _two_loop(grad, s_mem, y_mem, rho, head, size, h_diag, memory)
        # first iteration: d = -g (no pairs) and t = min(1, 1/|g|_1) * lr
        l1 = sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grad))
        t = jnp.where(first, jnp.minimum(1.0, 1.0 / l1), 1.0) * learning_rate
        step = jax.tree.map(lambda x: t * x, d)
        new_state = TorchLBFGSState(
            count=state.count + 1, prev_grad=grad, prev_step=step, s_mem=s_mem, y_mem=y_mem,
            rho=rho, head=head, size=size, h_diag=h_diag,
        )
        return step, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def exponential_decay(learning_rate: Any, decay_rate: Any, decay_steps: Any) -> optax.Schedule:
    """``lr · rate^(count / steps)``: ``optax.exponential_decay`` (not staircased) with traced numbers
    (optax's checks ``transition_steps`` in Python, so it needs a concrete one)."""

    def schedule(count):
        return learning_rate * decay_rate ** (count / decay_steps)

    return schedule


def _sgd(program: Any, values: Values, lr: Any) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(optax.sgd(lr))


def _adam(program: Any, values: Values, lr: Any) -> optax.GradientTransformationExtraArgs:
    if program.adam_eps_mode == "sqrt_v":  # MATLAB's eps placement and float64 bias correction
        return optax.chain(
            scale_by_matlab_adam(values.adam_b1, values.adam_b2, values.adam_eps, values.adam_log_b1,
                                 values.adam_log_b2),
            optax.scale_by_learning_rate(lr))
    return optax.with_extra_args_support(optax.adam(lr, b1=values.adam_b1, b2=values.adam_b2, eps=values.adam_eps))


def _lbfgs(program: Any, values: Values, lr: Any) -> optax.GradientTransformationExtraArgs:
    if program.lbfgs_linesearch == "zoom":
        return optax.lbfgs(
            learning_rate=None,
            memory_size=program.lbfgs_memory,
            linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one"),
        )
    # No line search: torch.optim.LBFGS's update rule (see scale_by_torch_lbfgs for why not
    # optax.lbfgs(linesearch=None): it keeps negative-curvature pairs and scales the first step
    # differently). Its step size is the learning rate itself, never decayed (torch's).
    return scale_by_torch_lbfgs(program.lbfgs_memory, values.learning_rate)


class Optimizer(NamedTuple):
    """One optimiser of the table: ``make(program, values, lr)`` builds its optax transform (``lr``:
    the learning rate or its decay schedule); ``state_images(config)`` counts the image-sized
    float32 buffers its state holds beyond Adam's two moments (``memory.estimate_bytes_per_result``)."""

    make: Callable[[Any, Values, Any], optax.GradientTransformationExtraArgs]
    state_images: Callable[[Any], int]


# Optimisers by name (``StyleConfig.optimizer``): a new one is one entry here.
OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(_sgd, lambda config: 0),
    "adam": Optimizer(_adam, lambda config: 0),
    "lbfgs": Optimizer(_lbfgs, lambda config: 2 * config.lbfgs_memory),  # s and y pairs
}


def make_optimizer(program: Any, values: Values) -> optax.GradientTransformationExtraArgs:
    """The optax optimiser a program names (``OPTIMIZERS``), with the values' numbers.

    SGD (with optional exponential decay), Adam (optax's, or MATLAB's eps placement), L-BFGS
    (torch's rule without line search, or optax's with the zoom line search). Every update takes
    the extra argument ``value`` (the loss at the point the gradient was taken).

    Args:
      program: ``StyleConfig.program()``: the kind and structural sizes.
      values: ``StyleConfig.values()``: the numbers (concrete or traced).
    """
    lr: Any = values.learning_rate
    if program.lr_decay:
        lr = exponential_decay(values.learning_rate, values.lr_decay_rate, values.lr_decay_steps)
    return OPTIMIZERS[program.optimizer].make(program, values, lr)
