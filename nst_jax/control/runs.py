"""Perceptual controls around the engine: colour preservation, coarse-to-fine scales, style scale.

Everything here is plain pre- and post-processing around :func:`nst_jax.engine.single.stylize` and
:func:`~nst_jax.engine.batching.stylize_many`; the engine itself is unchanged.

Colour (``config.preserve_colors``; Gatys et al. 2016, "Preserving Color in Neural Artistic Style
Transfer"), all in NTSC YIQ (the matrix in :mod:`nst_jax.image`; Y is Rec. 601 luma
``0.299 R + 0.587 G + 0.114 B``):

* ``"lum"``: luminance-only transfer. The engine optimises on grey images (Y replicated to three
  channels; each style's Y matched to the content's mean and standard deviation), then the
  result's Y is recombined with the content's I and Q.
* ``"match"``: each style's RGB mean and covariance are matched to the content's (linear colour
  transfer: Cholesky, PCA or symmetric square root), then clipped to [0, 1].
* ``"swap"``: no pre-processing; the result keeps its Y and takes the content's I and Q
  (neural-style's ``-original_colors 1``).
* ``"none"``: nothing.

Coarse-to-fine (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer";
crowsonkb/style-transfer-pytorch): the image is optimised at a sequence of sizes growing by √2, each
scale started from the previous scale's result upsampled. The sizes themselves (the schedule, and
the style image's shape at each scale) are planned in :mod:`nst_jax.control.scales`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Union

import jax
import numpy as np

from ..engine import batching, single as engine
from ..image import color
from .. import image
from ..network import vgg
from .scales import Scales, run_shapes, scale_iterations, style_working_shape
from ..program.config import StyleConfig
from ..errors import ConfigError
from ..engine.batching import ManyResult, ManyResume
from ..engine.driver import Progress
from ..engine.single import Result
from ..engine.loop import LoopState, row_size
from ..objective.targets import ImageLike

__all__ = [
    "COLOR_MATCH_METHODS",
    "ControlledManyResult",
    "ControlledResult",
    "ScaleProgress",
    "prepare_colors",
    "stylize_controlled",
    "stylize_many_controlled",
]

COLOR_MATCH_METHODS: tuple[str, ...] = tuple(color.COLOR_METHODS)
Restore = Callable[[ImageLike], np.ndarray]


# --------------------------------------------------------------------------------------------
# helpers


def _as_image(name: str, x: ImageLike) -> np.ndarray:
    a = np.asarray(x, np.float32)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ConfigError(f"{name} must be an H×W×3 RGB array; got shape {tuple(a.shape)}")
    return a


def _is_single(style: Any) -> bool:
    return isinstance(style, (np.ndarray, jax.Array)) and np.ndim(style) == 3


def _is_pairs(items: list) -> bool:
    return bool(items) and all(isinstance(it, tuple) and len(it) == 2 for it in items)


def _map_styles(style: Any, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    """Apply ``fn`` to every image of a style spec (one array, a list, or (array, weight) pairs),
    keeping the spec's structure (the same rules as the engine's)."""
    if _is_single(style):
        return fn(_as_image("style image", style))
    items = list(style)
    if _is_pairs(items):
        return [(fn(_as_image("style image", im)), w) for im, w in items]
    return [fn(_as_image("style image", im)) for im in items]


def _grey(y: ImageLike) -> np.ndarray:
    y = np.asarray(y, np.float32)
    return np.repeat(y[..., None], 3, axis=-1)


# --------------------------------------------------------------------------------------------
# colour


def prepare_colors(
    content: ImageLike,
    styles: Any,
    config: StyleConfig,
    *,
    color_match_method: str = "chol",
    clip: bool = True,
    resample: Optional[str] = None,
) -> tuple[np.ndarray, Any, Restore]:
    """Colour pre-processing of the inputs and the matching post-processing (``config.preserve_colors``).

    Colour spaces are NTSC YIQ (``color.rgb_to_yiq``); "Y" is Rec. 601 luma.

    * "lum": content → its Y replicated to 3 channels; each style → its Y with mean and standard
      deviation matched to the content's Y (``color.match_luminance``), replicated to 3 channels
      (not clipped, as in the paper: VGG takes any values, and clipping would spoil the matched
      statistics). ``restore`` takes the Y of the result (``color.luminance``, the YIQ matrix's
      first row, not the channel mean) and the content's I, Q. The optimised image starts grey but
      the optimiser moves its channels separately (by a few hundredths in a few Adam steps), so it
      is not exactly grey: the paper optimises a luminance image, and here the three channels are
      the variable; whatever colour they drift into is dropped with I, Q.
    * "match": each style → ``color.match_color(style, content, color_match_method)`` clipped to
      [0, 1] (the clipping is ours: the library's images live in [0, 1]); ``restore`` is identity.
    * "swap": inputs unchanged; ``restore(result) = transfer_chroma(result, content)``.
    * "none": everything unchanged.

    Args:
      content: H×W×3 RGB in [0, 1].
      styles: one H×W×3 style, a sequence (blended), or (array, weight) pairs, as ``stylize``
        takes; returned with the same structure.
      config: its ``preserve_colors`` selects the mode.
      color_match_method: "chol", "pca" or "sym" (see ``color.match_color``), for "match".
      clip: whether ``restore`` clips its output to [0, 1] (the engine's images are in [0, 1];
        where it clips, Y and I, Q change).
      resample: the filter ``restore`` uses to bring the content to the result's size when they
        differ (e.g. for previews at a coarse scale); default ``config.resample``.

    Returns:
      (content_in, styles_in, restore): numpy float32 images for the engine, and
      ``restore(result_rgb) -> rgb`` (numpy float32, the result's shape).
    """
    if color_match_method not in COLOR_MATCH_METHODS:
        raise ConfigError(
            f"color_match_method must be one of {', '.join(COLOR_MATCH_METHODS)}; got {color_match_method!r}")
    content = _as_image("content image", content)
    mode = config.preserve_colors
    resample = config.resample if resample is None else resample

    def identity(result: ImageLike) -> np.ndarray:
        return np.asarray(result, np.float32)

    def chroma_from_content(result: ImageLike) -> np.ndarray:
        r = np.asarray(result, np.float32)
        c = content if r.shape == content.shape else image.resize(content, r.shape[:2], resample)
        # Y of the result (luminance, the first row of the YIQ matrix) with I, Q of the content.
        return np.asarray(color.transfer_chroma(r, c, clip=clip), np.float32)

    if mode == "none":
        return content, _map_styles(styles, lambda s: s), identity
    if mode == "swap":
        return content, _map_styles(styles, lambda s: s), chroma_from_content
    if mode == "match":
        def matched(s: np.ndarray) -> np.ndarray:
            return np.asarray(color.match_color(s, content, color_match_method, clip=True), np.float32)

        return content, _map_styles(styles, matched), identity
    # lum
    y_content = np.asarray(color.luminance(content), np.float32)

    def lum_style(s: np.ndarray) -> np.ndarray:
        return _grey(color.match_luminance(color.luminance(s), y_content))

    return _grey(y_content), _map_styles(styles, lum_style), chroma_from_content


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
            result=None if self.result is None else self.result[i],
            scales=self.scales, iterations_per_scale=self.iterations_per_scale,
            losses_per_scale=[l[i] for l in self.losses_per_scale],
        )


# --------------------------------------------------------------------------------------------
# runs


def _styles_at(style: Any, shape: tuple[int, int], config: StyleConfig, resample: str) -> Any:
    return _map_styles(style, lambda s: image.resize(s, style_working_shape(s.shape[:2], shape, config), resample))


def _masks_at(masks: Optional[ImageLike], shape: tuple[int, int]) -> Optional[np.ndarray]:
    """Region masks resized to a scale's shape (bilinear: soft edges between regions)."""
    if masks is None:
        return None
    return np.stack([image.resize(np.asarray(m, np.float32), shape, "bilinear") for m in masks])


def _first_scale(shapes: list, resume: Optional[LoopState], resume_scales: Sequence[Any]) -> int:
    """The scale a resumed run continues (the number of finished scales), checked against this run."""
    first = len(resume_scales)
    if first and resume is None:
        raise ConfigError("resume_scales needs the state of the scale after them (resume=)")
    if first >= len(shapes):
        raise ConfigError(f"the checkpoint finished {first} scales; this run has {len(shapes)}")
    if resume is not None and tuple(np.shape(resume.v))[:2] != tuple(shapes[first]):
        raise ConfigError(f"the checkpointed image is {tuple(np.shape(resume.v))[:2]}, scale {first + 1} of this run "
                          f"is {shapes[first]}: resume with the same --size and --scales")
    return first


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
    """``engine.stylize`` with colour preservation (``config.preserve_colors``) and coarse-to-fine scales.

    Every scale runs ``engine.stylize`` on the colour-prepared content resized to that scale's
    shape, with each style resized by :func:`style_working_shape` for that shape (so under
    ``style_size="content"`` a style is always resized to the content's shape, as the CLI does).
    The first scale starts from ``config.init`` (or ``init_image``); each later one from the
    previous scale's ``Result.output`` (the config's choice: last, EMA or best iterate) upsampled
    with ``resample`` (Gatys et al. 2017 and crowsonkb start the fine scale from the upsampled
    coarse result too). The seed is the same for every scale (only the first uses noise).
    After the last scale the colours are restored (``prepare_colors``).

    Args:
      content: H×W×3 RGB in [0, 1] at the FINAL working size (downsized here for coarse scales).
      style: one array, a sequence (blended), or (array, weight) pairs, at their final working
        size (or larger); resized at every scale from these.
      params: a ``weights.Network`` (or a params dict with ``convention=``).
      config: a ``StyleConfig`` (any preset).
      scales: None: one scale, the content's size; "auto": ``scale_schedule(long side)`` (from
        256 px up in √2 steps); or a list of long sides, ascending, the last one the content's.
      iterations_per_scale: see :func:`scale_iterations` (default: ``config.iterations`` then
        half as many on each later scale).
      seed: the start-noise seed.
      callback: called between chunks with a :class:`ScaleProgress`; returning True stops the
        whole schedule.
      convention: for a bare params dict.
      resample: the filter for every resize here (coarse inputs, upsampling between scales);
        default ``config.resample``.
      color_match_method: "chol", "pca" or "sym" for ``preserve_colors="match"``.
      init_image: a start image for the first scale instead of ``config.init`` (any size; resized;
        made grey under "lum").
      chunk_size: steps per compiled chunk (default ``config.chunk_size``).
      masks: K×H×W region masks at the content's size (spatial control; resized to each scale).
      resume, resume_losses: continue from a checkpointed ``LoopState`` and the losses its scale
        recorded so far (``engine.stylize``'s arguments).
      resume_scales: under coarse-to-fine, (losses, evaluations) of each scale the interrupted run
        finished (``ScaleProgress.finished``); ``resume`` belongs to the next scale. Those scales
        are not run again, and the result equals the uninterrupted run's (their loss parts are NaN).
      devices: split the image's rows over these devices at every scale (``engine.stylize``).

    Returns:
      :class:`ControlledResult`.
    """
    content = _as_image("content image", content)
    resample = config.resample if resample is None else resample
    final = content.shape[:2]
    shapes = run_shapes(final, scales)
    counts = scale_iterations(config, len(shapes), iterations_per_scale)
    first = _first_scale(shapes, resume, resume_scales)
    content_in, style_in, restore = prepare_colors(content, style, config, color_match_method=color_match_method,
                                                   resample=resample)
    if init_image is not None:
        init_image = _as_image("init image", init_image)
        if config.preserve_colors == "lum":
            init_image = _grey(color.luminance(init_image))
    total = sum(counts)
    losses: list[np.ndarray] = [np.asarray(l, np.float32).reshape(-1) for l, _ in resume_scales]
    parts: list[np.ndarray] = [np.full((len(l), row_size() - 1), np.nan, np.float32) for l in losses]
    finished: list[tuple[np.ndarray, int]] = [(l, int(e)) for l, (_, e) in zip(losses, resume_scales)]
    evaluations = sum(e for _, e in finished)
    # a finished scale's iterations: its steps (one loss each), or its evaluations when those count
    iterations = evaluations if config.iteration_unit == "evaluation" else sum(len(l) for l in losses)
    prev: Optional[np.ndarray] = None
    res: Optional[Result] = None
    for k, (shape, n) in enumerate(zip(shapes, counts)):
        if k < first:
            continue
        # Gatys et al. 2017 use two scales; crowsonkb (and this) any number, √2 apart. Both start a
        # scale from the previous result upsampled; the content and style are resized from the
        # full-size inputs at every scale (never from the previous scale's copies).
        start = prev if prev is not None else init_image
        res = engine.stylize(
            image.resize(content_in, shape, resample),
            _styles_at(style_in, shape, config, resample),
            params,
            config,
            iterations=n,
            seed=seed,
            callback=_wrap_callback(callback, k, len(shapes), shape, iterations, total, restore, finished),
            init_image=None if start is None else image.resize(start, shape, resample),
            convention=convention,
            chunk_size=chunk_size,
            resume=resume if k == first else None,
            resume_losses=resume_losses if k == first else None,
            masks=_masks_at(masks, shape),
            devices=devices,
        )
        losses.append(res.losses)
        parts.append(res.loss_parts if res.loss_parts is not None else np.full((len(res.losses), row_size() - 1), np.nan))
        finished.append((res.losses, res.evaluations))
        evaluations += res.evaluations
        iterations += res.iterations
        prev = res.output
        if res.status != "done":
            break
    assert res is not None
    return ControlledResult(
        image=restore(image.resize(res.image, final, resample)),
        best_image=restore(image.resize(res.best_image, final, resample)),
        losses=np.concatenate(losses),
        evaluations=evaluations,
        iterations=iterations,
        status=res.status,
        config=config,
        seed=seed,
        loss_parts=np.concatenate(parts),
        terms=res.terms,
        result=res,
        state=res.state,
        scales=shapes,
        iterations_per_scale=counts,
        losses_per_scale=losses,
    )


def _many_members(content: np.ndarray, n: int, seeds: Optional[Sequence[int]]) -> tuple[list[np.ndarray], list[int]]:
    """Each member's content (one shared or one each, all of one size) and seed."""
    if n == 0:
        raise ConfigError("stylize_many_controlled needs at least one style")
    contents = ([_as_image("content image", content)] * n if content.ndim == 3
                else [_as_image("content image", c) for c in content])
    if len(contents) != n:
        raise ConfigError(f"{len(contents)} content images for {n} styles")
    if any(c.shape[:2] != contents[0].shape[:2] for c in contents):
        raise ConfigError("the content images of a batch must have one size")
    out_seeds = [0] * n if seeds is None else [int(s) for s in seeds]
    if len(out_seeds) != n:
        raise ConfigError(f"{len(out_seeds)} seeds for {n} styles")
    return contents, out_seeds


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
) -> ControlledManyResult:
    """``batching.stylize_many`` with colour preservation and coarse-to-fine (see ``stylize_controlled``).

    The i-th result equals ``stylize_controlled(content_i, styles[i], ..., seed=seeds[i])`` to
    float32 rounding. Later scales start each member from its own previous result upsampled
    (``stylize_many(init_images=...)``).

    Args:
      content: one H×W×3 image (shared) or an N×H×W×3 batch, at the final working size.
      styles: N style specs (one array, a list, or (array, weight) pairs each).
      params, config, scales, iterations_per_scale, callback, convention, resample,
        color_match_method, chunk_size: as ``stylize_controlled`` (the callback's
        ``restored_image()`` is N×H×W×3).
      seeds, batch_size, devices, configs, spatial: as ``batching.stylize_many`` (``configs``: one
        per member, differing in values only: a sweep; ``spatial``: devices per member, a
        ``batch × spatial`` mesh).
      resume: continue an interrupted one-scale batch (``batching.ManyResume``; the callback's
        ``ScaleProgress`` carries ``done`` and ``rows``). Refused with several scales.

    Returns:
      :class:`ControlledManyResult`.
    """
    content = np.asarray(content, np.float32)
    resample = config.resample if resample is None else resample
    n = len(styles)
    shared = content.ndim == 3
    contents, seeds = _many_members(content, n, seeds)
    final = contents[0].shape[:2]
    shapes = run_shapes(final, scales)
    counts = scale_iterations(config, len(shapes), iterations_per_scale)
    if resume is not None and len(shapes) > 1:
        raise ConfigError("resuming a batch works with one scale; this run has several (--scales)")
    prepared = [prepare_colors(c, s, config, color_match_method=color_match_method, resample=resample)
                for c, s in zip(contents, styles)]
    contents_in = [p[0] for p in prepared]
    styles_in = [p[1] for p in prepared]
    restores = [p[2] for p in prepared]

    def restore_all(batch: np.ndarray) -> np.ndarray:
        return np.stack([restores[i](im) for i, im in enumerate(batch)])

    total = sum(counts)
    losses: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    evaluations = np.zeros((n,), np.int64)
    iterations = 0
    nonfinite = [False] * n
    prev: Optional[np.ndarray] = None
    many: Optional[ManyResult] = None
    for k, (shape, iters) in enumerate(zip(shapes, counts)):
        m = len(contents_in)
        c_k = image.resize(contents_in[0], shape, resample) if shared else \
            np.stack([image.resize(c, shape, resample) for c in contents_in])
        s_k = [_styles_at(s, shape, config, resample) for s in styles_in]
        starts = None if prev is None else np.stack([image.resize(p, shape, resample) for p in prev])
        many = batching.stylize_many(
            c_k, s_k, params, config, configs=None if configs is None else list(configs)[:m], seeds=seeds[:m],
            iterations=iters,
            callback=_wrap_callback(callback, k, len(shapes), shape, iterations, total, restore_all),
            convention=convention, chunk_size=chunk_size, batch_size=batch_size, devices=devices,
            init_images=starts, spatial=spatial, resume=resume,
        )
        got = len(many)
        losses = [l[:got] for l in losses] + [many.losses]
        parts = [q[:got] for q in parts] + [many.loss_parts if many.loss_parts is not None
                                            else np.full(many.losses.shape + (row_size() - 1,), np.nan)]
        evaluations = evaluations[:got] + np.asarray(many.evaluations, np.int64)
        iterations += many.iterations
        nonfinite = [f or s == "nonfinite" for f, s in zip(nonfinite[:got], many.status)]
        prev = many.outputs
        stopped = "stopped" in many.status or got < m
        if got < m:  # stopped in a later group: only the first `got` members ran
            contents_in, styles_in, restores = contents_in[:got], styles_in[:got], restores[:got]
        if stopped:
            break
    assert many is not None
    got = len(many)
    status = ["nonfinite" if nonfinite[i] else many.status[i] for i in range(got)]
    images = np.stack([restores[i](image.resize(many.images[i], final, resample)) for i in range(got)])
    bests = np.stack([restores[i](image.resize(many.best_images[i], final, resample)) for i in range(got)])
    return ControlledManyResult(
        images=images,
        best_images=bests,
        losses=np.concatenate(losses, axis=1),
        evaluations=evaluations,
        iterations=iterations,
        status=status,
        config=config,
        seeds=seeds[:got],
        loss_parts=np.concatenate(parts, axis=1),
        configs=list(many.configs or [])[:got],
        terms=many.terms,
        result=many,
        scales=shapes,
        iterations_per_scale=counts,
        losses_per_scale=losses,
    )
