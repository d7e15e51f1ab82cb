"""Working sizes and resizing (Pillow's filters on float planes)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from nst_jax.errors import ConfigError
from nst_jax.image.common import RESIZE_METHODS, SIDES

def working_shape(height: int, width: int, size: int, side: str = "long") -> tuple[int, int]:
    """The (H, W) an image is resized to.

    Args:
      height, width: the image's size.
      size: the target length of the chosen side.
      side: "long": the longer side becomes ``size``, the other is scaled and rounded (min 1);
        "height": H = ``size``, W = ``int(width * size / height)`` (the Keras example's truncating
        formula, min 1); "width": W = ``size``, H = ``int(height * size / width)``.

    Returns:
      (H, W).
    """
    if side not in SIDES:
        raise ConfigError(f"side must be one of {SIDES}, got {side!r}")
    for label, v in (("height", height), ("width", width), ("size", size)):
        if int(v) != v or v < 1:
            raise ConfigError(f"{label} must be a positive integer, got {v!r}")
        if v > 1 << 24:  # past any pixel limit; refused before the arithmetic overflows a float
            raise ConfigError(f"{label} {str(v)[:12]}{'...' if len(str(v)) > 12 else ''} is over the largest side nst-jax "
                              f"works at ({1 << 24:,} pixels)")
    height, width, size = int(height), int(width), int(size)
    if side == "height":
        return size, max(1, int(width * size / height))
    if side == "width":
        return max(1, int(height * size / width)), size
    if height >= width:
        return size, max(1, math.floor(width * size / height + 0.5))
    return max(1, math.floor(height * size / width + 0.5)), size


def resize(image: Any, shape: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resize an H×W×C (or H×W) float image to ``shape`` = (H', W') without quantising.

    Each channel is resized by Pillow as a 32-bit float (mode "F") image. Overshoot of
    "bicubic"/"lanczos" beyond ``[0, 1]`` is clipped (values already outside that range stay
    reachable).

    Args:
      image: float array (numpy or jax), H×W×C or H×W.
      shape: (H', W').
      method: "nearest" (the Keras ``load_img(target_size=...)`` default), "bilinear", "bicubic",
        "lanczos" or "area" (box filter).

    Returns:
      float32 array H'×W'×C (or H'×W'); the input itself (as float32) when the shape already matches.
    """
    if method not in RESIZE_METHODS:
        raise ConfigError(f"resize method must be one of {tuple(RESIZE_METHODS)}, got {method!r}")
    a = np.asarray(image)
    if a.dtype != np.float32:
        a = (a.astype(np.float32) / 255.0) if a.dtype == np.uint8 else a.astype(np.float32)
    if a.ndim not in (2, 3):
        raise ValueError(f"image must be H×W×C or H×W, got shape {a.shape}")
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"resize target must be positive, got {tuple(shape)}")
    if a.shape[:2] == (h, w):
        return a
    resample = RESIZE_METHODS[method]
    planes = a[..., None] if a.ndim == 2 else a
    out = np.empty((h, w, planes.shape[2]), np.float32)
    for c in range(planes.shape[2]):
        ch = Image.fromarray(np.ascontiguousarray(planes[..., c]))
        out[..., c] = np.asarray(ch.resize((w, h), resample), dtype=np.float32)
    if method in ("bicubic", "lanczos") and a.size:
        out = np.clip(out, min(0.0, float(a.min())), max(1.0, float(a.max())))
    return out[..., 0] if a.ndim == 2 else out
