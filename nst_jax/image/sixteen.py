"""16-bit PNG and TIFF samples, which Pillow's 8-bit RGB modes would truncate.

Pillow decodes 16-bit greyscale (mode ``I;16``) but gives 16-bit RGB(A) and LA files as 8-bit
modes. Those files are decoded here with libraries that keep every bit:

* PNG: ``imagecodecs.png_decode`` (libpng, C) when the optional ``imagecodecs`` package is
  installed (``pip install "nst-jax[images]"``); otherwise pypng (pure Python: exact, but about
  7 s a megapixel with Paeth-filtered rows here). Without imagecodecs, a file over
  :data:`PYPNG_MAX_PIXELS` is loaded at 8-bit precision with a note rather than taking minutes.
  The header (size, colour type, tRNS) is read with pypng in either case.
* TIFF: tifffile, which decodes uncompressed, deflate and PackBits data itself (LZW and JPEG need
  imagecodecs; without it the file is loaded at 8-bit precision with a note).

Files from strangers: the caller has already checked the size Pillow read from the header against
the pixel limit; each decoder's own header must declare the same size, shape and dtype before a
byte of pixel data is decoded. The PNG's compressed stream is first inflated with a bound (the
exact number of bytes its declared size needs), so a decompression bomb is refused before pypng,
which inflates one whole IDAT chunk at a time, sees it. TIFF has no references out of the file
that reading the first page follows.
"""

from __future__ import annotations

import pathlib
import zlib
from typing import Any, NamedTuple, Optional

import numpy as np

from nst_jax.errors import ImageError
from nst_jax.image.common import one_line

__all__ = ["PYPNG_MAX_PIXELS", "Fallback", "Samples", "orient", "read_png16", "read_tiff16", "sixteen_bit_format", "to_rgb"]

PYPNG_MAX_PIXELS = 4_000_000  # ~30 s of pure-Python decoding at worst (all rows Paeth-filtered)

# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class Samples(NamedTuple):
    """Decoded 16-bit samples: ``values`` H×W×C uint16 (C = 2: grey + alpha, 3: RGB, 4: RGBA),
    ``alpha`` whether the last channel is alpha, ``key`` a PNG tRNS colour (pixels equal to it are
    transparent) or None."""

    values: np.ndarray
    alpha: bool
    key: Optional[tuple[int, ...]]


class Fallback(Exception):
    """This file's 16-bit samples cannot be decoded here; the reason is the note for the user."""


def sixteen_bit_format(p: pathlib.Path, fmt: Optional[str]) -> Optional[str]:
    """``"PNG"`` or ``"TIFF"`` when ``p`` holds 16-bit colour (or grey + alpha) samples that this
    module decodes; None for anything else (Pillow then decodes it).

    Args:
      p: the file (already identified by Pillow as ``fmt``).
      fmt: Pillow's format name.

    Returns:
      the format to decode here, or None.
    """
    try:
        if fmt == "PNG":
            import png

            with open(p, "rb") as f:
                r = png.Reader(file=f)
                r.preamble()
                return "PNG" if r.bitdepth == 16 and r.color_type in (2, 4, 6) else None
        if fmt == "TIFF":
            import tifffile

            with tifffile.TiffFile(p) as tf:
                page = tf.pages.first
                ok = (page.bitspersample == 16 and int(page.photometric) == 2 and page.samplesperpixel in (3, 4)
                      and int(page.sampleformat) == 1)
            return "TIFF" if ok else None
    except Exception:  # noqa: BLE001 - Pillow parsed the header: let it decode (and report) the file
        return None
    return None


def _inflated_size(width: int, height: int, planes: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines a 16-bit PNG of this size needs (a filter byte a row)."""
    if not interlaced:
        return height * (1 + width * planes * 2)
    total = 0
    for xs, ys, dx, dy in _ADAM7:
        pw = (width - xs + dx - 1) // dx if width > xs else 0
        ph = (height - ys + dy - 1) // dy if height > ys else 0
        if pw and ph:
            total += ph * (1 + pw * planes * 2)
    return total


def _check_stream(p: pathlib.Path, name: str, need: int) -> None:
    """Inflate the IDAT stream with a bound: refuse one that inflates to more than ``need`` bytes."""
    import png

    d = zlib.decompressobj()
    got = 0
    with open(p, "rb") as f:
        for kind, data in png.Reader(file=f).chunks():
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                continue
            buf = data
            while buf:
                got += len(d.decompress(buf, need + 1 - got))
                if got > need:
                    raise ImageError(f"{name}: the PNG's pixel data inflate to more than its declared size "
                                     f"needs ({need:,} bytes): corrupt or a decompression bomb")
                buf = d.unconsumed_tail
    if got < need:
        raise ImageError(f"{name}: cannot read image, the file is truncated or corrupt "
                         f"(pixel data end after {got:,} of {need:,} bytes)")


def read_png16(p: pathlib.Path, name: str, size: tuple[int, int], *, decoder: str = "auto") -> Samples:
    """Decode a 16-bit RGB, RGBA or LA PNG.

    Args:
      p: the file.
      name: the file's name in messages.
      size: (width, height) from Pillow's header read (already checked against the pixel limit).
      decoder: "auto" (imagecodecs if installed, else pypng), "imagecodecs" or "pypng".

    Returns:
      the samples.

    Raises:
      ImageError: a header that disagrees with Pillow's, a bomb, or corrupt data.
      Fallback: no imagecodecs and over :data:`PYPNG_MAX_PIXELS`.
    """
    import png

    try:
        with open(p, "rb") as f:
            r = png.Reader(file=f)
            r.preamble()
            w, h, planes, interlaced = r.width, r.height, r.planes, bool(r.interlace)
            key = getattr(r, "transparent", None)
    except Exception as e:  # noqa: BLE001 - untrusted header
        raise ImageError(f"{name}: cannot read image ({one_line(e)})") from None
    if (w, h) != tuple(size) or planes not in (2, 3, 4):
        raise ImageError(f"{name}: the PNG header disagrees with itself ({w}x{h}, {planes} channels)")
    try:
        _check_stream(p, name, _inflated_size(w, h, planes, interlaced))
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged chunk or stream
        raise ImageError(f"{name}: cannot read image, the file is truncated or corrupt ({one_line(e)})") from None
    codecs: Any = None
    if decoder in ("auto", "imagecodecs"):
        try:
            import imagecodecs as codecs
        except ImportError:
            if decoder == "imagecodecs":
                raise
    try:
        if codecs is not None:
            values = np.asarray(codecs.png_decode(p.read_bytes()))
        else:
            if w * h > PYPNG_MAX_PIXELS:
                raise Fallback(f"16-bit data loaded at 8-bit precision: over {PYPNG_MAX_PIXELS:,} pixels the "
                               'pure-Python PNG decoder is too slow; pip install "nst-jax[images]" for full precision')
            values = np.empty((h, w * planes), np.uint16)
            n = 0
            with open(p, "rb") as f:
                _, _, rows, _ = png.Reader(file=f).read()
                for i, row in enumerate(rows):
                    if i >= h:
                        raise ValueError("more rows than the header declares")
                    values[i] = row
                    n = i + 1
            if n != h:
                raise ValueError(f"{n} rows of {h}")
    except (Fallback, ImageError):
        raise
    except Exception as e:  # noqa: BLE001 - any failure decoding an untrusted file
        raise ImageError(f"{name}: cannot read image, the file is truncated or corrupt ({one_line(e)})") from None
    values = values.reshape(h, w, -1)
    if key is not None and values.shape[2] == planes + 1:
        values = values[..., :planes]  # imagecodecs turns tRNS into alpha; the key is applied in to_rgb
    if values.dtype != np.uint16 or values.shape[2] != planes:
        raise ImageError(f"{name}: decoded {values.shape} {values.dtype}, not the header's {h}x{w}x{planes} 16-bit")
    if key is not None and planes in (2, 4):
        key = None  # tRNS is not allowed with an alpha channel; ignore it as libpng does
    return Samples(values, alpha=planes in (2, 4), key=None if key is None else tuple(int(k) for k in key))


def read_tiff16(p: pathlib.Path, name: str, size: tuple[int, int]) -> Samples:
    """Decode the first page of a 16-bit RGB or RGBA TIFF.

    Args:
      p: the file.
      name: the file's name in messages.
      size: (width, height) from Pillow's header read (already checked against the pixel limit).

    Returns:
      the samples.

    Raises:
      ImageError: a page that disagrees with Pillow's header, or corrupt data.
      Fallback: a compression tifffile needs imagecodecs for, or an associated (premultiplied) alpha.
    """
    import tifffile

    w, h = size
    try:
        with tifffile.TiffFile(p) as tf:
            page = tf.pages.first
            spp = int(page.samplesperpixel)
            extra = tuple(int(e) for e in (page.extrasamples or ()))
            if spp == 4 and extra not in ((0,), (2,)):
                raise Fallback("16-bit data loaded at 8-bit precision (premultiplied alpha)")
            # the declared layout, before any pixel data is read
            if (page.imagelength, page.imagewidth) != (h, w) or page.dtype != np.uint16:
                raise ImageError(f"{name}: the TIFF page is {page.imagewidth}x{page.imagelength} "
                                 f"{page.dtype}, not the header's {w}x{h} 16-bit")
            try:
                values = np.asarray(page.asarray())
            except (KeyError, ValueError) as e:
                if "imagecodecs" in str(e):
                    raise Fallback("16-bit data loaded at 8-bit precision (this compression needs "
                                   'imagecodecs: pip install "nst-jax[images]")') from None
                raise
    except (Fallback, ImageError):
        raise
    except Exception as e:  # noqa: BLE001 - any failure decoding an untrusted file
        raise ImageError(f"{name}: cannot read image, the file is truncated or corrupt ({one_line(e)})") from None
    if values.shape != (h, w, spp):
        raise ImageError(f"{name}: decoded {values.shape}, not the header's {h}x{w}x{spp}")
    return Samples(values.astype(np.uint16, copy=False), alpha=(spp == 4 and extra == (2,)), key=None)


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an H×W×C array, as ``PIL.ImageOps.exif_transpose`` does.

    Args:
      a: the stored pixels.
      orientation: the EXIF tag 0x0112 value; anything outside 2..8 leaves ``a`` as it is.

    Returns:
      the pixels as displayed.
    """
    t = np.swapaxes
    return {
        2: lambda: a[:, ::-1],  # mirror left-right
        3: lambda: a[::-1, ::-1],  # 180°
        4: lambda: a[::-1, :],  # mirror top-bottom
        5: lambda: t(a, 0, 1),  # transpose
        6: lambda: np.rot90(a, k=-1),  # 90° clockwise
        7: lambda: t(a, 0, 1)[::-1, ::-1],  # transverse
        8: lambda: np.rot90(a, k=1),  # 90° counter-clockwise
    }.get(int(orientation), lambda: a)()


def to_rgb(s: Samples) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """float32 RGB in [0, 1] and alpha (or None) from 16-bit samples (grey replicated to RGB).

    Args:
      s: the samples.

    Returns:
      (H×W×3 RGB, H×W alpha or None).
    """
    v = s.values
    colour = v[..., :1] if v.shape[2] == 2 else v[..., :3]
    rgb = np.broadcast_to(colour.astype(np.float32) / 65535.0, (*v.shape[:2], 3))
    alpha = v[..., -1].astype(np.float32) / 65535.0 if s.alpha else None
    if s.key is not None:  # tRNS: the one colour that is transparent
        key = np.asarray(s.key, np.uint16)
        alpha = np.any(colour != key[: colour.shape[2]], axis=2).astype(np.float32)
    return np.ascontiguousarray(rgb), alpha
