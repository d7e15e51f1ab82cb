"""Constants and message helpers shared by the image modules."""

from __future__ import annotations

import os
import threading

from PIL import Image



DEFAULT_MAX_PIXELS: int = 120_000_000
"""Largest accepted input (width × height); a 12 000 × 10 000 image. Raise with ``--max-pixels``."""

IMAGE_EXTENSIONS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
}
"""Output extension (lower case) → Pillow format name."""

ROUNDINGS = ("round", "floor")
RESIZE_METHODS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}
SIDES = ("long", "height", "width")

JPEG_QUALITY = 95
WEBP_QUALITY = 95
PIXEL_LIMIT_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# messages


def path_text(path: os.PathLike[str] | str) -> str:
    """The path as text, on one line."""
    text = os.fspath(path)
    if isinstance(text, bytes):  # pragma: no cover - bytes paths
        text = text.decode(errors="replace")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__
