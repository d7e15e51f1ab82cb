"""One driver for one image or many: ``prepare`` the compiled chunk's arguments, then ``drive`` the chunks.

``prepare`` is the one place that turns (network, contents, styles, configs, masks, temporal
targets, seeds or a resumed state) into the arguments of ``loop.run_chunk``: the loop's params,
the stacked targets and values, and the stacked loop state. ``drive`` runs chunks over that batch
until every member is done: it handles chunking, L-BFGS rounds, the evaluation budget, callbacks
and stop requests, non-finite members, and sharding over a ``batch × spatial`` mesh. A single run
(``engine.stylize``) is a batch of one; ``batching.stylize_many`` runs groups of members. Both
resume from a ``LoopState`` (``prepare(resume=...)``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import sharding
from ..program.config import PROGRAM, RUN, StyleConfig, fields_of, stack_values
from ..errors import ConfigError
from .loop import LoopState, final_iterates, row_size, init_state, initial_variable, run_chunk, to_rgb
from ..network.backbones import NetSpec, direct_params, engine_params, net_spec, with_pixel_scale
from ..objective.terms import active_terms, part_names
from ..program.optimizers import make_optimizer
from ..objective.targets import ImageLike, Targets, compute_targets, style_images

Array = jax.Array


@dataclasses.dataclass
class Progress:
    """What a callback sees between chunks.

    For a batch (``member`` None): ``losses`` is N × iterations, ``loss`` and ``parts`` are the
    means over the members' latest rows, ``image()`` is N×H×W×3 and ``state`` the batched state.
    A single run's callback sees member 0 alone (``engine.stylize``): ``losses`` 1-D, ``image()``
    H×W×3, ``state`` unbatched (sliced when read). ``group``/``groups``: which group of a batch
    run this is (``stylize_many`` runs groups one after another).
    """

    iteration: int
    iterations: int
    evaluations: int
    loss: float
    losses: np.ndarray
    batch_state: LoopState
    to_rgb: Callable[[Array], np.ndarray]  # batched state images -> N×H×W×3 host RGB
    parts: dict[str, float] = dataclasses.field(default_factory=dict)
    group: int = 0
    groups: int = 1
    member: Optional[int] = None
    rows: Optional[np.ndarray] = None  # the loss rows so far: N × iterations × ``loop.row_size()``

    @property
    def state(self) -> LoopState:
        """The loop state (one member's when ``member`` is set)."""
        if self.member is None:
            return self.batch_state
        return jax.tree.map(lambda x: x[self.member], self.batch_state)

    def image(self) -> np.ndarray:
        """The current iterate as RGB [0, 1] (host copy)."""
        images = self.to_rgb(self.batch_state.v)
        return images if self.member is None else images[self.member]

    def best_image(self) -> np.ndarray:
        images = self.to_rgb(self.batch_state.best_v)
        return images if self.member is None else images[self.member]


class Prepared(NamedTuple):
    """The compiled chunk's arguments for a batch, and what drives it.

    ``params``: the loop's params (shared); ``targets``, ``values``, ``state``: stacked along a
    leading member axis; ``program``, ``spec``: static; ``terms``: the loss terms this run has.
    """

    params: Any
    targets: Targets
    values: Any
    state: LoopState
    program: Any
    spec: NetSpec
    terms: tuple[str, ...]


def check_same_program(config: StyleConfig, configs: Sequence[StyleConfig]) -> None:
    """Refuse members that differ from ``config`` in anything one compiled program cannot vary."""
    # Iterations may differ: each member's count is its own limit in the chunk (``n_active``); not
    # with L-BFGS rounds, whose schedule the whole batch shares.
    static = [f for f in fields_of(PROGRAM) + fields_of(RUN) if f.name != "iterations" or config.lbfgs_round]
    for i, member in enumerate(configs):
        for f in static:
            if getattr(member, f.name) != getattr(config, f.name):
                raise ConfigError(f"member {i} differs in {f.name} ({getattr(member, f.name)!r} vs "
                                  f"{getattr(config, f.name)!r}): one batch shares its program and run settings, "
                                  "only values may vary")
        if (member.ema_decay is None) != (config.ema_decay is None) or \
                (member.lr_decay_rate is None) != (config.lr_decay_rate is None):
            raise ConfigError(f"member {i} turns the EMA or the learning-rate decay on or off: that is program, "
                              "not a value")


def stack(trees: Sequence[Any]) -> Any:
    """Pytrees stacked along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member_temporal(temporal: Optional[tuple[ImageLike, ImageLike]], content: Array,
                     i: int) -> Optional[tuple[Array, Array]]:
    if temporal is None:
        return None
    warped, weights = (jnp.asarray(a, jnp.float32) for a in temporal)
    if warped.shape != content.shape or weights.shape != content.shape[:2]:
        raise ConfigError(f"member {i}: the temporal target is {warped.shape} with weights {weights.shape}; "
                          f"the content is {content.shape}")
    return warped, weights


class Targeted(NamedTuple):
    """A batch's inputs after the network has seen them: what ``prepare`` and ``make_loss_fn`` share.

    ``params``: the direct-convolution params (targets and ``objective`` use them); ``spec``,
    ``program``: static facts; ``contents``: float32 arrays; ``targets``, ``values``: one per member.
    """

    params: Any
    spec: NetSpec
    program: Any
    contents: list[Array]
    targets: list[Targets]
    values: list[Any]


def _pick(seq: Optional[Sequence[Any]], i: int) -> Any:
    return None if seq is None else seq[i]


def prepare_targets(
    network: Any,
    contents: Sequence[ImageLike],
    styles: Sequence[Any],
    configs: Sequence[StyleConfig],
    *,
    convention: Any = None,
    masks: Optional[Sequence[Optional[ImageLike]]] = None,
    style_masks: Optional[Sequence[Optional[Sequence[Optional[ImageLike]]]]] = None,
    temporal: Optional[Sequence[Optional[tuple[ImageLike, ImageLike]]]] = None,
) -> Targeted:
    """Each member's targets and values, computed once (the arguments as ``prepare`` takes them).

    Returns:
      ``Targeted``.
    """
    n = len(contents)
    if n == 0:
        raise ConfigError("at least one member is needed")
    if len(styles) != n or len(configs) != n:
        raise ConfigError(f"{len(styles)} styles and {len(configs)} configs for {n} content images")
    check_same_program(configs[0], configs)
    p, spec = net_spec(network, convention)
    program = configs[0].program()
    spec = with_pixel_scale(spec, program.pixel_scale)
    content_arrays = [jnp.asarray(c, jnp.float32) for c in contents]
    if any(c.shape != content_arrays[0].shape for c in content_arrays):
        raise ConfigError("the content images of a batch must have one size")
    for name, seq in {"masks": masks, "style_masks": style_masks, "temporal": temporal}.items():
        if seq is not None and len(seq) != n:
            raise ConfigError(f"{len(seq)} {name} for {n} members")
    if temporal is not None and len({t is None for t in temporal}) > 1:
        raise ConfigError("either every member has a temporal target or none")
    # Targets with the direct convolutions: computed once, so compiling Winograd for them (seconds)
    # would buy nothing; they agree with Winograd's to ~1e-6. The loop runs the engine params.
    direct_p = direct_params(p, spec)
    targets = [compute_targets(direct_p, spec, c, s, program, cfg.style_blend_weights, _pick(masks, i),
                               _pick(style_masks, i))._replace(temporal=_member_temporal(_pick(temporal, i), c, i))
               for i, (c, s, cfg) in enumerate(zip(content_arrays, styles, configs))]
    return Targeted(direct_p, spec, program, content_arrays, targets, [cfg.values() for cfg in configs])


def prepare(
    network: Any,
    contents: Sequence[ImageLike],
    styles: Sequence[Any],
    configs: Sequence[StyleConfig],
    *,
    seeds: Optional[Sequence[int]] = None,
    keys: Optional[Sequence[Array]] = None,
    convention: Any = None,
    init_images: Optional[Sequence[Optional[ImageLike]]] = None,
    masks: Optional[Sequence[Optional[ImageLike]]] = None,
    style_masks: Optional[Sequence[Optional[Sequence[Optional[ImageLike]]]]] = None,
    temporal: Optional[Sequence[Optional[tuple[ImageLike, ImageLike]]]] = None,
    resume: Optional[LoopState] = None,
) -> Prepared:
    """The compiled chunk's arguments for N members that share one program.

    Args:
      network: a ``weights.Network`` (or a params dict with ``convention=``).
      contents, styles, configs: one of each per member (H×W×3 RGB [0, 1] contents of one size;
        styles as ``stylize`` takes them; configs differing in values only).
      seeds, keys: per member, the start noise's seed (default 0) or ``jax.random`` key.
      convention: for a bare params dict: a ``vgg.Convention`` or a ``network.NetSpec``.
      init_images: per member, a start image instead of ``config.init`` (or None).
      masks, style_masks: per member, spatial control (``compute_targets``).
      temporal: per member, (warped previous frame, weights) or None; all or none.
      resume: a stacked ``LoopState`` to continue from instead of the start images.

    Returns:
      ``Prepared``.
    """
    n = len(contents)
    for name, seq in {"seeds": seeds, "keys": keys, "init_images": init_images}.items():
        if seq is not None and len(seq) != n:
            raise ConfigError(f"{len(seq)} {name} for {n} members")
    t = prepare_targets(network, contents, styles, configs, convention=convention, masks=masks,
                        style_masks=style_masks, temporal=temporal)
    if resume is None:
        keys = keys if keys is not None else [jax.random.PRNGKey(0 if seeds is None else int(s)) for s in
                                              (seeds or [0] * n)]
        firsts = [style_images(s, cfg.style_blend_weights)[0][0] for s, cfg in zip(styles, configs)]
        state = stack([init_state(initial_variable(c, s0, cfg, t.spec, k, _pick(init_images, i), vals), t.program,
                                  vals)
                       for i, (c, s0, cfg, k, vals) in enumerate(zip(t.contents, firsts, configs, keys, t.values))])
    elif tuple(np.shape(resume.v)) != (n, *t.contents[0].shape):
        raise ConfigError(f"the resumed state holds {tuple(np.shape(resume.v))}, this run "
                          f"{(n, *t.contents[0].shape)}")
    else:
        state = resume
    return Prepared(
        params=engine_params(net_spec(network, convention)[0], t.program, t.spec, t.contents[0].shape),
        targets=stack(t.targets),
        values=jax.tree.map(jnp.asarray, stack_values(t.values)),
        state=state,
        program=t.program,
        spec=t.spec,
        terms=active_terms(t.program, temporal is not None and temporal[0] is not None),
    )


@dataclasses.dataclass
class Run:
    """What ``drive`` returns: per member (leading axis N) the final and best images (RGB [0, 1],
    host), the loss rows (N × iterations × ``loop.row_size()``, NaN-padded), evaluations, steps and
    status ("done", "stopped", "nonfinite"); and the final stacked state."""

    images: np.ndarray
    best_images: np.ndarray
    rows: np.ndarray
    evaluations: np.ndarray
    steps: np.ndarray
    status: list[str]
    state: LoopState


@functools.partial(jax.jit, static_argnames=("program", "spec"))
def _batch_rgb(v: Array, *, program: Any, spec: NetSpec) -> Array:
    """A batch of loop variables as RGB [0, 1], clipped (one compilation per program and shape)."""
    return jax.vmap(lambda x: jnp.clip(to_rgb(x, program, spec), 0.0, 1.0))(v)


def _pad_rows(history: list[list[np.ndarray]]) -> np.ndarray:
    per = [np.concatenate(h) if h else np.zeros((0, row_size()), np.float32) for h in history]
    width = max(len(r) for r in per)
    return np.stack([np.pad(r, ((0, width - len(r)), (0, 0)), constant_values=np.nan) for r in per])


def _placed(prep: Prepared, n: int, devices: Optional[Sequence[jax.Device]], spatial: int):
    """(params, targets, values, state, mesh): on a ``batch × spatial`` mesh when there are several
    devices (the batch padded to a multiple of the mesh's batch size by repeating the last member;
    the copies' results are dropped), else as they are."""
    devices = list(devices or [])
    if len(devices) <= 1:
        return prep.params, prep.targets, prep.values, prep.state, None
    h, w = (int(s) for s in np.shape(prep.state.v)[1:3])
    mesh = sharding.batch_mesh(devices, spatial, h)
    pad = (-n) % mesh.shape[sharding.BATCH]
    tree = (prep.targets, prep.values, prep.state)
    if pad:
        tree = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), tree)
    targets, values, state = sharding.shard_batch(tree, mesh, (h, w))
    return sharding.replicate(prep.params, mesh), targets, values, state, mesh


def _progress(prep: Prepared, state: LoopState, history: list[list[np.ndarray]], done: np.ndarray, total: int,
              group: tuple[int, int]) -> Progress:  # total: the largest member's
    """A batch ``Progress`` between chunks: ``done`` iterations per member (the slowest live one's
    is the batch's), the means of the live members' latest rows."""
    n = len(history)
    failed = np.asarray(state.failed)[:n]
    so_far = _pad_rows(history)
    latest = np.stack([h[-1][-1] if len(h[-1]) else np.full((row_size(),), np.nan) for h in history])
    alive = latest[~failed] if (~failed).any() else latest
    with warnings.catch_warnings():  # a column of NaN (the zoom line search's parts) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(alive, axis=0)
    batch_rgb = functools.partial(_batch_rgb, program=prep.program, spec=prep.spec)
    return Progress(int(done[~failed].min() if (~failed).any() else done.max()), total,
                    int(np.asarray(state.evals)[:n].sum()), float(means[0]), so_far[..., 0], state,
                    lambda v: np.asarray(batch_rgb(v))[:n],
                    parts={name: float(means[1 + part_names().index(name)]) for name in prep.terms},
                    group=group[0], groups=group[1], rows=so_far)


def _fresh_optimizer(prep: Prepared, state: LoopState, values: Any, mesh: Any) -> LoopState:
    """The state with a fresh optimiser state for every member (an L-BFGS round's start)."""
    fresh = jax.vmap(lambda v, vals: make_optimizer(prep.program, vals).init(v))(state.v, values)
    fresh = jax.tree.map(jnp.copy, fresh)
    if mesh is not None:
        fresh = sharding.shard_batch(fresh, mesh, (int(np.shape(state.v)[1]), int(np.shape(state.v)[2])))
    return state._replace(opt_state=fresh)


@dataclasses.dataclass
class _Chunks:
    """The compiled chunk over one placed batch: its arguments, sizes and the loss rows so far."""

    prep: Prepared
    args: tuple  # (params, targets, values), placed
    n: int  # members
    m: int  # members with the mesh's padding
    length: int  # steps per compiled chunk
    by_evals: bool  # iterations count evaluations
    history: list[list[np.ndarray]]  # per member, its chunks' rows

    def counts(self, st: LoopState) -> np.ndarray:
        """Each member's iterations so far (steps, or evaluations)."""
        return np.asarray(st.evals if self.by_evals else st.step)[: self.n].astype(np.int64)

    def run_round(self, state: LoopState, limit: np.ndarray,
                  report: Optional[Callable[[LoopState], Optional[bool]]]) -> tuple[LoopState, bool]:
        """Chunks until every member reaches ``limit`` (or fails); (state, whether a callback stopped it)."""
        n, prep = self.n, self.prep
        while True:
            c, failed = self.counts(state), np.asarray(state.failed)[:n]
            want = (c < limit) & ~failed
            if not want.any():
                return state, False
            steps = np.where(want, limit if self.by_evals else np.minimum(self.length, limit - c), 0)
            n_active = np.concatenate([steps, np.repeat(steps[-1:], self.m - n)]).astype(np.int32)
            state, chunk_rows = run_chunk(*self.args, state, jnp.asarray(n_active), program=prep.program,
                                          spec=prep.spec, length=self.length)
            cl = np.asarray(chunk_rows)[:n]
            for i in range(n):
                self.history[i].append(cl[i][~np.isnan(cl[i][:, 0])] if self.by_evals else cl[i][: steps[i]])
            if np.asarray(state.failed)[:n].all() or (self.counts(state) == c).all():
                return state, False
            if report is not None and report(state):
                return state, True


def drive(
    prep: Prepared,
    total: Union[int, Sequence[int]],
    *,
    rounds: Optional[int] = None,
    chunk_size: Optional[int] = None,
    callback: Optional[Callable[[Progress], Optional[bool]]] = None,
    devices: Optional[Sequence[jax.Device]] = None,
    spatial: int = 1,
    head: Optional[np.ndarray] = None,
    group: tuple[int, int] = (0, 1),
) -> Run:
    """Run the prepared batch's chunks until each member has made ``total`` iterations.

    Args:
      prep: from ``prepare``.
      total: iterations per member, one number or one each (evaluations when
        ``program.iteration_unit == "evaluation"``), counted from the start (a resumed state
        continues to ``total``).
      rounds: L-BFGS in rounds of this many iterations, each with a fresh optimiser state (the
        blog's repeated ``fmin_l_bfgs_b(maxfun=rounds)``); None: one round.
      chunk_size: steps per compiled chunk (default the program's).
      callback: called between chunks with a batch ``Progress``; True stops every member.
      devices, spatial: shard the batch over these devices, ``spatial`` devices per member.
      head: N × k × ``loop.row_size()`` rows recorded before a resumed state (kept at the head).
      group: (this group, all groups), shown in ``Progress``.

    Returns:
      ``Run``.
    """
    program = prep.program
    n = int(np.shape(prep.state.step)[0])
    params, targets, values, state, mesh = _placed(prep, n, devices, spatial)
    chunks = _Chunks(prep, (params, targets, values), n, int(np.shape(state.step)[0]),
                     int(chunk_size or program.chunk_size),  # the program's: fewer iterations stop inside it
                     program.iteration_unit == "evaluation",
                     [[] if head is None else [np.asarray(head[i], np.float32)] for i in range(n)])
    # Rounds (the blog calls SciPy's fmin_l_bfgs_b(maxfun=rounds) repeatedly): each round is a fresh
    # optimiser state; with evaluations as the unit a round keeps stepping while it has made no
    # more than `rounds` evaluations (SciPy's rule, so a round makes rounds + 1 or a few more).
    totals = np.broadcast_to(np.asarray(total, np.int64), (n,)).copy()
    if rounds and len(set(totals.tolist())) > 1:
        raise ConfigError("L-BFGS rounds (lbfgs_round) need one iteration count for every member of a batch")
    total = int(totals.max())
    rounds_total = math.ceil(total / rounds) if rounds else 1
    round_index = min(int(chunks.counts(state).min()) // rounds, rounds_total) if rounds else 0
    round_start = chunks.counts(state)
    stopped = False
    while not stopped and round_index < rounds_total:
        limit = totals
        if rounds:
            limit = round_start + rounds + 1 if chunks.by_evals else np.minimum(round_start + rounds, total)

        def report(st: LoopState, index: int = round_index, start: np.ndarray = round_start) -> Optional[bool]:
            assert callback is not None
            c = chunks.counts(st)
            done = index * rounds + np.minimum(rounds, c - start) if rounds else c
            return callback(_progress(prep, st, chunks.history, done, total, group))

        state, stopped = chunks.run_round(state, limit, None if callback is None else report)
        round_index += 1
        if rounds and not stopped and round_index < rounds_total:
            state = _fresh_optimizer(prep, state, values, mesh)
            round_start = chunks.counts(state)
    status = ["stopped" if stopped else "done"] * n
    history, m, spec = chunks.history, chunks.m, prep.spec
    failed = np.asarray(state.failed)[:n]
    status = ["nonfinite" if f else s for f, s in zip(failed, status)]
    final_v, best_v = final_iterates(state, program)
    return Run(
        images=np.asarray(_batch_rgb(final_v, program=program, spec=spec))[:n].astype(np.float32),
        best_images=np.asarray(_batch_rgb(best_v, program=program, spec=spec))[:n].astype(np.float32),
        rows=_pad_rows(history),
        evaluations=np.asarray(state.evals)[:n].astype(np.int64),
        steps=np.asarray(state.step)[:n].astype(np.int64),
        status=status,
        state=state if m == n else jax.tree.map(lambda x: x[:n], state),
    )
