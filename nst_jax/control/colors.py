"""Colour preservation around the engine (``config.preserve_colors``; Gatys et al. 2016,
"Preserving Color in Neural Artistic Style Transfer"), all in NTSC YIQ (the matrix in
:mod:`nst_jax.image.color`; Y is Rec. 601 luma ``0.299 R + 0.587 G + 0.114 B``):

* ``"lum"``: luminance-only transfer. The engine optimises on grey images (Y replicated to three
  channels; each style's Y matched to the content's mean and standard deviation), then the
  result's Y is recombined with the content's I and Q.
* ``"match"``: each style's RGB mean and covariance are matched to the content's (linear colour
  transfer: Cholesky, PCA or symmetric square root), then clipped to [0, 1].
* ``"swap"``: no pre-processing; the result keeps its Y and takes the content's I and Q
  (neural-style's ``-original_colors 1``).
* ``"none"``: nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np

from .. import image
from ..errors import ConfigError
from ..image import color
from ..objective.targets import ImageLike
from ..program.config import StyleConfig

__all__ = ["COLOR_MATCH_METHODS", "Restore", "as_image", "grey", "map_styles", "prepare_colors"]

COLOR_MATCH_METHODS: tuple[str, ...] = tuple(color.COLOR_METHODS)
Restore = Callable[[ImageLike], np.ndarray]


def as_image(name: str, x: ImageLike) -> np.ndarray:
    """``x`` as a float32 H×W×3 array, or a ``ConfigError`` naming it."""
    a = np.asarray(x, np.float32)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ConfigError(f"{name} must be an H×W×3 RGB array; got shape {tuple(a.shape)}")
    return a


def _is_single(style: Any) -> bool:
    return isinstance(style, (np.ndarray, jax.Array)) and np.ndim(style) == 3


def _is_pairs(items: list) -> bool:
    return bool(items) and all(isinstance(it, tuple) and len(it) == 2 for it in items)


def map_styles(style: Any, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    """Apply ``fn`` to every image of a style spec (one array, a list, or (array, weight) pairs),
    keeping the spec's structure (the same rules as the engine's)."""
    if _is_single(style):
        return fn(as_image("style image", style))
    items = list(style)
    if _is_pairs(items):
        return [(fn(as_image("style image", im)), w) for im, w in items]
    return [fn(as_image("style image", im)) for im in items]


def grey(y: ImageLike) -> np.ndarray:
    """A luminance image (H×W) replicated to three channels."""
    y = np.asarray(y, np.float32)
    return np.repeat(y[..., None], 3, axis=-1)


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
    content = as_image("content image", content)
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
        return content, map_styles(styles, lambda s: s), identity
    if mode == "swap":
        return content, map_styles(styles, lambda s: s), chroma_from_content
    if mode == "match":
        def matched(s: np.ndarray) -> np.ndarray:
            return np.asarray(color.match_color(s, content, color_match_method, clip=True), np.float32)

        return content, map_styles(styles, matched), identity
    # lum
    y_content = np.asarray(color.luminance(content), np.float32)

    def lum_style(s: np.ndarray) -> np.ndarray:
        return grey(color.match_luminance(color.luminance(s), y_content))

    return grey(y_content), map_styles(styles, lum_style), chroma_from_content
