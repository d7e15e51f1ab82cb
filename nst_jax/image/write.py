"""Writing images: the format from the extension, atomically, 8 or 16 bits per channel."""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Any

import numpy as np
from PIL import Image

from nst_jax import files
from nst_jax.errors import ConfigError, ImageError, NSTWarning
from nst_jax.image.common import JPEG_QUALITY, WEBP_QUALITY, IMAGE_EXTENSIONS, ROUNDINGS, path_text

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
    name = path_text(path)
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
        raise ImageError(f"{path_text(p)}: 16-bit output is supported for PNG and TIFF only; use .png or .tif")

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image must be H×W×3 or H×W, got shape {a.shape}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        warnings.warn(f"{path_text(p)}: image has non-finite values, written as 0", NSTWarning, stacklevel=2)

    if bit_depth == 16:
        data16 = _quantise(_as_unit_float(a), 65535, rounding).astype(np.uint16)
        writer = _write_png16 if fmt == "PNG" else _write_tiff16

        def write(f: Any) -> None:
            writer(f, data16)
    else:
        pil = Image.fromarray(to_uint8(a, rounding))
        params: dict[str, Any] = {}
        if fmt == "JPEG":
            params = {"quality": JPEG_QUALITY}
        elif fmt == "WEBP":
            params = {"quality": WEBP_QUALITY}
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
