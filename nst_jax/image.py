"""Image files in and out, and resizing (montages and plots: ``figures``; colour: ``color``).

This is the only module that touches image files (through Pillow). Conventions:

* An image is a float32 ``H×W×3`` RGB array with values in ``[0, 1]`` (numpy; the colour
  functions also accept and return jax arrays).
* Every problem a user can fix (a missing, unreadable, broken or too large input; an output path
  that cannot be written) is an :class:`~nst_jax.errors.ImageError` with a one-line message
  naming the file. Non-fatal notes are ``warnings.warn(msg, NSTWarning)``.
* Invalid option values (``rounding``, ``method``, ``side``, ``bit_depth``) raise
  :class:`~nst_jax.errors.ConfigError` (a ``ValueError``).

Loading (:func:`load_image`):

* Transparency (RGBA, LA, PA, palette or ``tRNS`` transparency) is composited over **white**,
  since white is what a transparent region looks like on a page or in a viewer, and the
  style-transfer programs this library reproduces all read images as opaque RGB.
* 16-bit greyscale (``I;16``) keeps its precision (``/ 65535``). Pillow 13 decodes 16-bit-per-channel
  RGB/RGBA PNG and TIFF files to 8-bit ``RGB``/``RGBA`` (it keeps only the high byte). This module
  recovers the full precision by decoding the file a second time with the byte order of the raw
  mode swapped, which yields the low bytes (16-bit ``LA`` PNGs are decoded as one 32-bit word per
  pixel instead). If that fails the image is used at 8 bits with an ``NSTWarning``.
* An ICC profile other than sRGB is converted to sRGB with ``ImageCms`` (for 8-bit data); without
  ``ImageCms``, or for 16-bit/float data, the profile is ignored with a warning.
* The size limit is checked from the header before decoding (``max_pixels``; the CLI's
  ``--max-pixels``). Pillow's own decompression-bomb limit is replaced by ``max_pixels`` while
  one of our loads runs (under a lock, restored afterwards), so raising ``max_pixels`` works.

Saving (:func:`save_image`; ``figures.save_loss_plot`` too): the format comes from the extension; an
existing file is only replaced with ``overwrite=True``; a missing parent directory is created;
the data are written to a temporary file in the destination directory and moved into place with
``os.replace``, so a failed write never leaves a partial file or damages an existing one.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from nst_jax import files
from nst_jax.errors import ConfigError, ImageError, NSTWarning

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "RESIZE_METHODS",
    "ROUNDINGS",
    "check_output_path",
    "image_size",
    "load_image",
    "resize",
    "save_image",
    "to_uint8",
    "working_shape",
]

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

_JPEG_QUALITY = 95
_WEBP_QUALITY = 95
_PIXEL_LIMIT_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# messages


def _name(path: os.PathLike[str] | str) -> str:
    """The path as text, on one line."""
    text = os.fspath(path)
    if isinstance(text, bytes):  # pragma: no cover - bytes paths
        text = text.decode(errors="replace")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


# --------------------------------------------------------------------------------------------
# loading


def load_image(path: os.PathLike[str] | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as float32 RGB in ``[0, 1]``.

    Greyscale (1-bit, 8-bit, 16-bit, 32-bit int, float), palette, RGB(A), LA, CMYK and YCbCr files are
    accepted. Transparent pixels are composited over white. The EXIF orientation is applied.
    Of an animation (GIF, WebP, APNG, multi-page TIFF) the first frame is used, with an
    ``NSTWarning``. 16-bit data keep 16-bit precision (see the module docstring).

    Args:
      path: the image file.
      max_pixels: the largest accepted width × height, checked before decoding.

    Returns:
      float32 array, H×W×3, values in ``[0, 1]``.

    Raises:
      ImageError: missing file, a directory, unreadable, empty, not an image, truncated or
        corrupt, larger than ``max_pixels``, or an unsupported colour mode. One line naming the file.
    """
    name = _name(path)
    p = pathlib.Path(path)
    _check_readable(p, name)
    with _pillow_limit(None):  # _load sets the limit itself once the header is checked
        return _load(p, name, max_pixels)


@contextlib.contextmanager
def _pillow_limit(limit: int | None) -> Iterator[None]:
    """Pillow's decompression-bomb limit replaced by ours (``None``: off) for one load, under a lock,
    with its warning silenced (our own check, on the header, gives the one-line error)."""
    with _PIXEL_LIMIT_LOCK:
        old_limit = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = limit
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit


def image_size(path: os.PathLike[str] | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """An image file's (H, W) as :func:`load_image` will return it, from its header alone.

    Nothing is decoded, so a run can check sizes and memory before any pixel is read. The EXIF
    orientation is applied (a 90° rotation swaps the sides).

    Args:
      path: the image file.
      max_pixels: the largest accepted width × height.

    Returns:
      (height, width).

    Raises:
      ImageError: as :func:`load_image`, for what the header shows.
    """
    name = _name(path)
    p = pathlib.Path(path)
    _check_readable(p, name)
    with _pillow_limit(None):  # our own check follows at once
        im = _open(p, name)
        try:
            w, h = im.size
            _check_pixels(name, w, h, max_pixels)
            try:
                orientation = im.getexif().get(0x0112)
            except Exception:  # noqa: BLE001 - a broken EXIF block: load_image ignores it too
                orientation = None
        finally:
            im.close()
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _check_pixels(name: str, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageError(
            f"{name}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
            f"pass --max-pixels N to raise the limit"
        )


def _check_readable(p: pathlib.Path, name: str) -> None:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except OSError as e:
        raise ImageError(f"{name}: cannot access file ({_one_line(e)})") from None
    if p.is_dir():
        raise ImageError(f"{name}: is a directory, not an image file")
    if st.st_size == 0:
        raise ImageError(f"{name}: empty file (0 bytes), not an image")
    if not os.access(p, os.R_OK):
        raise ImageError(f"{name}: permission denied (file is not readable)")


def _load(p: pathlib.Path, name: str, max_pixels: int) -> np.ndarray:
    """Body of :func:`load_image`; runs inside ``_pillow_limit`` (the header parsed with the limit off)."""
    notes: list[str] = []
    im = _open(p, name)
    try:
        w, h = im.size
        _check_pixels(name, w, h, max_pixels)
        # A backstop for decoders that grow their canvas while decoding (GIF, TIFF tiles).
        Image.MAX_IMAGE_PIXELS = max(int(max_pixels), 1)
        fmt = im.format
        n_frames = _frame_count(im, name)
        rawmodes = _tile_rawmodes(im)
        kind16 = _sixteen_bit_kind(im, rawmodes)
        if kind16 == "LA":
            hi = _decode(lambda: _open_retiled(p, name, "I", lambda r: "I;32B"), name)
            lo = None
        else:
            hi = _decode(lambda: im, name, close=False)
            lo = None
            if kind16 == "RGB":
                try:
                    lo = _decode(lambda: _open_retiled(p, name, None, _swap_byte_order), name)
                    if lo.size != hi.size or lo.mode != hi.mode:
                        raise ValueError("low-byte pass gave a different image")
                except Exception as e:  # noqa: BLE001 - fall back to 8 bits
                    lo = None
                    notes.append(f"{name}: 16-bit data loaded at 8-bit precision ({_one_line(e)})")
        icc = hi.info.get("icc_profile")
        rgb = _to_rgb_float(hi, lo, name, icc, notes, sixteen_la=(kind16 == "LA"))
    finally:
        im.close()
    if n_frames > 1 and fmt != "MPO":
        notes.append(f"{name}: animated image, using the first frame of {n_frames}")
    for note in notes:
        warnings.warn(note, NSTWarning, stacklevel=3)
    return rgb


def _open(p: pathlib.Path, name: str) -> Image.Image:
    try:
        return Image.open(p)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognised image file (unknown format, or damaged)") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied (file is not readable)") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image file") from None
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: {_one_line(e)}; pass --max-pixels N to raise the limit") from None
    except Exception as e:  # noqa: BLE001 - any failure parsing an untrusted header
        raise ImageError(f"{name}: cannot read image ({_one_line(e)})") from None


def _decode(open_fn: Callable[[], Image.Image], name: str, *, close: bool = True) -> Image.Image:
    """Open (via ``open_fn``), fully decode and EXIF-orient an image; Pillow failures → ImageError."""
    im: Image.Image | None = None
    try:
        im = open_fn()
        im.load()  # force the full decode: a truncated file fails here, not later
        out = ImageOps.exif_transpose(im)  # always a new, decoded image
        if "icc_profile" in im.info:
            out.info.setdefault("icc_profile", im.info["icc_profile"])
        if "transparency" in im.info:
            out.info.setdefault("transparency", im.info["transparency"])
        return out
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: {_one_line(e)}; pass --max-pixels N to raise the limit") from None
    except Exception as e:  # noqa: BLE001 - any failure decoding an untrusted file
        raise ImageError(f"{name}: cannot read image, the file is truncated or corrupt ({_one_line(e)})") from None
    finally:
        if close and im is not None:
            im.close()


def _frame_count(im: Image.Image, name: str) -> int:
    try:
        n = int(getattr(im, "n_frames", 1))
        if n > 1:
            im.seek(0)
        return n
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"{name}: cannot read image ({_one_line(e)})") from None


def _tile_rawmodes(im: Image.Image) -> list[str]:
    modes = []
    for tile in getattr(im, "tile", None) or []:
        args = tile[3]
        if isinstance(args, tuple):
            args = args[0] if args else None
        modes.append(args if isinstance(args, str) else "")
    return modes


def _sixteen_bit_kind(im: Image.Image, rawmodes: list[str]) -> str | None:
    """``"RGB"`` for 16-bit RGB(A)/RGBX data Pillow would truncate, ``"LA"`` for a 16-bit LA PNG."""
    if not rawmodes:
        return None
    if im.mode in ("RGB", "RGBA") and all(re.fullmatch(r"RGB[AX]?;16[LBN]", r) for r in rawmodes):
        return "RGB"
    if im.mode == "RGBA" and im.format == "PNG" and all(r == "LA;16B" for r in rawmodes):
        return "LA"
    return None


def _swap_byte_order(rawmode: str) -> str:
    """``RGB;16B`` ↔ ``RGB;16L``: unpacking with the wrong byte order yields the low bytes."""
    native = "L" if sys.byteorder == "little" else "B"
    order = rawmode[-1]
    if order == "N":
        order = native
    return rawmode[:-1] + ("B" if order == "L" else "L")


def _open_retiled(p: pathlib.Path, name: str, mode: str | None, fn: Callable[[str], str]) -> Image.Image:
    """Open ``p`` again with every tile's raw mode replaced by ``fn(rawmode)`` (and the mode by ``mode``)."""
    im = Image.open(p)
    tiles = []
    for tile in im.tile:
        args = tile[3]
        if isinstance(args, tuple):
            args = (fn(args[0]), *args[1:])
        else:
            args = fn(str(args))
        tiles.append(tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args))
    # Pillow's decoder tiles and mode are not public API: this is the one place that reaches into
    # them, to recover the 16-bit precision Pillow 13 drops (see the module docstring). Replacing it
    # with pypng / tifffile readers would add two more decoders for hostile files (and tifffile
    # needs imagecodecs for LZW), so the writers use those libraries and the reader stays Pillow.
    im.tile = tiles  # type: ignore[assignment]
    if mode is not None:
        if hasattr(im, "_mode"):
            im._mode = mode
        else:  # pragma: no cover - Pillow < 10.1
            im.mode = mode  # type: ignore[misc]
    return im


def _to_rgb_float(
    im: Image.Image,
    lo: Image.Image | None,
    name: str,
    icc: bytes | None,
    notes: list[str],
    *,
    sixteen_la: bool,
) -> np.ndarray:
    """Decoded Pillow image (+ optional low-byte image) → float32 RGB over white."""
    try:
        alpha: np.ndarray | None = None
        if sixteen_la:  # one int32 per pixel: L in the high 16 bits, A in the low 16
            v = np.asarray(im).astype(np.int64) & 0xFFFFFFFF
            grey = (v >> 16).astype(np.float32) / 65535.0
            alpha = (v & 0xFFFF).astype(np.float32) / 65535.0
            if icc:
                notes.append(f"{name}: ICC profile ignored for 16-bit data (colours taken as sRGB)")
            return _composite(np.repeat(grey[..., None], 3, axis=2), alpha)

        trns16 = None
        if lo is not None and "transparency" in im.info:  # a 16-bit tRNS colour: applied below
            im.info = dict(im.info)
            trns16 = im.info.pop("transparency")
        mode = im.mode
        if mode == "1":
            im, mode = im.convert("L"), "L"
        elif mode in ("P", "PA"):
            target = "RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB"
            im, mode = im.convert(target), target
        elif mode in ("La", "RGBa", "RGBX", "YCbCr", "HSV", "LAB"):
            target = {"La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}.get(mode, "RGB")
            im, mode = im.convert(target), target
        if mode in ("L", "RGB") and "transparency" in im.info:
            target = "LA" if mode == "L" else "RGBA"
            im, mode = im.convert(target), target

        if mode in ("LA", "RGBA"):
            a = np.asarray(im.getchannel("A")).astype(np.float32)
            if lo is not None:
                alpha = (a * 256.0 + np.asarray(lo.getchannel("A")).astype(np.float32)) / 65535.0
            else:
                alpha = a / 255.0
            im = im.convert(mode[:-1])
            if lo is not None:
                lo = lo.convert("RGB")
            mode = im.mode

        if mode.startswith("I;16"):
            v = np.asarray(im).astype(np.float32)
            if isinstance(im.info.get("transparency"), int):
                alpha = (np.asarray(im) != im.info["transparency"]).astype(np.float32)
            if icc:
                notes.append(f"{name}: ICC profile ignored for 16-bit data (colours taken as sRGB)")
            grey = v / 65535.0
            return _composite(np.repeat(grey[..., None], 3, axis=2), alpha)
        if mode == "I":
            v = np.asarray(im).astype(np.float64)
            if v.size and (v.min() < 0 or v.max() > 65535):
                lo_v, hi_v = float(v.min()), float(v.max())
                notes.append(
                    f"{name}: 32-bit integer image with values {lo_v:g}..{hi_v:g}, rescaled to [0, 1]"
                )
                grey = (v - lo_v) / (hi_v - lo_v) if hi_v > lo_v else np.zeros_like(v)
            else:
                grey = v / 65535.0
            return _composite(np.repeat(grey[..., None], 3, axis=2).astype(np.float32), alpha)
        if mode == "F":
            v = np.asarray(im).astype(np.float32)
            if not np.all(np.isfinite(v)):
                notes.append(f"{name}: non-finite values in a float image replaced by 0")
                v = np.nan_to_num(v, nan=0.0, posinf=1.0, neginf=0.0)
            if v.size and (v.min() < 0.0 or v.max() > 1.0):
                notes.append(f"{name}: float image values outside [0, 1] clipped")
                v = np.clip(v, 0.0, 1.0)
            return _composite(np.repeat(v[..., None], 3, axis=2), alpha)

        if icc and mode in ("L", "RGB", "CMYK"):
            if lo is not None:
                notes.append(f"{name}: ICC profile ignored for 16-bit data (colours taken as sRGB)")
            else:
                im = _apply_icc(im, icc, name, notes)
                mode = im.mode
        if mode == "CMYK":
            im, mode = im.convert("RGB"), "RGB"
        if mode == "L":
            grey = np.asarray(im).astype(np.float32) / 255.0
            return _composite(np.repeat(grey[..., None], 3, axis=2), alpha)
        if mode != "RGB":
            im = im.convert("RGB")
        rgb = np.asarray(im).astype(np.float32)
        if lo is not None:
            full = rgb * 256.0 + np.asarray(lo.convert("RGB")).astype(np.float32)
            if isinstance(trns16, tuple) and len(trns16) == 3 and alpha is None:
                alpha = np.any(full != np.asarray(trns16, np.float32), axis=2).astype(np.float32)
            rgb = full / 65535.0
        else:
            rgb = rgb / 255.0
        return _composite(rgb, alpha)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow conversion of an odd file
        raise ImageError(f"{name}: unsupported image (mode {im.mode}: {_one_line(e)})") from None


def _composite(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``rgb·a + white·(1 − a)``, float32, contiguous."""
    rgb = rgb.astype(np.float32, copy=False)
    if alpha is not None:
        a = alpha.astype(np.float32)[..., None]
        rgb = rgb * a + (1.0 - a)
    return np.ascontiguousarray(np.clip(rgb, 0.0, 1.0), dtype=np.float32)


def _apply_icc(im: Image.Image, icc: bytes, name: str, notes: list[str]) -> Image.Image:
    """Convert an 8-bit L/RGB/CMYK image from its embedded ICC profile to sRGB (RGB)."""
    try:
        import io

        from PIL import ImageCms
    except ImportError:
        notes.append(f"{name}: ICC profile ignored (Pillow built without ImageCms)")
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = ImageCms.getProfileDescription(src) or ""
        if "srgb" in desc.lower() and im.mode == "RGB":
            return im
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
        if out is None:  # pragma: no cover - only with inPlace=True
            return im
        return out
    except Exception as e:  # noqa: BLE001 - a broken or mismatched profile is not fatal
        notes.append(f"{name}: ICC profile could not be applied, ignored ({_one_line(e)})")
        return im


# --------------------------------------------------------------------------------------------
# saving


def check_output_path(path: os.PathLike[str] | str, *, overwrite: bool = False, probe: bool = True) -> pathlib.Path:
    """Check that an image can be written to ``path``, before any work is done.

    Checks the extension (case-insensitive, one of :data:`IMAGE_EXTENSIONS`), that ``path`` is not
    an existing file (unless ``overwrite``) or a directory, and that the nearest existing ancestor
    is a directory where a file can be created, by creating and removing one (a missing parent
    is created later by :func:`save_image`).

    Args:
      path: the output file.
      overwrite: allow replacing an existing file.
      probe: create and remove a file in the directory (False: the caller already probed it).

    Returns:
      ``path`` as a ``pathlib.Path``.

    Raises:
      ImageError: one line naming the path and what to do.
    """
    name = _name(path)
    p = pathlib.Path(path)
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        supported = ", ".join(sorted(IMAGE_EXTENSIONS))
        what = f"extension {p.suffix!r}" if p.suffix else "no extension"
        raise ImageError(f"{name}: unsupported output format ({what}); use one of {supported}")
    if p.is_dir():
        raise ImageError(f"{name}: is a directory; give an output file name")
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise ImageError(f"{name}: already exists; pass --overwrite to replace it")
    # Create and remove a file there: os.access says yes to root on read-only mounts and in /proc.
    if probe:
        files.probe_writable(p)
    return p


def to_uint8(image: Any, rounding: str = "round") -> np.ndarray:
    """Float image in ``[0, 1]`` → uint8 (values clipped; NaN → 0).

    Args:
      image: float array (numpy or jax) in ``[0, 1]``; uint8 is returned unchanged, uint16 is scaled.
      rounding: "round" — to nearest, halves up (MATLAB's ``uint8()``); "floor" — truncation (the
        Keras example's ``np.clip(x, 0, 255).astype("uint8")``).

    Returns:
      uint8 array of the same shape.
    """
    if rounding not in ROUNDINGS:
        raise ConfigError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a
    return _quantise(_as_unit_float(a), 255, rounding).astype(np.uint8)


def _as_unit_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float64) / 65535.0
    if a.dtype.kind != "f" and a.dtype.name != "bfloat16":
        raise ValueError(f"image must be a float array in [0, 1] or uint8, got dtype {a.dtype}")
    return np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)


def _quantise(x: np.ndarray, top: int, rounding: str) -> np.ndarray:
    y = np.clip(x, 0.0, 1.0) * top
    y = np.floor(y + 0.5) if rounding == "round" else np.floor(y)
    return np.clip(y, 0, top)


def save_image(
    path: os.PathLike[str] | str,
    image: Any,
    *,
    overwrite: bool = False,
    bit_depth: int = 8,
    rounding: str = "round",
) -> pathlib.Path:
    """Write an image; the format comes from the extension (see :data:`IMAGE_EXTENSIONS`).

    A missing parent directory is created. The data go to a temporary file in the destination
    directory which is then renamed over the destination (``os.replace``): if writing fails the
    temporary file is removed and an existing destination is left as it was. JPEG and WebP are
    written at quality 95.

    Args:
      path: output file; extension case-insensitive.
      image: H×W×3 (or H×W / H×W×1 greyscale) float array in ``[0, 1]`` (clipped) or uint8;
        numpy or jax.
      overwrite: replace an existing file; otherwise an existing file is an error.
      bit_depth: 8, or 16 for PNG and TIFF (16 bits per channel, written with pypng and tifffile
        since Pillow cannot write 48-bit RGB).
      rounding: "round" or "floor", as in :func:`to_uint8`.

    Returns:
      the written path.

    Raises:
      ImageError: bad extension, existing file without ``overwrite``, 16 bits for a format that
        cannot hold them, or the write failed.
    """
    if rounding not in ROUNDINGS:
        raise ConfigError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    p = check_output_path(path, overwrite=overwrite)
    fmt = IMAGE_EXTENSIONS[p.suffix.lower()]
    if bit_depth == 16 and fmt not in ("PNG", "TIFF"):
        raise ImageError(f"{_name(p)}: 16-bit output is supported for PNG and TIFF only; use .png or .tif")

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image must be H×W×3 or H×W, got shape {a.shape}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        warnings.warn(f"{_name(p)}: image has non-finite values, written as 0", NSTWarning, stacklevel=2)

    if bit_depth == 16:
        data16 = _quantise(_as_unit_float(a), 65535, rounding).astype(np.uint16)
        writer = _write_png16 if fmt == "PNG" else _write_tiff16

        def write(f: Any) -> None:
            writer(f, data16)
    else:
        pil = Image.fromarray(to_uint8(a, rounding))
        params: dict[str, Any] = {}
        if fmt == "JPEG":
            params = {"quality": _JPEG_QUALITY}
        elif fmt == "WEBP":
            params = {"quality": _WEBP_QUALITY}
        elif fmt == "TIFF":
            params = {"compression": "tiff_deflate"} if _has_libtiff() else {}

        def write(f: Any) -> None:
            pil.save(f, format=fmt, **params)

    return files.atomic_write(p, write, overwrite=overwrite)


def _has_libtiff() -> bool:
    try:
        from PIL import features

        return bool(features.check("libtiff"))
    except Exception:  # noqa: BLE001  # pragma: no cover
        return False


def write_file_atomic(path: os.PathLike[str] | str, data: bytes, *, overwrite: bool = False) -> pathlib.Path:
    """Write ``data`` to ``path`` through a temp file and a rename (for manifests, checkpoints).

    Args:
      path: destination; its directory is created.
      data: the bytes.
      overwrite: replace an existing file (else ImageError).

    Returns:
      The path written.
    """
    return files.atomic_write(pathlib.Path(path), lambda f: f.write(data), overwrite=overwrite)


def _write_png16(f: Any, a: np.ndarray) -> None:
    """16-bit greyscale (H×W) or RGB (H×W×3) PNG through pypng (Pillow cannot write 48-bit RGB)."""
    import png

    h, w = a.shape[:2]
    greyscale = a.ndim == 2
    png.Writer(w, h, greyscale=greyscale, bitdepth=16, compression=6).write_array(f, a.reshape(-1))


def _write_tiff16(f: Any, a: np.ndarray) -> None:
    """16-bit greyscale or RGB TIFF through tifffile, deflate-compressed (zlib, no extra codecs)."""
    import io

    import tifffile

    buf = io.BytesIO()  # (tifffile reads a file object's name; ours is an os.fdopen'd temp file)
    tifffile.imwrite(buf, a, photometric="minisblack" if a.ndim == 2 else "rgb", compression="zlib",
                     resolution=(72, 72), resolutionunit="INCH")
    f.write(buf.getvalue())


# --------------------------------------------------------------------------------------------
# geometry


def load_region_mask(path: os.PathLike[str] | str, regions: int, shape: tuple[int, int], *,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A region mask file as ``regions``×H×W weights summing to 1 at each pixel (spatial control).

    An indexed-colour (palette) image maps palette index k to region k; any other image is read
    as greyscale: with two regions black is the first and white the second (grey blends them);
    with more, the grey levels are split evenly (0 → region 0, 255 → the last).

    Args:
      path: the mask image.
      regions: the number of regions (one per style image).
      shape: (H, W) to resize to (nearest for indices, bilinear for grey).
      max_pixels: the largest accepted width × height, checked from the header before decoding
        (as :func:`load_image`).

    Returns:
      float32 array regions×H×W.
    """
    p = pathlib.Path(path)
    name = _name(p)
    if regions < 1:
        raise ConfigError("a region mask needs at least one style")
    image_size(p, max_pixels=max_pixels)  # exists, readable, within max_pixels: before decoding
    with _pillow_limit(max(int(max_pixels), 1)):  # a backstop for decoders that grow their canvas
        return _load_region_mask(p, name, regions, shape)


def _load_region_mask(p: pathlib.Path, name: str, regions: int, shape: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode == "P":
                idx = np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.NEAREST), np.int64)
                if idx.max() >= regions:
                    raise ImageError(f"{name}: palette index {int(idx.max())} but only {regions} styles; "
                                     "give one style per colour index")
                return np.stack([(idx == k).astype(np.float32) for k in range(regions)])
            grey = np.asarray(im.convert("L").resize((shape[1], shape[0]), Image.Resampling.BILINEAR),
                              np.float32) / 255.0
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except ImageError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure decoding an untrusted file
        raise ImageError(f"{name}: cannot read the mask ({_one_line(err)})") from None
    if regions == 1:
        return np.ones((1, *shape), np.float32)
    if regions == 2:
        return np.stack([1.0 - grey, grey]).astype(np.float32)
    idx = np.clip(np.rint(grey * (regions - 1)), 0, regions - 1).astype(np.int64)
    return np.stack([(idx == k).astype(np.float32) for k in range(regions)])


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
