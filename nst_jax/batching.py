"""Many results in one compiled program: the engine's chunk vmapped over a batch, sharded over devices.

A batch may vary anything that is not the program: the style images, the content images, the seeds,
and the values (loss weights, learning rate, ...; a *sweep*). Each member's targets, values and loop
state are stacked along a leading axis; the params are shared. The i-th result equals the single
run with the i-th member's inputs (``engine.stylize``) to float32 rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import memory, sharding
from .config import PROGRAM, RUN, StyleConfig, fields_of, stack_values
from .engine import Progress, Result, final_iterates, init_state, initial_variable, run_chunk_batch, to_rgb
from .errors import ConfigError
from .network import direct_params, engine_params, net_spec, with_pixel_scale
from .targets import ImageLike, compute_targets, style_images


@dataclasses.dataclass
class ManyResult:
    """N runs done together. ``images``/``best_images``: N×H×W×3; ``losses``: N×iterations;
    ``evaluations``: per result; ``status``: per result ("done", "stopped", "nonfinite");
    ``configs``: each result's config (they differ in values only, e.g. in a sweep); ``loss_parts``:
    N×iterations×3, the weighted content, style and TV terms."""

    images: np.ndarray
    best_images: np.ndarray
    losses: np.ndarray
    evaluations: np.ndarray
    iterations: int
    status: list[str]
    config: StyleConfig
    seeds: list[int]
    configs: Optional[list[StyleConfig]] = None
    loss_parts: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.configs is None:
            self.configs = [self.config] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Result:
        assert self.configs is not None
        return Result(self.images[i], self.best_images[i], self.losses[i], int(self.evaluations[i]),
                      self.iterations, self.status[i], self.configs[i], self.seeds[i],
                      loss_parts=None if self.loss_parts is None else self.loss_parts[i])

    @property
    def outputs(self) -> np.ndarray:
        return self.best_images if self.config.select in ("best", "after_best") else self.images


# On a CPU backend, batches larger than this were measured slower per result than running the
# results one after another (BENCHMARKS.md, "Many styles": XLA's CPU batched matmuls, the Gram
# matrices under vmap, lose ~30 %); the cores are busy with one image's convolutions already.
CPU_MAX_BATCH = 4


def default_batch_size(height: int, width: int, config: StyleConfig, n: int) -> int:
    """How many results to optimise at once: what fits in 70% of the free memory, at most ``n``
    (and at most ``CPU_MAX_BATCH`` on a CPU backend)."""
    cap = min(n, CPU_MAX_BATCH) if jax.default_backend() == "cpu" else n
    free = memory.free_device_memory()
    if free is None:
        return cap
    return int(max(1, min(cap, (0.7 * free) // memory.estimate_bytes_per_result(height, width, config))))


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _shard_batch(tree: Any, n: int, mesh: jax.sharding.Mesh, image_hw: tuple[int, int]) -> tuple[Any, int]:
    """Pad the leading (batch) axis to a multiple of the mesh's batch size and shard it (members
    over ``"batch"``, image rows over ``"spatial"``: ``sharding.shard_batch``)."""
    k = mesh.shape[sharding.BATCH]
    pad = (-n) % k
    if pad:  # repeat the last member; its results are dropped
        tree = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), tree)
    return sharding.shard_batch(tree, mesh, image_hw), pad


def check_same_program(config: StyleConfig, configs: Sequence[StyleConfig]) -> None:
    """Refuse members that differ from ``config`` in anything one compiled program cannot vary."""
    static = fields_of(PROGRAM) + fields_of(RUN)
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


def stylize_many(
    content: ImageLike,
    styles: Sequence[Any],
    params: Any,
    config: StyleConfig,
    *,
    configs: Optional[Sequence[StyleConfig]] = None,
    seeds: Optional[Sequence[int]] = None,
    iterations: Optional[int] = None,
    callback: Optional[Callable[[Progress], Optional[bool]]] = None,
    convention: Any = None,
    chunk_size: Optional[int] = None,
    batch_size: Optional[int] = None,
    devices: Optional[Sequence[jax.Device]] = None,
    init_images: Optional[ImageLike] = None,
    spatial: int = 1,
    temporal: Optional[Sequence[tuple[ImageLike, ImageLike]]] = None,
) -> ManyResult:
    """N style transfers in one compiled program: the engine's chunk vmapped over targets, values and state.

    The i-th result equals ``stylize(content_i, styles[i], params, configs[i], seed=seeds[i])`` to
    float32 rounding. Each style's statistics are computed at the style's own size before batching
    (Gram matrices are C×C whatever the image size), so styles of any size or aspect ratio mix
    freely. ``configs`` makes a sweep: members may differ in any value (``config.sweep(...)`` builds
    them), never in the program. With several devices the batch is sharded over a one-axis mesh
    (padded to a multiple of the device count). Every optimiser works; with the L-BFGS zoom line
    search the batch waits, at each step, for its slowest member's line search.

    Args:
      content: one H×W×3 image (shared) or an N×H×W×3 batch (one per member).
      styles: N styles; each one array, a list (blended) or (array, weight) pairs.
      params, iterations, callback, convention, chunk_size: as ``stylize``.
      config: the shared program and run settings (and every member's config by default).
      configs: one config per member (values may differ; see ``check_same_program``).
      seeds: one seed per result (default 0 for all).
      batch_size: results optimised at once (default: what fits in memory, see
        ``default_batch_size``); groups run one after another.
      devices: the devices to shard over (default ``jax.local_devices()``).
      spatial: devices per image: a ``batch × spatial`` mesh, each group of ``spatial`` devices
        splitting its members' rows (``nst_jax.sharding``); 1 splits the batch alone.
      init_images: optional N×H×W×3 start images (RGB [0, 1]) instead of ``config.init``.
      temporal: video: per member (warped neighbour frame H×W×3, H×W weights), as ``stylize``'s
        ``temporal`` (weights of 0 switch the term off for a member and keep one program).

    Returns:
      ``ManyResult``.
    """
    p, spec = net_spec(params, convention)
    program = config.program()
    spec = with_pixel_scale(spec, program.pixel_scale)
    if config.lbfgs_round is not None:
        raise ConfigError("lbfgs_round (L-BFGS in rounds) runs single results; use stylize for it")
    content = jnp.asarray(content, jnp.float32)
    n = len(styles)
    if n == 0:
        raise ConfigError("stylize_many needs at least one style")
    configs = [config] * n if configs is None else list(configs)
    if len(configs) != n:
        raise ConfigError(f"{len(configs)} configs for {n} styles")
    check_same_program(config, configs)
    contents = [content[i] for i in range(content.shape[0])] if content.ndim == 4 else [content] * n
    if len(contents) != n:
        raise ConfigError(f"{len(contents)} content images for {n} styles")
    member_temporal: Optional[list[tuple[jax.Array, jax.Array]]] = None
    if temporal is not None:
        member_temporal = [(jnp.asarray(w, jnp.float32), jnp.asarray(c, jnp.float32)) for w, c in temporal]
        if len(member_temporal) != n:
            raise ConfigError(f"{len(member_temporal)} temporal targets for {n} members")
        for i, (warped, weights) in enumerate(member_temporal):
            if warped.shape != contents[i].shape or weights.shape != contents[i].shape[:2]:
                raise ConfigError(f"member {i}: the temporal target is {warped.shape} with weights {weights.shape}; "
                                  f"the content is {contents[i].shape}")
    seeds = [0] * n if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ConfigError(f"{len(seeds)} seeds for {n} styles")
    run_p = engine_params(p, program, spec, contents[0].shape)  # the loop's; targets use direct_p
    direct_p = direct_params(p, spec)
    total = config.iterations if iterations is None else int(iterations)
    h, w = contents[0].shape[:2]
    batch = batch_size or default_batch_size(h, w, config, n)
    devices = list(devices or jax.local_devices())
    length = int(chunk_size or program.chunk_size)  # the program's, whatever the iterations (see stylize)
    batch_rgb = jax.jit(jax.vmap(lambda v: jnp.clip(to_rgb(v, program, spec), 0.0, 1.0)))
    images, bests, all_losses, evals, status = [], [], [], [], []
    done_iterations = 0
    for first in range(0, n, batch):
        idx = list(range(first, min(n, first + batch)))
        targets = _stack([compute_targets(direct_p, spec, contents[i], styles[i], program,
                                          configs[i].style_blend_weights)._replace(
                                              temporal=None if member_temporal is None else member_temporal[i]) for i in idx])
        member_values = [configs[i].values() for i in idx]
        v0 = []
        for i, vals in zip(idx, member_values):
            imgs, _ = style_images(styles[i], configs[i].style_blend_weights)
            start_image = None if init_images is None else init_images[i]
            v0.append(initial_variable(contents[i], imgs[0], configs[i], spec, jax.random.PRNGKey(seeds[i]),
                                       start_image, vals))
        state = _stack([init_state(v, program, vals) for v, vals in zip(v0, member_values)])
        values = jax.tree.map(jnp.asarray, stack_values(member_values))
        if len(devices) > 1:
            mesh = sharding.batch_mesh(devices, spatial, h)
            (targets, values, state), _ = _shard_batch((targets, values, state), len(idx), mesh, (h, w))
            p_dev = sharding.replicate(run_p, mesh)
        else:
            p_dev = run_p
        history: list[np.ndarray] = []
        done, stopped = 0, False
        by_evals = program.iteration_unit == "evaluation"
        while done < total:
            k = min(length, total - done)
            state, chunk_losses = run_chunk_batch(p_dev, targets, values, state,
                                                  jnp.asarray(total if by_evals else k, jnp.int32),
                                                  program=program, spec=spec, length=length)
            # (evaluation budgets: skipped steps record NaN; each member's losses are its steps')
            history.append(np.asarray(chunk_losses)[: len(idx), :k] if not by_evals else np.asarray(chunk_losses)[: len(idx)])
            previous = done
            done = int(np.asarray(state.evals)[: len(idx)].min()) if by_evals else done + k
            failed = np.asarray(state.failed)[: len(idx)]
            if failed.all() or (by_evals and done == previous):
                break
            if callback is not None:
                so_far = np.concatenate(history, axis=1)[..., 0]
                members = len(idx)
                prog = Progress(done, total, int(np.asarray(state.evals)[:members].sum()),
                                float(np.nanmean(so_far[:, -1])), so_far, state,
                                lambda v: np.asarray(batch_rgb(v))[:members])
                if callback(prog):
                    stopped = True
                    break
        done_iterations = max(done_iterations, int(np.asarray(state.step)[: len(idx)].max()))
        final_v, best_v = final_iterates(state, program)
        images.append(np.asarray(batch_rgb(final_v))[: len(idx)])
        bests.append(np.asarray(batch_rgb(best_v))[: len(idx)])
        losses_b = np.concatenate(history, axis=1) if history else np.zeros((len(idx), 0, 4), np.float32)
        all_losses.append(losses_b)
        evals.append(np.asarray(state.evals)[: len(idx)])
        failed = np.asarray(state.failed)[: len(idx)]
        status += ["nonfinite" if f else ("stopped" if stopped else "done") for f in failed]
        if stopped:
            break
    width = max(l.shape[1] for l in all_losses)
    rows = np.concatenate([np.pad(l, ((0, 0), (0, width - l.shape[1]), (0, 0)), constant_values=np.nan)
                           for l in all_losses])
    got = len(status)
    return ManyResult(np.concatenate(images), np.concatenate(bests), rows[..., 0], np.concatenate(evals),
                      done_iterations, status, config, seeds[:got], configs[:got], loss_parts=rows[..., 1:])
