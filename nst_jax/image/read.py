"""Reading image files from anywhere: header checks before decoding, 16-bit precision, transparency, ICC, region masks."""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat
import warnings
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageOps

from nst_jax.errors import ConfigError, ImageError, NSTWarning
from nst_jax.image import sixteen
from nst_jax.image.common import PIXEL_LIMIT_LOCK, DEFAULT_MAX_PIXELS, path_text, one_line

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
    name = path_text(path)
    p = pathlib.Path(path)
    _check_readable(p, name)
    with _pillow_limit(None):  # _load sets the limit itself once the header is checked
        return _load(p, name, max_pixels)


@contextlib.contextmanager
def _pillow_limit(limit: int | None) -> Iterator[None]:
    """Pillow's decompression-bomb limit replaced by ours (``None``: off) for one load, under a lock,
    with its warning silenced (our own check, on the header, gives the one-line error)."""
    with PIXEL_LIMIT_LOCK:
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
    name = path_text(path)
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
        raise ImageError(f"{name}: cannot access file ({one_line(e)})") from None
    if p.is_dir():
        raise ImageError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block the read or never end
        raise ImageError(f"{name}: not a regular file (a pipe, socket or device); give an image file")
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
        if im.format == "TIFF":
            _check_tiff_layout(im, name, w, h)
        # A backstop for decoders that grow their canvas while decoding (GIF, TIFF tiles).
        Image.MAX_IMAGE_PIXELS = max(int(max_pixels), 1)
        fmt = im.format
        n_frames = _frame_count(im, name)
        rgb = _load_sixteen(p, name, im, notes)
        if rgb is None:
            hi = _decode(lambda: im, name, close=False)
            rgb = _to_rgb_float(hi, name, hi.info.get("icc_profile"), notes)
    finally:
        im.close()
    if n_frames > 1 and fmt != "MPO":
        notes.append(f"{name}: animated or multi-page image, using the first frame")
    for note in notes:
        warnings.warn(note, NSTWarning, stacklevel=3)
    return rgb


def _load_sixteen(p: pathlib.Path, name: str, im: Image.Image, notes: list[str]) -> np.ndarray | None:
    """A 16-bit RGB(A)/LA PNG or TIFF through :mod:`.sixteen`, EXIF-oriented and over white; None for
    any other file, or (with a note) one whose 16 bits cannot be decoded here: Pillow then reads it."""
    kind = sixteen.sixteen_bit_format(p, im.format)
    if kind is None:
        return None
    try:
        read = sixteen.read_png16 if kind == "PNG" else sixteen.read_tiff16
        samples = read(p, name, im.size)
    except sixteen.Fallback as why:
        notes.append(f"{name}: {why}")
        return None
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block: as Pillow's exif_transpose, ignore it
        orientation = 1
    if im.info.get("icc_profile"):
        notes.append(f"{name}: ICC profile ignored for 16-bit data (colours taken as sRGB)")
    rgb, alpha = sixteen.to_rgb(samples)
    if alpha is not None:
        alpha = sixteen.orient(alpha[..., None], orientation)[..., 0]
    return _composite(sixteen.orient(rgb, orientation), alpha)


def _check_tiff_layout(im: Image.Image, name: str, w: int, h: int) -> None:
    """Refuse a TIFF whose first page declares tiles or strips larger than its image.

    Decoders allocate a whole tile (or strip) before decoding it, so a 1.5 MB file declaring a
    16384x16384 tile for a small image costs gigabytes. The pixel limit does not see this: the
    tile, not the image, is large. Tiles are multiples of 16 (TIFF 6.0), so a tile may pass the
    image's edge by up to 15 pixels; a strip taller than the image (RowsPerStrip 2**32-1 is how
    writers say "one strip") is read as the image's height by every decoder, so only tiles and
    depths are refused.
    """
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return

    def tag(code: int, default: int) -> int:
        try:
            value = tags.get(code, default)
            return int(value[0] if isinstance(value, tuple) else value)
        except (TypeError, ValueError, IndexError):
            return -1

    tile_w, tile_h, tile_d, depth = tag(322, 0), tag(323, 0), tag(32998, 1), tag(32997, 1)
    limit_w, limit_h = -(-w // 16) * 16, -(-h // 16) * 16
    if (tile_w or tile_h) and not (0 < tile_w <= limit_w and 0 < tile_h <= limit_h):
        raise ImageError(f"{name}: TIFF tiles of {tile_w}x{tile_h} for a {w}x{h} image; refused (a damaged or "
                         "hostile file: a decoder would allocate the whole tile)")
    if tile_d != 1 or depth != 1:
        raise ImageError(f"{name}: a volumetric TIFF (depth {depth}, tile depth {tile_d}); only 2-D images are read")


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
        raise ImageError(f"{name}: {one_line(e)}; pass --max-pixels N to raise the limit") from None
    except Exception as e:  # noqa: BLE001 - any failure parsing an untrusted header
        raise ImageError(f"{name}: cannot read image ({one_line(e)})") from None


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
        raise ImageError(f"{name}: {one_line(e)}; pass --max-pixels N to raise the limit") from None
    except Exception as e:  # noqa: BLE001 - any failure decoding an untrusted file
        raise ImageError(f"{name}: cannot read image, the file is truncated or corrupt ({one_line(e)})") from None
    finally:
        if close and im is not None:
            im.close()


def _frame_count(im: Image.Image, name: str) -> int:
    """2 when the file holds more than one frame, else 1 (only the warning needs to know).

    ``is_animated`` looks at the next frame's offset alone; ``n_frames`` walks every page (a TIFF
    of 100,000 one-pixel pages took 107 s, growing quadratically), so it is not asked.
    """
    try:
        return 2 if bool(getattr(im, "is_animated", False)) else 1
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"{name}: cannot read image ({one_line(e)})") from None


def _to_rgb_float(im: Image.Image, name: str, icc: bytes | None, notes: list[str]) -> np.ndarray:
    """Decoded Pillow image → float32 RGB over white."""
    try:
        alpha: np.ndarray | None = None
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
            alpha = np.asarray(im.getchannel("A")).astype(np.float32) / 255.0
            im = im.convert(mode[:-1])
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
            im = _apply_icc(im, icc, name, notes)
            mode = im.mode
        if mode == "CMYK":
            im, mode = im.convert("RGB"), "RGB"
        if mode == "L":
            grey = np.asarray(im).astype(np.float32) / 255.0
            return _composite(np.repeat(grey[..., None], 3, axis=2), alpha)
        if mode != "RGB":
            im = im.convert("RGB")
        rgb = np.asarray(im).astype(np.float32) / 255.0
        return _composite(rgb, alpha)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow conversion of an odd file
        raise ImageError(f"{name}: unsupported image (mode {im.mode}: {one_line(e)})") from None


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
        notes.append(f"{name}: ICC profile could not be applied, ignored ({one_line(e)})")
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
    name = path_text(p)
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
        raise ImageError(f"{name}: cannot read the mask ({one_line(err)})") from None
    if regions == 1:
        return np.ones((1, *shape), np.float32)
    if regions == 2:
        return np.stack([1.0 - grey, grey]).astype(np.float32)
    idx = np.clip(np.rint(grey * (regions - 1)), 0, regions - 1).astype(np.int64)
    return np.stack([(idx == k).astype(np.float32) for k in range(regions)])
