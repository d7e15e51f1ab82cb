"""The compiled loop: one optimiser step on one image, and chunks of steps over a batch of images.

``run_chunk(params, targets, values, state, n_active, program=..., spec=..., length=...)`` is one
compiled ``lax.while_loop`` of up to ``length`` steps for every member of a batch (the leading axis
of targets, values, state and ``n_active``; the params are shared). The core is written for one
image (``step``, ``chunk_one``) and ``vmap``ped at the call site; a batch of one is squeezed inside
the compiled function instead, so a single run compiles the one-image program. Params, targets,
values and the loop state are arguments (never captured constants); only the program, the
network's static facts and the chunk length are static. So a run compiles once per (batch size,
image shape, program), whatever its weights, learning rate or iteration count. The driver
(``nst_jax.engine.driver``) runs the chunks.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from ..program.config import StyleConfig, Values
from ..errors import ConfigError
from ..network import vgg
from ..network.backbones import NetSpec, as_spec
from ..objective import terms as objective
from ..objective.terms import network_objective
from ..program.optimizers import make_optimizer
from ..objective.targets import ImageLike, Targets

Array = jax.Array


def row_size() -> int:
    """The length of a loss row: the total, then each term of ``objective.TERMS``."""
    return 1 + len(objective.TERMS)


class LoopState(NamedTuple):
    """Everything the loop carries between steps (a pytree; checkpoints save it whole)."""

    v: Array  # the image variable (network input or RGB, per program.variable_space)
    opt_state: Any
    best_v: Array
    best_loss: Array
    ema_v: Array
    step: Array  # iterations done
    evals: Array  # function evaluations done
    failed: Array  # a non-finite loss was met; v holds the last good iterate


def to_network(v: Array, program: Any, spec: NetSpec) -> Array:
    """The loop variable as the network's input."""
    return v if program.variable_space == "network" else spec.convention.to_network(v)


def to_rgb(v: Array, program: Any, spec: NetSpec) -> Array:
    """The loop variable as RGB [0, 1] (unclipped)."""
    return spec.convention.from_network(v) if program.variable_space == "network" else v


def from_rgb(rgb: Array, program: Any, spec: NetSpec) -> Array:
    """An RGB [0, 1] image as the loop variable."""
    return spec.convention.to_network(rgb) if program.variable_space == "network" else rgb


def clamp(v: Array, program: Any, spec: NetSpec) -> Array:
    """The variable with its RGB clipped to [0, 1]."""
    if program.variable_space == "rgb":
        return jnp.clip(v, 0.0, 1.0)
    return spec.convention.to_network(jnp.clip(spec.convention.from_network(v), 0.0, 1.0))


def initial_variable(
    content: Array,
    style0: Optional[Array],
    config: StyleConfig,
    spec: Union[NetSpec, vgg.Convention],
    key: Array,
    init_image: Optional[ImageLike] = None,
    values: Optional[Values] = None,
) -> Array:
    """The start image in the variable space.

    "content"; "style" (the first style image, at the content's size); "noise": uniform white
    noise in RGB [0, 1]; "randn": ``init_scale · N(0, 1)`` in network space (neural-style);
    "blend": ``ratio · U{−range..range} + (1 − ratio) · content`` in network space (MATLAB).
    ``init_image`` (RGB [0, 1], the content's size) overrides ``config.init``.

    Args:
      content, style0: the content and the first style image (RGB [0, 1]).
      config: the start image's kind and noise range (run settings), and the variable space.
      spec: the network's static facts (or its ``vgg.Convention``).
      key: a ``jax.random`` key for the noise.
      init_image: a start image instead of ``config.init``.
      values: the numbers (``init_noise_ratio``, ``init_scale``; default ``config.values()``).
    """
    program = config.program()
    values = config.values() if values is None else values
    spec = as_spec(spec)
    if init_image is not None:
        image = jnp.asarray(init_image, jnp.float32)
        if image.shape != content.shape:
            raise ConfigError(f"init image is {image.shape[:2]}, the content is {content.shape[:2]}: sizes must match")
        return from_rgb(image, program, spec)
    if config.init == "content":
        return from_rgb(content, program, spec)
    if config.init == "style":
        if style0 is None or style0.shape != content.shape:
            raise ConfigError("init 'style' needs a style image of the content's size (style_size='content')")
        return from_rgb(style0, program, spec)
    if config.init == "noise":
        return from_rgb(jax.random.uniform(key, content.shape, jnp.float32), program, spec)
    xn: Any
    if config.init == "randn":
        xn = values.init_scale * jax.random.normal(key, content.shape, jnp.float32)
    else:  # blend
        r = config.init_noise_range
        noise = jax.random.randint(key, content.shape, -r, r + 1).astype(jnp.float32)
        ratio = values.init_noise_ratio
        xn = ratio * noise + (1.0 - ratio) * spec.convention.to_network(content)
    return xn if program.variable_space == "network" else spec.convention.from_network(xn)


def init_state(v0: Array, program: Any, values: Values) -> LoopState:
    """A fresh loop state at the start image ``v0``."""
    state = LoopState(
        v=v0,
        opt_state=make_optimizer(program, values).init(v0),
        best_v=v0,
        best_loss=jnp.asarray(jnp.inf, jnp.float32),
        ema_v=v0,
        step=jnp.zeros((), jnp.int32),
        evals=jnp.zeros((), jnp.int32),
        failed=jnp.zeros((), bool),
    )
    # Distinct buffers for every leaf: the state is donated to the compiled chunk leaf by leaf, and
    # optax's L-BFGS state shares one zeros array between two fields.
    return jax.tree.map(jnp.copy, state)


def keep_if_ok(ok: Array, new: Any, old: Any) -> Any:
    """``where(ok, new, old)`` over an optimiser state, except the fields a transform guards itself.

    A state class may name fields its update leaves unchanged after a non-finite evaluation
    (``optimizers.TorchLBFGSState.self_guarded``: the L-BFGS memory). Those are taken from the
    update as they are: a ``where`` over the (memory, H, W, 3) stacks read and wrote every stored
    pair each step (2 × memory images, ~0.6 GB a step at 512²) and made XLA copy them.
    """
    guarded = getattr(type(old), "self_guarded", ())
    if guarded:
        kept = {f: jax.tree.map(lambda a, b: jnp.where(ok, a, b), getattr(new, f), getattr(old, f))
                for f in old._fields if f not in guarded}
        return new._replace(**kept)
    if isinstance(old, tuple) and not hasattr(old, "_fields"):  # optax.chain's tuple of states
        return tuple(keep_if_ok(ok, n, o) for n, o in zip(new, old))
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def step(params: Any, targets: Targets, values: Values, state: LoopState, program: Any,
         spec: NetSpec) -> tuple[LoopState, Array]:
    """One optimiser step on one image: evaluate at the (clamped) iterate, update.

    Returns:
      (state, row): ``row`` is [total, *objective.part_names()] at the iterate before the update,
      all NaN when the step failed; with the zoom line search the parts are NaN (its value comes
      from the line search's state, without them).
    """
    opt = make_optimizer(program, values)

    def loss_and_parts(v):
        total, parts = network_objective(params, targets, to_network(v, program, spec), values, program, spec)
        zero = jnp.zeros((), jnp.float32)  # a term this run does not have
        return total, jnp.stack([parts.get(name, zero) for name in objective.part_names()])

    def loss(v):  # the line search's value_fn: the total alone
        return loss_and_parts(v)[0]

    zoom = program.optimizer == "lbfgs" and program.lbfgs_linesearch == "zoom"
    # Clamping before each evaluation (the tutorial's closure) is a projection a line search
    # does not know about: with the zoom line search the image is clamped only at the end.
    v = clamp(state.v, program, spec) if (program.clamp and not zoom) else state.v
    if zoom:
        value, grad = optax.value_and_grad_from_state(loss)(v, state=state.opt_state)
        updates, opt_state = opt.update(grad, state.opt_state, v, value=value, grad=grad, value_fn=loss)
        # The first step of a (fresh) state evaluates at v; later ones reuse the value and gradient
        # the line search stored at its accepted point.
        fresh = ~jnp.isfinite(optax.tree.get(state.opt_state, "value"))
        evals = fresh.astype(jnp.int32) + optax.tree.get(opt_state, "num_linesearch_steps")
        parts = jnp.full((row_size() - 1,), jnp.nan, jnp.float32)
    else:
        (value, parts), grad = jax.value_and_grad(loss_and_parts, has_aux=True)(v)
        # After a failure the step is undone anyway; a NaN value tells a self-guarding transform
        # (torch's L-BFGS memory) to store nothing.
        updates, opt_state = opt.update(grad, state.opt_state, v, value=jnp.where(state.failed, jnp.nan, value))
        evals = 1
    new_v = v + updates
    ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(new_v)) & ~state.failed
    better = ok & (value < state.best_loss)
    # best: the iterate whose loss this is; after_best: the iterate after its update (MATLAB quirk).
    candidate = new_v if program.select == "after_best" else v
    ema_v = state.ema_v
    if program.ema:
        ema_v = values.ema_decay * state.ema_v + (1.0 - values.ema_decay) * new_v
    new = LoopState(
        v=new_v,
        opt_state=opt_state,
        best_v=jnp.where(better, candidate, state.best_v),
        best_loss=jnp.where(better, value, state.best_loss),
        ema_v=ema_v,
        step=state.step + 1,
        evals=state.evals + evals,
        failed=state.failed,
    )
    # A non-finite loss stops the run: keep the last good iterate and flag the failure.
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new._replace(opt_state=None), state._replace(opt_state=None))
    kept = kept._replace(opt_state=keep_if_ok(ok, new.opt_state, state.opt_state), failed=state.failed | ~ok)
    return kept, jnp.where(ok, jnp.concatenate([value[None], parts]), jnp.nan)


def chunk_one(params: Any, targets: Targets, values: Values, state: LoopState, n_active: Array, *, program: Any,
              spec: NetSpec, length: int) -> tuple[LoopState, Array]:
    """Up to ``length`` steps on one image; steps at index >= n_active are not run (same program).

    With ``program.iteration_unit == "evaluation"``, ``n_active`` is instead the budget of function
    evaluations: a step runs while fewer have been made (SciPy's ``maxfun``).

    Returns (state, losses): ``losses[i]`` is step i's row [total, *objective.part_names()] (``step``), NaN
    for the steps not run. A
    ``while_loop`` whose condition stops at ``n_active`` (not a ``scan`` with a ``lax.cond`` per
    step): XLA copied the whole state in and out of the ``cond`` every step, the L-BFGS memory
    included (2 × memory images: time, and twice that memory held).
    """

    def active(st, i):
        return st.evals < n_active if program.iteration_unit == "evaluation" else i < n_active

    def cond(carry):
        st, i, _ = carry
        return (i < length) & active(st, i)

    def body(carry):
        st, i, losses = carry
        st, value = step(params, targets, values, st, program, spec)
        return st, i + 1, losses.at[i].set(value)

    init = (state, jnp.zeros((), jnp.int32), jnp.full((length, row_size()), jnp.nan, jnp.float32))
    state, _, losses = jax.lax.while_loop(cond, body, init)
    return state, losses


def chunk(params: Any, targets: Targets, values: Values, state: LoopState, n_active: Array, *, program: Any,
          spec: NetSpec, length: int) -> tuple[LoopState, Array]:
    """``chunk_one`` over a batch: targets, values, state and ``n_active`` carry a leading member axis.

    A batch of one is squeezed (the one-image program, no ``vmap``); larger batches are ``vmap``ped.

    Returns:
      (state, losses): losses N × length × ``row_size()``.
    """
    one = functools.partial(chunk_one, program=program, spec=spec, length=length)
    if n_active.shape[0] == 1:
        first = jax.tree.map(lambda x: x[0], (targets, values, state, n_active))
        new, rows = one(params, *first)
        return jax.tree.map(lambda x: x[None], (new, rows))
    return jax.vmap(one, in_axes=(None, 0, 0, 0, 0))(params, targets, values, state, n_active)


# One compiled chunk per (shapes, program, network spec, chunk length). Params, targets, values and
# state are arguments; the state's buffers are donated so the image is updated in place on accelerators.
run_chunk = jax.jit(chunk, static_argnames=("program", "spec", "length"), donate_argnums=(3,))


def final_iterates(state: LoopState, program: Any) -> tuple[Array, Array]:
    """(the output iterate: last or EMA, tutorial-clamped; the best iterate, or the output where
    no finite loss was met). Works on a batch of states too."""
    final_v = state.ema_v if program.ema else state.v
    if program.clamp and program.variable_space == "rgb":
        final_v = jnp.clip(final_v, 0.0, 1.0)  # the tutorial's "last correction"
    finite = jnp.isfinite(state.best_loss).reshape(state.best_loss.shape + (1,) * 3)
    return final_v, jnp.where(finite, state.best_v, final_v)
