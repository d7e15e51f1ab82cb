"""Coarse-to-fine and colours around the engine: one scale loop for a batch, a single run a batch of one.

Everything here is plain pre- and post-processing around
:func:`~nst_jax.engine.batching.stylize_many`; the engine itself is unchanged. Colours are prepared
and restored by :mod:`nst_jax.control.colors`.

Coarse-to-fine (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer";
crowsonkb/style-transfer-pytorch): the image is optimised at a sequence of sizes growing by √2, each
scale started from the previous scale's result upsampled. The sizes themselves (the schedule, and
the style image's shape at each scale) are planned in :mod:`nst_jax.control.scales`.
``stylize_many_controlled`` is the one loop over the scales; ``stylize_controlled`` runs it for a
batch of one, as ``engine.single.stylize`` runs the driver.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from .. import image
from ..engine import batching
from ..engine.batching import ManyResult, ManyResume
from ..engine.driver import Progress
from ..engine.loop import LoopState, row_size
from ..engine.single import Result
from ..errors import ConfigError
from ..image import color
from ..network import vgg
from ..objective.targets import ImageLike
from ..program.config import StyleConfig
from .colors import Restore, as_image, grey, map_styles, prepare_colors
from .scales import Scales, run_shapes, scale_iterations, style_working_shape

__all__ = ["ControlledManyResult", "ControlledResult", "ScaleProgress", "stylize_controlled", "stylize_many_controlled"]


# --------------------------------------------------------------------------------------------
# results and progress


@dataclasses.dataclass(kw_only=True)
class ScaleProgress(Progress):
    """A ``engine.Progress`` (of the current scale: ``iteration``, ``iterations``, ``losses`` and
    ``image()`` are that scale's, in the engine's colour domain: grey for "lum") plus where the
    run stands in the schedule. ``restored_image()`` is the preview with the colours restored."""

    scale_index: int
    num_scales: int
    scale_shape: tuple[int, int]
    iterations_before: int  # iterations done by the earlier scales
    total_iterations: int  # planned, all scales
    restore: Callable[[np.ndarray], np.ndarray]
    # (losses, evaluations) of every finished scale: with ``state``, what a checkpoint needs
    finished: tuple[tuple[np.ndarray, int], ...] = ()
    # a batch: the results of the groups already finished (``batching.ManyProgress.done``)
    done: Optional[ManyResult] = None

    @property
    def overall_iteration(self) -> int:
        return self.iterations_before + self.iteration

    def restored_image(self) -> np.ndarray:
        """The current iterate with the colour post-processing applied (H×W×3, or N×H×W×3 in a batch)."""
        return self.restore(self.image())


def _wrap_callback(callback, k: int, n: int, shape, before: int, total: int, restore, finished=()):
    if callback is None:
        return None

    def cb(p: Progress):
        base = {f.name: getattr(p, f.name) for f in dataclasses.fields(Progress)}
        return callback(ScaleProgress(**base, scale_index=k, num_scales=n, scale_shape=tuple(shape),
                                      iterations_before=before, total_iterations=total, restore=restore,
                                      finished=tuple(finished), done=getattr(p, "done", None)))

    return cb


@dataclasses.dataclass
class ControlledResult(Result):
    """A controlled run; duck-types ``engine.Result`` (``image``, ``best_image``, ``output``,
    ``losses``, ``final_loss``, ``status``...).

    ``image``/``best_image``: the final scale's images with the colours restored, at the content's
    shape (if the run stopped at a coarser scale, that scale's images upsampled). ``losses``: every
    scale's losses, concatenated. ``evaluations``/``iterations``: summed over the scales.
    ``result``: the last scale's engine ``Result`` as it came (engine colour domain, not restored;
    the engine never reads ``preserve_colors``, a picture setting, so every colour mode shares one
    compiled chunk per shape).
    ``scales``: the planned (H, W) of every scale; ``iterations_per_scale``: the planned counts;
    ``losses_per_scale``: one array per scale that ran (fewer than ``scales`` if stopped early).
    """

    result: Optional[Result] = None
    scales: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    iterations_per_scale: list[int] = dataclasses.field(default_factory=list)
    losses_per_scale: list[np.ndarray] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ControlledManyResult(ManyResult):
    """N controlled runs done together (see ``ControlledResult``); arrays have a leading N axis.

    ``losses``: N × (all scales' iterations); ``losses_per_scale``: one N × k array per scale run;
    ``result``: the last scale's engine ``ManyResult``. A member whose loss went non-finite keeps
    status "nonfinite" and goes on from its last good image.
    """

    result: Optional[ManyResult] = None
    scales: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    iterations_per_scale: list[int] = dataclasses.field(default_factory=list)
    losses_per_scale: list[np.ndarray] = dataclasses.field(default_factory=list)

    def __getitem__(self, i: int) -> ControlledResult:
        return ControlledResult(
            image=self.images[i], best_image=self.best_images[i], losses=self.losses[i],
            evaluations=int(self.evaluations[i]), iterations=self.iterations, status=self.status[i],
            config=self.configs[i] if self.configs else self.config, seed=self.seeds[i],
            loss_parts=None if self.loss_parts is None else self.loss_parts[i], terms=self.terms,
            state=self.member_state(i), result=None if self.result is None else self.result[i],
            scales=self.scales, iterations_per_scale=self.iterations_per_scale,
            losses_per_scale=[l[i] for l in self.losses_per_scale],
        )


# --------------------------------------------------------------------------------------------
# runs


def _styles_at(style: Any, shape: tuple[int, int], config: StyleConfig, resample: str) -> Any:
    return map_styles(style, lambda s: image.resize(s, style_working_shape(s.shape[:2], shape, config), resample))


def _masks_at(masks: Optional[ImageLike], shape: tuple[int, int]) -> Optional[np.ndarray]:
    """Region masks resized to a scale's shape (bilinear: soft edges between regions)."""
    if masks is None:
        return None
    return np.stack([image.resize(np.asarray(m, np.float32), shape, "bilinear") for m in masks])


def _first_scale(shapes: list, resume: Optional[ManyResume], resume_scales: Sequence[Any]) -> int:
    """The scale a resumed run continues (the number of finished scales), checked against this run."""
    first = len(resume_scales)
    if first and resume is None:
        raise ConfigError("resume_scales needs the state of the scale after them (resume=)")
    if first >= len(shapes):
        raise ConfigError(f"the checkpoint finished {first} scales; this run has {len(shapes)}")
    held = None if resume is None else tuple(np.shape(resume.state.v))[1:3]
    if held is not None and held != tuple(shapes[first]):
        raise ConfigError(f"the checkpointed image is {held}, scale {first + 1} of this run "
                          f"is {shapes[first]}: resume with the same --size and --scales")
    return first


def _many_members(content: np.ndarray, n: int, seeds: Optional[Sequence[int]]) -> tuple[list[np.ndarray], list[int]]:
    """Each member's content (one shared or one each, all of one size) and seed."""
    if n == 0:
        raise ConfigError("stylize_many_controlled needs at least one style")
    contents = ([as_image("content image", content)] * n if content.ndim == 3
                else [as_image("content image", c) for c in content])
    if len(contents) != n:
        raise ConfigError(f"{len(contents)} content images for {n} styles")
    if any(c.shape[:2] != contents[0].shape[:2] for c in contents):
        raise ConfigError("the content images of a batch must have one size")
    out_seeds = [0] * n if seeds is None else [int(s) for s in seeds]
    if len(out_seeds) != n:
        raise ConfigError(f"{len(out_seeds)} seeds for {n} styles")
    return contents, out_seeds


@dataclasses.dataclass
class _Members:
    """The members still in the run, in the engine's colour domain: contents, styles, how to restore
    their colours, and where the next scale starts them (None: ``config.init``)."""

    contents: list[np.ndarray]
    styles: list[Any]
    restores: list[Restore]
    starts: Optional[np.ndarray]

    def keep(self, m: int) -> None:
        self.contents, self.styles, self.restores = self.contents[:m], self.styles[:m], self.restores[:m]

    def restore_all(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.restores[i](im) for i, im in enumerate(batch)])


def _members_in(contents: list[np.ndarray], styles: Sequence[Any], config: StyleConfig, color_match_method: str,
                resample: str, init_images: Optional[Sequence[ImageLike]]) -> _Members:
    prepared = [prepare_colors(c, s, config, color_match_method=color_match_method, resample=resample)
                for c, s in zip(contents, styles)]
    starts = None
    if init_images is not None:
        starts = np.stack([as_image("init image", im) for im in init_images])
        if len(starts) != len(contents):
            raise ConfigError(f"{len(starts)} init images for {len(contents)} members")
        if config.preserve_colors == "lum":
            starts = np.stack([grey(color.luminance(im)) for im in starts])
    return _Members([p[0] for p in prepared], [p[1] for p in prepared], [p[2] for p in prepared], starts)


@dataclasses.dataclass
class _Ledger:
    """What the scales run so far add up to, per member still in the run."""

    losses: list[np.ndarray]  # per scale, members × its iterations
    parts: list[np.ndarray]  # per scale, members × its iterations × the terms
    scale_evaluations: list[np.ndarray]  # per scale, per member
    evaluations: np.ndarray
    iterations: int
    nonfinite: list[bool]

    @classmethod
    def resumed(cls, n: int, resume_scales: Sequence[tuple[Any, Any]], config: StyleConfig) -> "_Ledger":
        """The finished scales of an interrupted run (their loss parts are unknown: NaN)."""
        losses = [np.asarray(l, np.float32).reshape(n, -1) for l, _ in resume_scales]
        per_scale = [np.asarray(e, np.int64).reshape(n) for _, e in resume_scales]
        evaluations = sum(per_scale, np.zeros((n,), np.int64))
        # a finished scale's iterations: its steps (one loss each), or its evaluations when those count
        iterations = int(evaluations.max()) if config.iteration_unit == "evaluation" and losses else \
            sum(l.shape[1] for l in losses)
        parts = [np.full(l.shape + (row_size() - 1,), np.nan, np.float32) for l in losses]
        return cls(losses, parts, per_scale, evaluations, iterations, [False] * n)

    def finished(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """(losses, evaluations) of each scale so far, as ``resume_scales`` takes them."""
        return tuple(zip(self.losses, self.scale_evaluations))

    def add(self, many: ManyResult) -> None:
        got = len(many)
        self.losses = [l[:got] for l in self.losses] + [many.losses]
        self.parts = [q[:got] for q in self.parts] + [many.loss_parts if many.loss_parts is not None
                                                      else np.full(many.losses.shape + (row_size() - 1,), np.nan)]
        self.scale_evaluations = [e[:got] for e in self.scale_evaluations] + [np.asarray(many.evaluations, np.int64)]
        self.evaluations = self.evaluations[:got] + np.asarray(many.evaluations, np.int64)
        self.iterations += many.iterations
        self.nonfinite = [f or s == "nonfinite" for f, s in zip(self.nonfinite[:got], many.status)]


def _run_scale(k: int, shapes: list, counts: list, members: _Members, ledger: _Ledger, params: Any,
               config: StyleConfig, seeds: list[int], shared: bool, resample: str, callback: Any,
               masks: Optional[ImageLike], resume: Optional[ManyResume], **engine: Any) -> ManyResult:
    """Scale ``k`` of the schedule: every member still in the run, resized from its full-size
    inputs (never from the previous scale's copies) and started from its previous result upsampled."""
    shape, m = shapes[k], len(members.contents)
    # Gatys et al. 2017 use two scales; crowsonkb (and this) any number, √2 apart. Both start a
    # scale from the previous result upsampled.
    contents = image.resize(members.contents[0], shape, resample) if shared else \
        np.stack([image.resize(c, shape, resample) for c in members.contents])
    starts = None if members.starts is None else np.stack([image.resize(im, shape, resample)
                                                           for im in members.starts[:m]])
    scaled = _masks_at(masks, shape)
    configs = engine.pop("configs")
    return batching.stylize_many(
        contents, [_styles_at(s, shape, config, resample) for s in members.styles], params, config,
        configs=None if configs is None else list(configs)[:m], seeds=seeds[:m],
        # one scale of the config's own count: each member's (a batch's configs may differ in it)
        iterations=None if len(shapes) == 1 and counts[k] == config.iterations else counts[k],
        callback=_wrap_callback(callback, k, len(shapes), shape, ledger.iterations, sum(counts),
                                members.restore_all, ledger.finished()),
        init_images=starts, masks=None if scaled is None else [scaled] * m, resume=resume, **engine)


def stylize_many_controlled(
    content: ImageLike,
    styles: Sequence[Any],
    params: Any,
    config: StyleConfig,
    *,
    scales: Scales = None,
    iterations_per_scale: Union[None, int, Sequence[int]] = None,
    seeds: Optional[Sequence[int]] = None,
    callback: Optional[Callable[[ScaleProgress], Optional[bool]]] = None,
    convention: Optional[vgg.Convention] = None,
    resample: Optional[str] = None,
    color_match_method: str = "chol",
    chunk_size: Optional[int] = None,
    batch_size: Optional[int] = None,
    devices: Optional[Sequence[jax.Device]] = None,
    configs: Optional[Sequence[StyleConfig]] = None,
    spatial: int = 1,
    resume: Optional[ManyResume] = None,
    init_images: Optional[Sequence[ImageLike]] = None,
    masks: Optional[ImageLike] = None,
    resume_scales: Sequence[tuple[Any, Any]] = (),
) -> ControlledManyResult:
    """``batching.stylize_many`` with colour preservation and coarse-to-fine: the one scale loop.

    Every scale runs ``stylize_many`` on the colour-prepared contents resized to that scale's shape,
    with each style resized by :func:`style_working_shape` for that shape (so under
    ``style_size="content"`` a style is always resized to the content's shape, as the CLI does).
    The first scale starts from ``config.init`` (or ``init_images``); each later one starts every
    member from its previous ``output`` (the config's choice: last, EMA or best iterate) upsampled
    with ``resample`` (Gatys et al. 2017 and crowsonkb start the fine scale from the upsampled
    coarse result too). The seeds are the same at every scale (only the first uses noise). After
    the last scale the colours are restored (``prepare_colors``). A member whose loss went
    non-finite keeps status "nonfinite" and goes on from its last good image; the schedule stops
    when a callback stops it or no member is still going (a batch of one stops at its non-finite
    scale, as a single run does).

    Args:
      content: one H×W×3 image (shared) or an N×H×W×3 batch, at the FINAL working size.
      styles: N style specs (one array, a list, or (array, weight) pairs each), at their final
        working size (or larger); resized at every scale from these.
      params: a ``weights.Network`` (or a params dict with ``convention=``).
      config: a ``StyleConfig`` (any preset).
      scales: None: one scale, the content's size; "auto": ``scale_schedule(long side)`` (from
        256 px up in √2 steps); or a list of long sides, ascending, the last one the content's.
      iterations_per_scale: see :func:`scale_iterations` (default: ``config.iterations`` then
        half as many on each later scale).
      seeds, batch_size, devices, configs, spatial, chunk_size, convention: as
        ``batching.stylize_many`` (``configs``: one per member, differing in values only: a sweep;
        ``spatial``: devices per member, a ``batch × spatial`` mesh).
      callback: called between chunks with a :class:`ScaleProgress` (``restored_image()`` is
        N×H×W×3); returning True stops the whole schedule.
      resample: the filter for every resize here (coarse inputs, upsampling between scales);
        default ``config.resample``.
      color_match_method: "chol", "pca" or "sym" for ``preserve_colors="match"``.
      init_images: N start images for the first scale instead of ``config.init`` (any size;
        resized; made grey under "lum").
      masks: K×H×W region masks at the content's size, shared by the members (spatial control;
        resized to each scale).
      resume: continue an interrupted run (``batching.ManyResume``; ``ScaleProgress`` carries its
        ``batch_state``, ``done`` and ``rows``) at the scale after ``resume_scales``.
      resume_scales: (losses N×k, evaluations N) of each scale the interrupted run finished
        (``ScaleProgress.finished``). Those scales are not run again, and the result equals the
        uninterrupted run's (their loss parts are NaN). Needs every member in one group
        (``batch_size`` >= N): later groups would start from the previous scale's results.

    Returns:
      :class:`ControlledManyResult`.
    """
    content = np.asarray(content, np.float32)
    resample = config.resample if resample is None else resample
    contents, seeds = _many_members(content, len(styles), seeds)
    final = contents[0].shape[:2]
    shapes = run_shapes(final, scales)
    counts = scale_iterations(config, len(shapes), iterations_per_scale)
    if len(shapes) > 1 and configs is not None and len({c.iterations for c in configs}) > 1:
        raise ConfigError("members with different iteration counts share one scale schedule only with one scale")
    first = _first_scale(shapes, resume, resume_scales)
    if first and (batch_size is None or batch_size < len(styles)):
        # the groups after the resumed one would start from the previous scale's results, which a
        # ManyResume does not hold
        raise ConfigError("resuming a later scale needs every member in one group (batch_size >= members)")
    members = _members_in(contents, styles, config, color_match_method, resample, init_images)
    ledger = _Ledger.resumed(len(styles), resume_scales, config)
    many: Optional[ManyResult] = None
    for k in range(first, len(shapes)):
        m = len(members.contents)
        many = _run_scale(k, shapes, counts, members, ledger, params, config, seeds, content.ndim == 3, resample,
                          callback, masks, resume if k == first else None, configs=configs, convention=convention,
                          chunk_size=chunk_size, batch_size=batch_size, devices=devices, spatial=spatial)
        ledger.add(many)
        members.keep(len(many))  # stopped in a later group: only the first members ran
        members.starts = many.outputs
        if "stopped" in many.status or len(many) < m or "done" not in many.status:
            break
    assert many is not None
    return _controlled_many(many, ledger, members, final, resample, config, seeds, shapes, counts)


def _controlled_many(many: ManyResult, ledger: _Ledger, members: _Members, final: tuple[int, int], resample: str,
                     config: StyleConfig, seeds: list[int], shapes: list, counts: list) -> ControlledManyResult:
    """The last scale's results at the content's shape with the colours restored, and the ledger's totals."""
    got = len(many)
    return ControlledManyResult(
        images=np.stack([members.restores[i](image.resize(many.images[i], final, resample)) for i in range(got)]),
        best_images=np.stack([members.restores[i](image.resize(many.best_images[i], final, resample))
                              for i in range(got)]),
        losses=np.concatenate(ledger.losses, axis=1),
        evaluations=ledger.evaluations,
        iterations=ledger.iterations,
        status=["nonfinite" if ledger.nonfinite[i] else many.status[i] for i in range(got)],
        config=config,
        seeds=seeds[:got],
        loss_parts=np.concatenate(ledger.parts, axis=1),
        configs=list(many.configs or [])[:got],
        terms=many.terms,
        steps=None,
        state=many.state,
        result=many,
        scales=shapes,
        iterations_per_scale=counts,
        losses_per_scale=ledger.losses,
    )


def stylize_controlled(
    content: ImageLike,
    style: Any,
    params: Any,
    config: StyleConfig,
    *,
    scales: Scales = None,
    iterations_per_scale: Union[None, int, Sequence[int]] = None,
    seed: int = 0,
    callback: Optional[Callable[[ScaleProgress], Optional[bool]]] = None,
    convention: Optional[vgg.Convention] = None,
    resample: Optional[str] = None,
    color_match_method: str = "chol",
    init_image: Optional[ImageLike] = None,
    chunk_size: Optional[int] = None,
    resume: Optional[LoopState] = None,
    resume_losses: Optional[np.ndarray] = None,
    masks: Optional[ImageLike] = None,
    resume_scales: Sequence[tuple[np.ndarray, int]] = (),
    devices: Optional[Sequence[jax.Device]] = None,
) -> ControlledResult:
    """``engine.stylize`` with colour preservation and coarse-to-fine: ``stylize_many_controlled``
    for a batch of one (its callback sees member 0, as ``engine.stylize``'s does).

    Args:
      content: H×W×3 RGB in [0, 1] at the FINAL working size (downsized here for coarse scales).
      style: one array, a sequence (blended), or (array, weight) pairs.
      params, config, scales, iterations_per_scale, convention, resample, color_match_method,
        chunk_size, masks: as ``stylize_many_controlled``.
      seed: the start-noise seed.
      callback: called between chunks with a :class:`ScaleProgress` of member 0; True stops.
      init_image: a start image for the first scale instead of ``config.init``.
      resume, resume_losses: continue from a checkpointed ``LoopState`` and the losses its scale
        recorded so far (``engine.stylize``'s arguments).
      resume_scales: (losses, evaluations) of each scale the interrupted run finished
        (``ScaleProgress.finished``); ``resume`` belongs to the next scale.
      devices: split the image's rows over these devices at every scale (``engine.stylize``).

    Returns:
      :class:`ControlledResult`.
    """
    content = as_image("content image", content)
    # One image over several devices: its rows split over them (a batch × spatial mesh of 1 × N).
    spread = list(devices) if devices is not None and len(devices) > 1 else jax.local_devices()[:1]
    many_resume = None
    if resume is not None:
        head = np.asarray([] if resume_losses is None else resume_losses, np.float32).reshape(-1, 1)
        rows = np.concatenate([head, np.full((len(head), row_size() - 1), np.nan, np.float32)], axis=1)[None]
        many_resume = ManyResume(None, jax.tree.map(lambda x: jnp.asarray(x)[None], resume), rows)

    def one(p: ScaleProgress) -> Optional[bool]:
        assert callback is not None
        return callback(dataclasses.replace(
            p, losses=p.losses[0], member=0, restore=lambda im: p.restore(np.asarray(im)[None])[0],
            finished=tuple((np.asarray(l)[0], int(np.asarray(e)[0])) for l, e in p.finished)))

    many = stylize_many_controlled(
        content, [style], params, config, scales=scales, iterations_per_scale=iterations_per_scale, seeds=[seed],
        callback=None if callback is None else one, convention=convention, resample=resample,
        color_match_method=color_match_method, chunk_size=chunk_size, batch_size=1, devices=spread,
        spatial=len(spread), resume=many_resume, init_images=None if init_image is None else [init_image],
        masks=masks, resume_scales=[(np.asarray(l)[None], np.asarray([e])) for l, e in resume_scales])
    return many[0]
