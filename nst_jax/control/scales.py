"""Sizes of a run: the coarse-to-fine scale schedule and the style image's working shape.

Picture planning only: these functions turn a content size and the config's picture fields
(``style_size``, ``style_scale``) into (H, W) shapes and iteration counts. The engine never reads
them; :mod:`nst_jax.control.runs` and the CLI call them before a run.

Coarse-to-fine (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer";
crowsonkb/style-transfer-pytorch): the image is optimised at a sequence of sizes growing by √2.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np

from .. import image
from ..program.config import StyleConfig
from ..errors import ConfigError

__all__ = [
    "MIN_SIDE",
    "Scales",
    "plan_shapes",
    "run_shapes",
    "scale_iterations",
    "scale_schedule",
    "style_working_shape",
]

MIN_SIDE = 16  # VGG pools four times before conv5_1
MAX_STYLE_SIDE = 1 << 20  # a style side past this is over any --max-pixels: refused before the arithmetic
Scales = Union[None, str, Sequence[int]]



def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def style_working_shape(
    style_hw: tuple[int, int], content_shape: tuple[int, int], config: StyleConfig
) -> tuple[int, int]:
    """The (H, W) a style image is resized to for a content of ``content_shape``.

    ``config.style_size == "content"``: the content's shape (aspect not kept, as the seed programs
    do). ``"scale"``: the long side becomes ``round(style_scale × long side of content_shape)``
    (halves rounded up), the style's aspect ratio is kept (``image.working_shape``).

    Args:
      style_hw: the style image's (H, W).
      content_shape: the content's working (H, W) (a scale's shape under coarse-to-fine).
      config: ``style_size`` and ``style_scale``.

    Returns:
      (H, W).

    Raises:
      ConfigError: a side would be under 16 pixels.
    """
    ch, cw = int(content_shape[0]), int(content_shape[1])
    if config.style_size == "content":
        shape = (ch, cw)
    else:
        # neural-style computes ceil(style_scale · image_size); we round (the CLI's rule).
        side = config.style_scale * max(ch, cw)
        if not math.isfinite(side) or side > MAX_STYLE_SIDE:  # bound the product before it is an int
            raise ConfigError(f"at style scale {config.style_scale:g} the style's long side would be {side:.3g} "
                              f"pixels for a {ch}x{cw} content, over the limit of {MAX_STYLE_SIDE:,} (use a "
                              "smaller --style-scale)")
        long_side = max(1, _half_up(side))
        shape = image.working_shape(int(style_hw[0]), int(style_hw[1]), long_side, "long")
    if min(shape) < MIN_SIDE:
        raise ConfigError(
            f"at style scale {config.style_scale} the style would be {shape[0]}x{shape[1]} for a {ch}x{cw} content; "
            f"VGG needs at least {MIN_SIDE} pixels a side")
    return shape


def scale_schedule(final_long_side: int, start: int = 256, factor: float = math.sqrt(2)) -> list[int]:
    """Long sides of the coarse-to-fine scales, ascending, the last exactly ``final_long_side``.

    crowsonkb's rule: the sides are ``round(final / factor**k)`` for k = 0, 1, ... while they are
    >= ``start`` (and >= 16), so every step is the same ratio and the first scale lies in
    [start, start·factor). E.g. 512 → [256, 362, 512]; 600 → [300, 424, 600]. If
    ``final_long_side <= start``: just ``[final_long_side]``.

    Args:
      final_long_side: the long side of the final (working) size.
      start: the smallest long side allowed.
      factor: the ratio between consecutive scales (> 1).

    Returns:
      list of long sides.
    """
    final = int(final_long_side)
    if final != final_long_side or final < 1:
        raise ConfigError(f"final_long_side must be a positive integer; got {final_long_side!r}")
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1):
        raise ConfigError(f"scale factor must be a number > 1; got {factor!r}")
    if final <= start:
        return [final]
    low = max(int(start), MIN_SIDE)
    sides: set[int] = set()
    k, side = 0, final
    while side >= low:
        sides.add(side)
        k += 1
        side = _half_up(final / factor**k)
    return sorted(sides)


def plan_shapes(h: int, w: int, schedule: Sequence[int]) -> list[tuple[int, int]]:
    """(H, W) of every scale: the long side from ``schedule``, the aspect ratio of h × w kept.

    The short side is rounded (halves up), each side at least 16. A scale whose long side equals
    ``max(h, w)`` is exactly (h, w).

    Args:
      h, w: the final (working) size.
      schedule: long sides (e.g. from :func:`scale_schedule`).

    Returns:
      list of (H, W).
    """
    shapes = []
    for side in schedule:
        side = int(side)
        if h >= w:
            shapes.append((max(MIN_SIDE, side), max(MIN_SIDE, _half_up(w * side / h))))
        else:
            shapes.append((max(MIN_SIDE, _half_up(h * side / w)), max(MIN_SIDE, side)))
    return shapes


def scale_iterations(
    config: StyleConfig, num_scales: int, iterations_per_scale: Union[None, int, Sequence[int]] = None
) -> list[int]:
    """Iterations of every scale.

    Default (crowsonkb's ratio, 1000 on the first scale then 500): ``config.iterations`` on the
    first scale, ``max(1, config.iterations // 2)`` on each later one (a later scale starts from an
    upsampled result, so it needs fewer). An int gives every scale that many; a sequence gives one
    count per scale.

    Args:
      config: ``iterations``.
      num_scales: number of scales.
      iterations_per_scale: None, an int, or a sequence of ``num_scales`` ints.

    Returns:
      list of ``num_scales`` ints.
    """
    if iterations_per_scale is None:
        return [config.iterations] + [max(1, config.iterations // 2)] * (num_scales - 1)
    if isinstance(iterations_per_scale, (int, np.integer)) and not isinstance(iterations_per_scale, bool):
        counts = [int(iterations_per_scale)] * num_scales
    else:
        counts = list(iterations_per_scale)  # type: ignore[arg-type]  # (a bool was refused above)
        if len(counts) != num_scales:
            raise ConfigError(f"{len(counts)} iteration counts for {num_scales} scales")
    for c in counts:
        if isinstance(c, bool) or int(c) != c or c < 0:
            raise ConfigError(f"iterations per scale must be integers >= 0; got {c!r}")
    return [int(c) for c in counts]


def run_shapes(final_hw: tuple[int, int], scales: Scales) -> list[tuple[int, int]]:
    """The working shapes of a run: one scale (None), the automatic schedule ("auto"), or given long sides."""
    h, w = final_hw
    if min(h, w) < MIN_SIDE:
        raise ConfigError(f"content image is {h}x{w}: VGG needs at least {MIN_SIDE} pixels a side")
    if scales is None:
        return [(h, w)]
    if isinstance(scales, str):
        if scales != "auto":
            raise ConfigError(f"scales must be None, 'auto' or a list of long sides; got {scales!r}")
        return plan_shapes(h, w, scale_schedule(max(h, w)))
    try:
        sides = [int(s) for s in scales]
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"scales must be whole numbers of pixels; got {list(scales)!r:.80}") from None
    if any(s < MIN_SIDE for s in sides) or any(b <= a for a, b in zip(sides, sides[1:])):
        raise ConfigError(f"scales must rise from at least {MIN_SIDE} px to the final size, coarse to fine; got "
                          f"{','.join(map(str, sides))[:80]}")
    if not sides or sides[-1] != max(h, w):
        raise ConfigError(f"the last scale must be the content's long side {max(h, w)} "
                          f"(give the content at the final size); got {list(scales)}")
    return plan_shapes(h, w, sides)
