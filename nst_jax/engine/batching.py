"""Many results in one compiled program: the engine's chunk vmapped over a batch, sharded over devices.

A batch may vary anything that is not the program: the style images, the content images, the seeds,
and the values (loss weights, learning rate, ...; a *sweep*). Each member's targets, values and loop
state are stacked along a leading axis (``driver.prepare``); the params are shared. Groups of
members run one after another through the same driver as a single run (``driver.drive``). The i-th
result equals the single run with the i-th member's inputs (``engine.stylize``) to float32
rounding: the batched program sums the same terms in another order (``vmap`` of XLA's reductions
and batched matrix products), so losses agree to ~1e-6 relative and L-BFGS, whose curvature pairs
amplify the difference, to ~1e-4.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import memory
from ..program.config import StyleConfig
from .driver import Progress, check_same_program, drive, prepare
from .single import Result
from ..errors import ConfigError
from .loop import LoopState
from ..objective.targets import ImageLike

__all__ = ["CPU_MAX_BATCH", "ManyProgress", "ManyResult", "ManyResume", "check_same_program",
           "default_batch_size", "stylize_many"]


@dataclasses.dataclass
class ManyResult:
    """N runs done together. ``images``/``best_images``: N×H×W×3; ``losses``: N×iterations;
    ``evaluations``: per result; ``status``: per result ("done", "stopped", "nonfinite");
    ``configs``: each result's config (they differ in values only, e.g. in a sweep); ``loss_parts``:
    N×iterations×len(``objective.part_names()``), the weighted terms; ``terms``: the terms this run
    has. Members shorter than others (stopped, non-finite) are NaN-padded. ``state``: the last
    group's final stacked ``LoopState`` (its members are the last ones; ``self[i].state`` slices it)."""

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
    terms: tuple[str, ...] = ("content", "style", "tv")
    steps: Optional[np.ndarray] = None  # iterations made, per result
    state: Optional[LoopState] = None

    def __post_init__(self) -> None:
        if self.configs is None:
            self.configs = [self.config] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def member_state(self, i: int) -> Optional[LoopState]:
        """Member ``i``'s final ``LoopState`` when it ran in the last group (else None)."""
        if self.state is None:
            return None
        j = i - (len(self) - int(np.shape(self.state.v)[0]))
        return None if j < 0 else jax.tree.map(lambda x: x[j], self.state)

    def __getitem__(self, i: int) -> Result:
        assert self.configs is not None
        return Result(self.images[i], self.best_images[i], self.losses[i], int(self.evaluations[i]),
                      self.iterations if self.steps is None else int(self.steps[i]), self.status[i],
                      self.configs[i], self.seeds[i], state=self.member_state(i),
                      loss_parts=None if self.loss_parts is None else self.loss_parts[i], terms=self.terms)

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


class ManyResume(NamedTuple):
    """Where an interrupted ``stylize_many`` stands: ``done``, the results of its finished groups
    (None: none finished); ``state``, the stacked ``LoopState`` of the next group; ``rows``, that
    group's loss rows so far (members × iterations × ``loop.row_size()``)."""

    done: Optional[ManyResult]
    state: LoopState
    rows: np.ndarray


@dataclasses.dataclass
class ManyProgress(Progress):
    """A batch ``Progress`` plus the results of the groups already finished (``done``): with
    ``batch_state`` and ``rows``, what a checkpoint of the whole batch needs (``ManyResume``)."""

    done: Optional[ManyResult] = None


def _concat(parts: Sequence[ManyResult], config: StyleConfig) -> ManyResult:
    width = max(p.losses.shape[1] for p in parts)

    def pad(a: np.ndarray) -> np.ndarray:
        widths = [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
        return np.pad(a, widths, constant_values=np.nan)

    return ManyResult(
        images=np.concatenate([p.images for p in parts]), best_images=np.concatenate([p.best_images for p in parts]),
        losses=np.concatenate([pad(p.losses) for p in parts]), evaluations=np.concatenate([p.evaluations for p in parts]),
        iterations=max(p.iterations for p in parts), status=[s for p in parts for s in p.status], config=config,
        seeds=[s for p in parts for s in p.seeds], configs=[c for p in parts for c in (p.configs or [])],
        loss_parts=np.concatenate([pad(p.loss_parts) for p in parts if p.loss_parts is not None]),
        terms=parts[0].terms, steps=np.concatenate([p.steps for p in parts if p.steps is not None]),
        state=parts[-1].state,
    )


def _members(content: ImageLike, n: int, config: StyleConfig, configs: Optional[Sequence[StyleConfig]],
             seeds: Optional[Sequence[int]], temporal: Optional[Sequence[Any]]) -> tuple[list, list, list[int]]:
    """Each member's content, config and seed, checked against the member count."""
    if n == 0:
        raise ConfigError("stylize_many needs at least one style")
    content = jnp.asarray(content, jnp.float32)
    configs = [config] * n if configs is None else list(configs)
    if len(configs) != n:
        raise ConfigError(f"{len(configs)} configs for {n} styles")
    check_same_program(config, configs)
    contents = [content[i] for i in range(content.shape[0])] if content.ndim == 4 else [content] * n
    if len(contents) != n:
        raise ConfigError(f"{len(contents)} content images for {n} styles")
    if temporal is not None and len(temporal) != n:
        raise ConfigError(f"{len(temporal)} temporal targets for {n} members")
    seeds = [0] * n if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ConfigError(f"{len(seeds)} seeds for {n} styles")
    return contents, configs, seeds


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
    resume: Optional[ManyResume] = None,
    masks: Optional[Sequence[Optional[ImageLike]]] = None,
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
      params, callback, convention, chunk_size: as ``stylize``.
      iterations: for every member (default: each member's config's, which may differ).
      config: the shared program and run settings (and every member's config by default).
      configs: one config per member (values may differ; see ``check_same_program``).
      seeds: one seed per result (default 0 for all).
      batch_size: results optimised at once (default: what fits in memory, see
        ``default_batch_size``); groups run one after another.
      devices: the devices to shard over (default ``jax.local_devices()``).
      spatial: devices per image: a ``batch × spatial`` mesh, each group of ``spatial`` devices
        splitting its members' rows (``nst_jax.engine.sharding``); 1 splits the batch alone.
      init_images: optional N×H×W×3 start images (RGB [0, 1]) instead of ``config.init``.
      temporal: video: per member (warped neighbour frame H×W×3, H×W weights), as ``stylize``'s
        ``temporal`` (weights of 0 switch the term off for a member and keep one program).
      resume: continue an interrupted run (``ManyResume``: the finished groups' results, the next
        group's state and rows; a callback's ``ManyProgress`` holds both). The result equals the
        uninterrupted run's.
      masks: per member, K×H×W region masks (spatial control, as ``stylize``'s) or None.

    Returns:
      ``ManyResult``.
    """
    n = len(styles)
    contents, configs, seeds = _members(content, n, config, configs, seeds, temporal)
    # each member's own count (a config's iterations may differ in a batch), or one for all
    totals = [c.iterations for c in configs] if iterations is None else [int(iterations)] * n
    h, w = contents[0].shape[:2]
    batch = batch_size or default_batch_size(h, w, config, n)
    devices = list(devices or jax.local_devices())
    starts = list(range(0, n, batch))
    finished: list[ManyResult] = [] if resume is None or resume.done is None else [resume.done]
    first = 0 if resume is None or resume.done is None else len(resume.done)
    if first not in starts and first != n:
        raise ConfigError(f"the checkpoint finished {first} members; groups of {batch} start at {starts}: "
                          "resume with the same --batch-size")
    if masks is not None and len(masks) != n:
        raise ConfigError(f"{len(masks)} masks for {n} members")
    for g, lo in enumerate(starts):
        if lo < first:
            continue
        for earlier in finished:  # only the last group's state is kept (device memory)
            earlier.state = None
        idx = list(range(lo, min(n, lo + batch)))
        state = None if resume is None or lo != first else resume.state
        prep = prepare(params, [contents[i] for i in idx], [styles[i] for i in idx], [configs[i] for i in idx],
                       seeds=[seeds[i] for i in idx], convention=convention,
                       init_images=None if init_images is None else [init_images[i] for i in idx],
                       masks=None if masks is None else [masks[i] for i in idx],
                       temporal=None if temporal is None else [temporal[i] for i in idx], resume=state)
        done_so_far = _concat(finished, config) if finished else None

        def cb(p: Progress, done_so_far: Optional[ManyResult] = done_so_far) -> Optional[bool]:
            assert callback is not None
            base = {f.name: getattr(p, f.name) for f in dataclasses.fields(Progress)}
            return callback(ManyProgress(**base, done=done_so_far))

        run = drive(prep, [totals[i] for i in idx], rounds=config.lbfgs_round, chunk_size=chunk_size,
                    callback=None if callback is None else cb, devices=devices, spatial=spatial,
                    head=None if state is None or resume is None else resume.rows, group=(g, len(starts)))
        finished.append(ManyResult(run.images, run.best_images, run.rows[..., 0], run.evaluations,
                                   int(run.steps.max()), run.status, config, [seeds[i] for i in idx],
                                   [configs[i] for i in idx], loss_parts=run.rows[..., 1:], terms=prep.terms,
                                   steps=run.steps, state=jax.tree.map(lambda x: x[:len(idx)], run.state)))
        if "stopped" in run.status:
            break
    return _concat(finished, config)
