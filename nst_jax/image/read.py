"""Reading image files from anywhere: header checks before decoding, 16-bit precision, transparency, ICC, region masks."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import sys
import warnings
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageOps

from nst_jax.errors import ConfigError, ImageError, NSTWarning
from nst_jax.image._common import _PIXEL_LIMIT_LOCK, DEFAULT_MAX_PIXELS, _name, _one_line

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
