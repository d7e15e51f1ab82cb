"""Pictures made from results: montages, loss plots, and the labelled grid of a sweep.

Written like ``image.save_image``: the format from the extension, atomically, never replacing a
file without ``overwrite=True``.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nst_jax import files
from nst_jax.errors import ImageError
from nst_jax.image import IMAGE_EXTENSIONS, check_output_path, resize
from nst_jax.image.common import JPEG_QUALITY


# --------------------------------------------------------------------------------------------
# montage


def montage(
    images: Sequence[Any],
    *,
    height: int | None = None,
    gap: int = 8,
    background: float = 1.0,
) -> np.ndarray:
    """Images side by side (e.g. content | result | style) at a common height.

    Args:
      images: float H×W×3 (or H×W greyscale) arrays in ``[0, 1]``.
      height: the common height; default the first image's height. Each image keeps its aspect
        ratio (bicubic resize).
      gap: pixels of ``background`` between images.
      background: the gap's grey level (1.0 = white).

    Returns:
      float32 array ``height × (ΣW + gap·(n−1)) × 3``.
    """
    if not images:
        raise ValueError("montage needs at least one image")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    arrays = []
    for im in images:
        a = np.asarray(im)
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"montage images must be H×W×3, got shape {a.shape}")
        arrays.append(a)
    target = int(height) if height is not None else arrays[0].shape[0]
    if target < 1:
        raise ValueError(f"height must be positive, got {height}")
    parts: list[np.ndarray] = []
    for i, a in enumerate(arrays):
        h, w = a.shape[:2]
        new_w = max(1, math.floor(w * target / h + 0.5))
        if i:
            parts.append(np.full((target, gap, 3), background, np.float32))
        parts.append(resize(a, (target, new_w), "bicubic"))
    return np.concatenate(parts, axis=1)


# --------------------------------------------------------------------------------------------
# the grid of a sweep


def _font(size: int = 13) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except Exception:  # noqa: BLE001  # pragma: no cover - no FreeType
        return ImageFont.load_default()


def grid(
    cells: Sequence[Sequence[Any]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    gap: int = 6,
    background: float = 1.0,
) -> np.ndarray:
    """Results in rows and columns, each row and column named (the picture of a sweep).

    Args:
      cells: rows of float H×W×3 images in [0, 1] (all rows the same length; images may differ in
        size: each cell is as large as the largest and the image is centred in it).
      row_labels: one per row, written left of it ("" for none).
      col_labels: one per column, written above it.
      gap: pixels of ``background`` between cells.
      background: the grey level around the cells (1.0 = white).

    Returns:
      float32 array H×W×3 in [0, 1].
    """
    if not cells or not cells[0]:
        raise ValueError("grid needs at least one cell")
    if any(len(r) != len(cells[0]) for r in cells) or len(row_labels) != len(cells) or len(col_labels) != len(cells[0]):
        raise ValueError("grid needs rows of one length and a label per row and per column")
    arrays = [[np.clip(np.asarray(c, np.float32), 0.0, 1.0) for c in row] for row in cells]
    ch = max(a.shape[0] for row in arrays for a in row)
    cw = max(a.shape[1] for row in arrays for a in row)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        if not text:
            return 0, 0
        box = probe.textbbox((0, 0), text, font=font)
        return int(box[2] - box[0]), int(box[3] - box[1])

    left = max(size(t)[0] for t in row_labels) + (2 * gap if any(row_labels) else 0)
    cw = max(cw, max(size(t)[0] for t in col_labels) + gap)  # labels never overlap
    top = max(size(t)[1] for t in col_labels) + (2 * gap if any(col_labels) else 0)
    width = left + len(cells[0]) * (cw + gap) + gap
    height = top + len(cells) * (ch + gap) + gap
    grey = int(round(background * 255))
    canvas = Image.new("RGB", (width, height), (grey, grey, grey))
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(col_labels):
        tw, _ = size(text)
        draw.text((left + gap + j * (cw + gap) + (cw - tw) // 2, gap), text, fill=(0, 0, 0), font=font)
    for i, row in enumerate(arrays):
        y = top + gap + i * (ch + gap)
        _, th = size(row_labels[i])
        draw.text((gap, y + (ch - th) // 2), row_labels[i], fill=(0, 0, 0), font=font)
        for j, a in enumerate(row):
            x = left + gap + j * (cw + gap)
            tile = Image.fromarray(np.rint(a * 255).astype(np.uint8))
            canvas.paste(tile, (x + (cw - a.shape[1]) // 2, y + (ch - a.shape[0]) // 2))
    return np.asarray(canvas, np.float32) / 255.0


def labelled_montage(images: Sequence[Any], labels: Sequence[str], *, min_height: int = 256,
                     gap: int = 8) -> np.ndarray:
    """Images side by side at one height, each named above (the CLI's ``--montage``: content |
    result | style).

    The height is the first image's, but at least ``min_height``: a montage of a 64-px run is drawn
    at 256 px (bicubic), so it can be looked at and its labels fit.

    Args:
      images: float H×W×3 arrays in [0, 1].
      labels: one per image.
      min_height: the smallest height drawn.
      gap: pixels between the panels.

    Returns:
      float32 array H×W×3 in [0, 1].
    """
    if len(labels) != len(images):
        raise ValueError("labelled_montage needs one label per image")
    height = max(int(np.shape(images[0])[0]), int(min_height))
    panels = []
    for im in images:
        a = np.clip(np.asarray(im, np.float32), 0.0, 1.0)
        width = max(1, math.floor(a.shape[1] * height / a.shape[0] + 0.5))
        panels.append(np.clip(resize(a, (height, width), "bicubic"), 0.0, 1.0))
    return grid([panels], [""], list(labels), gap=gap)


# --------------------------------------------------------------------------------------------
# loss plot


def have_matplotlib() -> bool:
    """Whether ``save_loss_plot`` can draw (matplotlib is the optional ``plot`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


PLOT_EXTRA = "pip install 'nst-jax[plot]' (matplotlib)"


def save_loss_plot(
    path: os.PathLike[str] | str,
    losses: Sequence[float] | np.ndarray,
    *,
    parts: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    title: str = "loss",
) -> pathlib.Path:
    """Draw the loss per iteration with matplotlib: a log-scale y axis, the total and its terms apart.

    The total is a thick line; with ``parts`` every term is a thin one. A term with no finite
    positive value (0 throughout, e.g. a TV weight of 0) cannot be drawn on a log axis: it is named
    under the chart instead of being dropped silently. Non-finite and non-positive values leave
    gaps; short runs (up to 30 iterations) get a marker on every point, so a value between two gaps
    is still seen, and the iteration axis has whole-number ticks. A log axis because the loss falls
    by decades: on a linear one it is a flat line after the first few percent of the run. Written
    atomically like ``image.save_image``.

    Args:
      path: output file (any extension of ``image.IMAGE_EXTENSIONS``).
      losses: one total per iteration.
      parts: term name -> one weighted value per iteration (``Result.parts()``: content, style,
        TV, temporal: the terms the run has).
      overwrite: replace an existing file.
      title: drawn above the chart.

    Returns:
      the written path.

    Raises:
      ImageError: matplotlib is not installed, or the path cannot be written.
    """
    if not have_matplotlib():
        raise ImageError(f"{path}: the loss plot needs matplotlib; {PLOT_EXTRA}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    p = check_output_path(path, overwrite=overwrite)
    fmt = IMAGE_EXTENSIONS[p.suffix.lower()]
    y = np.asarray(losses, dtype=np.float64).reshape(-1)
    x = np.arange(1, len(y) + 1)
    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curves = [("total", y, 2.2)]
    for name, values in (parts or {}).items():
        curves.append((name, np.asarray(values, np.float64).reshape(len(y)), 1.2))
    drawn, zero = 0, []
    marker = "o" if len(y) <= 30 else None
    for name, values, width in curves:
        shown = np.where(np.isfinite(values) & (values > 0), values, np.nan)
        if np.isfinite(shown).any():
            ax.plot(x, shown, label=name, linewidth=width, marker=marker, markersize=3)
            drawn += 1
        elif name != "total" and np.isfinite(values).any():
            zero.append(name)
    if drawn:
        ax.set_yscale("log")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no finite positive loss", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration" + (f"   (not drawn, 0 throughout: {', '.join(zero)})" if zero else ""))
    ax.set_ylabel("loss (log scale)" if drawn else "loss")
    ax.set_title(title.replace("\n", " "))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[attr-defined]
    pil = Image.fromarray(rgba[..., :3].copy())
    params: dict[str, Any] = {"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    return files.atomic_write(p, lambda f: pil.save(f, format=fmt, **params), overwrite=overwrite)
