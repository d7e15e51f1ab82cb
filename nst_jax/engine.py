"""The engine: an optax loop over one image, compiled in chunks, driven from Python between them.

``run_chunk(params, targets, values, state, n_active, program=..., spec=..., length=...)`` is one
compiled ``lax.while_loop`` of up to ``length`` steps. Params, targets, values and the loop state
are its arguments (never captured constants); only the program, the network's static facts and the
chunk length are static. So a run compiles once per (image shape, program), whatever its weights,
learning rate or iteration count, and the persistent cache serves the next process. ``stylize``
runs the chunks, records losses, calls the progress callback and restarts L-BFGS rounds.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .config import StyleConfig, Values
from .errors import ConfigError
from . import sharding, vgg
from .network import NetSpec, as_spec, direct_params, engine_params, net_spec, with_pixel_scale
from .objective import network_objective
from .optimizers import make_optimizer
from .targets import ImageLike, Targets, compute_targets, style_images

Array = jax.Array


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
      (state, row): ``row`` is [total, content, style, tv] at the iterate before the update, all
      NaN when the step failed; with the zoom line search the parts are NaN (its value comes from
      the line search's state, without them).
    """
    opt = make_optimizer(program, values)

    def loss_and_parts(v):
        total, parts = network_objective(params, targets, to_network(v, program, spec), values, program, spec)
        return total, jnp.stack([parts["content"], parts["style"], parts["tv"]])

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
        parts = jnp.full((3,), jnp.nan, jnp.float32)
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


def chunk(params: Any, targets: Targets, values: Values, state: LoopState, n_active: Array, *, program: Any,
          spec: NetSpec, length: int) -> tuple[LoopState, Array]:
    """Up to ``length`` steps in one loop; steps at index >= n_active are not run (same program).

    With ``program.iteration_unit == "evaluation"``, ``n_active`` is instead the budget of function
    evaluations: a step runs while fewer have been made (SciPy's ``maxfun``).

    Returns (state, losses): ``losses[i]`` is step i's [total, content, style, tv] (``step``), NaN
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

    init = (state, jnp.zeros((), jnp.int32), jnp.full((length, 4), jnp.nan, jnp.float32))
    state, _, losses = jax.lax.while_loop(cond, body, init)
    return state, losses


# One compiled chunk per (shapes, program, network spec, chunk length). Params, targets, values and
# state are arguments; the state's buffers are donated so the image is updated in place on accelerators.
run_chunk = jax.jit(chunk, static_argnames=("program", "spec", "length"), donate_argnums=(3,))


def _chunk_batch(params, targets, values, state, n_active, *, program, spec, length):
    one = functools.partial(chunk, program=program, spec=spec, length=length)
    return jax.vmap(one, in_axes=(None, 0, 0, 0, None))(params, targets, values, state, n_active)


# The same, vmapped over a leading batch axis of targets, values and state (``batching.stylize_many``).
run_chunk_batch = jax.jit(_chunk_batch, static_argnames=("program", "spec", "length"), donate_argnums=(3,))


@dataclasses.dataclass
class Progress:
    """What a callback sees between chunks."""

    iteration: int
    iterations: int
    evaluations: int
    loss: float
    losses: np.ndarray
    state: LoopState
    to_rgb: Callable[[Array], np.ndarray]

    def image(self) -> np.ndarray:
        """The current iterate as RGB [0, 1] (host copy)."""
        return self.to_rgb(self.state.v)

    def best_image(self) -> np.ndarray:
        return self.to_rgb(self.state.best_v)


@dataclasses.dataclass
class Result:
    """A finished (or stopped) run.

    ``image``: the last iterate (EMA of iterates when ``ema_decay`` is set); ``best_image``: the
    lowest-loss iterate (MATLAB's choice, with its quirk under ``select="after_best"``);
    ``output``: the one the config selects. ``losses``: total loss per iteration, evaluated at the
    iterate before its update; ``loss_parts``: iterations × 3, its weighted content, style and TV
    terms (NaN where unknown: resumed heads, the zoom line search). ``status``: "done", "stopped"
    (callback asked) or "nonfinite".
    """

    image: np.ndarray
    best_image: np.ndarray
    losses: np.ndarray
    evaluations: int
    iterations: int
    status: str
    config: StyleConfig
    seed: int
    state: Optional[LoopState] = None
    loss_parts: Optional[np.ndarray] = None

    @property
    def output(self) -> np.ndarray:
        return self.best_image if self.config.select in ("best", "after_best") else self.image

    @property
    def final_loss(self) -> float:
        finite = self.losses[np.isfinite(self.losses)]
        return float(finite[-1]) if finite.size else float("nan")


def _rgb_host(v: Array, program: Any, spec: NetSpec) -> np.ndarray:
    return np.clip(np.asarray(to_rgb(v, program, spec)), 0.0, 1.0).astype(np.float32)


def final_iterates(state: LoopState, program: Any) -> tuple[Array, Array]:
    """(the output iterate: last or EMA, tutorial-clamped; the best iterate, or the output where
    no finite loss was met). Works on a batch of states too."""
    final_v = state.ema_v if program.ema else state.v
    if program.clamp and program.variable_space == "rgb":
        final_v = jnp.clip(final_v, 0.0, 1.0)  # the tutorial's "last correction"
    finite = jnp.isfinite(state.best_loss).reshape(state.best_loss.shape + (1,) * 3)
    return final_v, jnp.where(finite, state.best_v, final_v)


def stylize(
    content: ImageLike,
    style: Any,
    params: Any,
    config: StyleConfig,
    *,
    iterations: Optional[int] = None,
    seed: int = 0,
    key: Optional[Array] = None,
    callback: Optional[Callable[[Progress], Optional[bool]]] = None,
    init_image: Optional[ImageLike] = None,
    convention: Any = None,
    resume: Optional[LoopState] = None,
    resume_losses: Optional[np.ndarray] = None,
    chunk_size: Optional[int] = None,
    masks: Optional[ImageLike] = None,
    style_masks: Optional[Sequence[Optional[ImageLike]]] = None,
    devices: Optional[Sequence[jax.Device]] = None,
    temporal: Optional[tuple[ImageLike, ImageLike]] = None,
) -> Result:
    """Optimise an image so its VGG features match the content's and its style statistics the style's.

    Args:
      content: H×W×3 RGB in [0, 1] at the working size (the library never resizes).
      style: one array, a sequence (blended), or (array, weight) pairs.
      params: a ``weights.Network`` (or a params dict with ``convention=``).
      config: a ``StyleConfig`` (see ``nst_jax.preset``). Its program keys the compilation; its
        values, iterations and seed never do.
      iterations: overrides ``config.iterations`` (for L-BFGS without line search: evaluations).
      seed: seeds the start-image noise (``jax.random.PRNGKey(seed)``).
      key: a ``jax.random`` key instead of ``seed``.
      callback: called between chunks with a ``Progress``; returning True stops the run.
      init_image: a start image (RGB [0, 1]) instead of ``config.init``.
      convention: for a bare params dict: a ``vgg.Convention`` or a ``network.NetSpec``.
      resume: a ``LoopState`` to continue from (see ``Result.state`` and ``checkpoint.py``); the
        run continues to ``iterations`` in total, exactly as an uninterrupted run would.
      resume_losses: the losses recorded before ``resume`` (kept at the head of ``Result.losses``).
      chunk_size: steps per compiled chunk (default ``config.chunk_size``).
      masks, style_masks: spatial control: K×H×W region weights over the content, style k
        painting region k (guided Gram matrices, Gatys et al. 2017; see ``compute_targets``).
      devices: split this one image's rows over these devices (``nst_jax.sharding``): the image,
        its activations and the optimiser state are sharded, so N devices hold about 1/N of them
        each. Default (or one device): the first device holds everything.
      temporal: video (``nst_jax.video``): (the previous stylised frame warped to this one, RGB
        [0, 1] H×W×3; H×W weights, e.g. ``temporal.consistency_mask``): adds
        ``temporal_weight · temporal.temporal_loss`` to the objective.

    Returns:
      ``Result``.
    """
    p, spec = net_spec(params, convention)
    program = config.program()
    values = config.values()
    spec = with_pixel_scale(spec, program.pixel_scale)
    total = config.iterations if iterations is None else int(iterations)
    if total < 0:
        raise ConfigError(f"iterations must be >= 0; got {total}")
    content = jnp.asarray(content, jnp.float32)
    # Targets with the direct convolutions: computed once, so compiling Winograd for them (seconds)
    # would buy nothing; they agree with Winograd's to ~1e-6. The loop runs run_p.
    targets = compute_targets(direct_params(p, spec), spec, content, style, program, config.style_blend_weights,
                              masks, style_masks)
    if temporal is not None:
        warped, weights = (jnp.asarray(a, jnp.float32) for a in temporal)
        if warped.shape != content.shape or weights.shape != content.shape[:2]:
            raise ConfigError(f"the temporal target is {warped.shape} with weights {weights.shape}; "
                              f"the content is {content.shape}")
        targets = targets._replace(temporal=(warped, weights))
    run_p = engine_params(p, program, spec, content.shape)
    if resume is None:
        images, _ = style_images(style, config.style_blend_weights)
        key = jax.random.PRNGKey(seed) if key is None else key
        state = init_state(initial_variable(content, images[0], config, spec, key, init_image, values), program, values)
    else:
        state = resume
    if devices is not None and len(devices) > 1:
        # One image over several devices: the state split by rows, everything else replicated; the
        # compiled chunk follows its inputs' shardings (XLA places the convolution halos).
        mesh = sharding.spatial_mesh(devices, int(content.shape[0]))
        state = sharding.shard_rows(state, mesh, (int(content.shape[0]), int(content.shape[1])))
        run_p, targets, values = sharding.replicate((run_p, targets, values), mesh)
    # The chunk length is the program's, whatever the iteration count: a shorter run stops early
    # inside the same compiled loop (n_active), so 10 and 100 iterations share one compilation.
    length = int(chunk_size or program.chunk_size)
    history: list[np.ndarray] = []  # rows [total, content, style, tv]
    if resume_losses is not None:
        head = np.asarray(resume_losses, np.float32).reshape(-1, 1)
        history.append(np.concatenate([head, np.full((len(head), 3), np.nan, np.float32)], axis=1))
    status = "done"
    host_rgb = functools.partial(_rgb_host, program=program, spec=spec)
    by_evals = program.iteration_unit == "evaluation"
    rounds = config.lbfgs_round

    def count(st: LoopState) -> int:
        return int(st.evals) if by_evals else int(st.step)

    # Rounds (the blog calls SciPy's fmin_l_bfgs_b(maxfun=rounds) repeatedly): each round is a fresh
    # optimiser state; with evaluations as the unit a round keeps stepping while it has made no
    # more than `rounds` evaluations (SciPy's rule, so a round makes rounds + 1 or a few more).
    rounds_total = math.ceil(total / rounds) if rounds else 1
    round_index = min(count(state) // rounds, rounds_total) if rounds else 0
    round_start = count(state)
    stop = False
    while not stop and round_index < rounds_total:
        if rounds:
            limit = round_start + rounds + 1 if by_evals else min(round_start + rounds, total)
        else:
            limit = total
        while count(state) < limit:
            c = count(state)
            n = length if by_evals else min(length, limit - c)
            state, chunk_losses = run_chunk(run_p, targets, values, state,
                                            jnp.asarray(limit if by_evals else n, jnp.int32),
                                            program=program, spec=spec, length=length)
            cl = np.asarray(chunk_losses)
            history.append(cl[~np.isnan(cl[:, 0])] if by_evals else cl[:n])
            if bool(state.failed):
                status, stop = "nonfinite", True
                break
            if count(state) == c:  # pragma: no cover - nothing left to do within the budget
                break
            done = round_index * rounds + min(rounds, count(state) - round_start) if rounds else count(state)
            if callback is not None:
                losses_so_far = np.concatenate(history)[:, 0]
                prog = Progress(done, total, int(state.evals), float(losses_so_far[-1]), losses_so_far, state, host_rgb)
                if callback(prog):
                    status, stop = "stopped", True
                    break
        round_index += 1
        if rounds and not stop and round_index < rounds_total:
            state = state._replace(opt_state=jax.tree.map(jnp.copy, make_optimizer(program, values).init(state.v)))
            round_start = count(state)
    rows = np.concatenate(history) if history else np.zeros((0, 4), np.float32)
    final_v, best_v = final_iterates(state, program)
    return Result(
        image=host_rgb(final_v),
        best_image=host_rgb(best_v),
        losses=rows[:, 0],
        evaluations=int(state.evals),
        iterations=int(state.step),
        status=status,
        config=config,
        seed=seed,
        state=state,
        loss_parts=rows[:, 1:],
    )
