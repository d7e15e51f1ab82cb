"""Tests for nst_jax.image: loading every accepted kind of file, refusing broken ones, saving
atomically, geometry, and the colour transforms. Images are generated in tmp_path."""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
import zlib

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from nst_jax.image import color, figures
from nst_jax import image as nim
from nst_jax.errors import ConfigError, ImageError, NSTWarning

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------
# an independent PNG encoder (all five filter types, 8/16 bit), so 16-bit decoding is checked
# against bytes this module did not write


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png_bytes(arr: np.ndarray, bit_depth: int, *, size: tuple[int, int] | None = None) -> bytes:
    """PNG of an H×W×C integer array (C = 1, 2, 3, 4), rows filtered with types 0..4 in turn."""
    h, w, c = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    dt = ">u2" if bit_depth == 16 else "u1"
    raw = np.ascontiguousarray(arr, dtype=dt).view(np.uint8).reshape(h, -1).astype(np.int64)
    bpp = c * bit_depth // 8
    rows = []
    for y in range(h):
        x = raw[y]
        up = raw[y - 1] if y else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int64), x[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        ftype = y % 5
        pred = [np.zeros_like(x), left, up, (left + up) // 2, _paeth(left, up, upleft)][ftype]
        rows.append(bytes([ftype]) + ((x - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ww, hh = size or (w, h)
    ihdr = struct.pack(">IIBBBBB", ww, hh, bit_depth, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def over_white(rgb: np.ndarray, a: np.ndarray) -> np.ndarray:
    return rgb * a[..., None] + (1.0 - a[..., None])


def grey3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


# ---------------------------------------------------------------------------------------------
# accepted kinds: each builder writes a file and returns (path, expected float RGB, atol, warns)


def case_rgb(tmp):
    a = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp / "rgb.png")
    return tmp / "rgb.png", a / 255.0, 1e-6, False


def case_grey_l(tmp):
    a = RNG.integers(0, 256, (6, 4), dtype=np.uint8)
    Image.fromarray(a).save(tmp / "grey.png")
    return tmp / "grey.png", grey3(a / 255.0), 1e-6, False


def case_bilevel(tmp):
    a = RNG.integers(0, 2, (6, 9)).astype(bool)
    Image.fromarray(a).save(tmp / "bw.png")
    return tmp / "bw.png", grey3(a.astype(float)), 1e-6, False


def case_i16_png(tmp):
    a = RNG.integers(0, 65536, (5, 6, 1))
    (tmp / "grey16.png").write_bytes(png_bytes(a, 16))
    return tmp / "grey16.png", grey3(a[..., 0] / 65535.0), 1e-6, False


def case_palette(tmp):
    idx = RNG.integers(0, 4, (5, 6), dtype=np.uint8)
    pal = np.array([[255, 0, 0], [0, 255, 0], [10, 20, 30], [200, 100, 50]], np.uint8)
    im = Image.frombytes("P", (6, 5), idx.tobytes())
    im.putpalette(pal.reshape(-1).tolist())
    im.save(tmp / "pal.png")
    return tmp / "pal.png", pal[idx] / 255.0, 1e-6, False


def case_palette_transparent(tmp):
    idx = RNG.integers(0, 4, (5, 6), dtype=np.uint8)
    idx[0, 0] = 2
    pal = np.array([[255, 0, 0], [0, 255, 0], [10, 20, 30], [200, 100, 50]], np.uint8)
    im = Image.frombytes("P", (6, 5), idx.tobytes())
    im.putpalette(pal.reshape(-1).tolist())
    im.save(tmp / "palt.png", transparency=2)
    expected = pal[idx] / 255.0
    expected[idx == 2] = 1.0  # the transparent index shows the white background
    return tmp / "palt.png", expected, 1e-6, False


def case_rgba_half_red(tmp):
    a = RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    a[0, 0] = (255, 0, 0, 128)  # half-transparent red over white
    Image.fromarray(a, "RGBA").save(tmp / "rgba.png")
    expected = over_white(a[..., :3] / 255.0, a[..., 3] / 255.0)
    np.testing.assert_allclose(expected[0, 0], [1.0, 127 / 255, 127 / 255], atol=1e-12)
    return tmp / "rgba.png", expected, 1e-6, False


def case_la(tmp):
    a = RNG.integers(0, 256, (4, 5, 2), dtype=np.uint8)
    Image.fromarray(a, "LA").save(tmp / "la.png")
    return tmp / "la.png", grey3(over_white(grey3(a[..., 0] / 255.0), a[..., 1] / 255.0)[..., 0]), 1e-6, False


def case_l_trns(tmp):
    a = RNG.integers(0, 256, (4, 5), dtype=np.uint8)
    a[1, 1] = 7
    Image.fromarray(a).save(tmp / "ltrns.png", transparency=7)
    e = grey3(a / 255.0)
    e[a == 7] = 1.0
    return tmp / "ltrns.png", e, 1e-6, False


def _cmyk_expected(c: np.ndarray) -> np.ndarray:
    c = c / 255.0
    return (1.0 - c[..., :3]) * (1.0 - c[..., 3:4])


def case_cmyk_tiff(tmp):
    c = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    Image.frombytes("CMYK", (5, 6), c.tobytes()).save(tmp / "cmyk.tif")
    return tmp / "cmyk.tif", _cmyk_expected(c), 1.01 / 255, False


def case_cmyk_jpeg(tmp):
    c = np.zeros((16, 16, 4), np.uint8)
    c[:] = (30, 100, 200, 40)  # flat, so JPEG is near lossless
    Image.frombytes("CMYK", (16, 16), c.tobytes()).save(tmp / "cmyk.jpg", quality=100)
    return tmp / "cmyk.jpg", _cmyk_expected(c), 4 / 255, False


def case_rgb16_png(tmp):
    a = RNG.integers(0, 65536, (7, 6, 3))
    (tmp / "rgb16.png").write_bytes(png_bytes(a, 16))
    return tmp / "rgb16.png", a / 65535.0, 1e-6, False


def case_rgba16_png(tmp):
    a = RNG.integers(0, 65536, (5, 6, 4))
    (tmp / "rgba16.png").write_bytes(png_bytes(a, 16))
    return tmp / "rgba16.png", over_white(a[..., :3] / 65535.0, a[..., 3] / 65535.0), 1e-6, False


def case_la16_png(tmp):
    a = RNG.integers(0, 65536, (5, 6, 2))
    (tmp / "la16.png").write_bytes(png_bytes(a, 16))
    g = over_white(grey3(a[..., 0] / 65535.0), a[..., 1] / 65535.0)
    return tmp / "la16.png", g, 1e-6, False


def case_float_tiff(tmp):
    a = RNG.random((4, 6)).astype(np.float32)
    Image.fromarray(a).save(tmp / "f.tif")
    return tmp / "f.tif", grey3(a), 1e-6, False


def case_exif_rotated_jpeg(tmp):
    # 32 rows × 48 columns of flat 16×16 blocks; orientation 6 = "rotate 90° clockwise to display"
    colours = np.array(
        [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[255, 255, 0], [0, 255, 255], [255, 0, 255]]], np.uint8
    )
    a = np.repeat(np.repeat(colours, 16, axis=0), 16, axis=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp / "rot.jpg", exif=exif, quality=100, subsampling=0)
    expected = np.rot90(a, k=-1) / 255.0  # clockwise
    assert expected.shape == (48, 32, 3)
    return tmp / "rot.jpg", expected, 6 / 255, False


def _frames(n: int) -> list[np.ndarray]:
    out = []
    for k in range(n):
        f = np.zeros((6, 8, 3), np.uint8)
        f[:, : 2 + 2 * k] = (255, 0, 0)
        f[3:, :] = (0, 0, 255) if k == 0 else (0, 255, 0)
        out.append(f)
    return out


def case_animated_gif(tmp):
    frames = _frames(3)
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(tmp / "anim.gif", save_all=True, append_images=ims[1:], duration=100, loop=0)
    return tmp / "anim.gif", frames[0] / 255.0, 1e-6, True


def case_animated_webp(tmp):
    frames = _frames(2)
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(tmp / "anim.webp", save_all=True, append_images=ims[1:], lossless=True, duration=100)
    return tmp / "anim.webp", frames[0] / 255.0, 1e-6, True


def case_apng(tmp):
    frames = _frames(2)
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(tmp / "anim.png", save_all=True, append_images=ims[1:], duration=100)
    return tmp / "anim.png", frames[0] / 255.0, 1e-6, True


def case_srgb_icc(tmp):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    a = RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp / "srgb.png", icc_profile=icc)
    return tmp / "srgb.png", a / 255.0, 1.01 / 255, False


CASES = [
    case_rgb,
    case_grey_l,
    case_bilevel,
    case_i16_png,
    case_palette,
    case_palette_transparent,
    case_rgba_half_red,
    case_la,
    case_l_trns,
    case_cmyk_tiff,
    case_cmyk_jpeg,
    case_rgb16_png,
    case_rgba16_png,
    case_la16_png,
    case_float_tiff,
    case_exif_rotated_jpeg,
    case_animated_gif,
    case_animated_webp,
    case_apng,
    case_srgb_icc,
]


@pytest.mark.parametrize("build", CASES, ids=[c.__name__[5:] for c in CASES])
def test_load_accepted_kinds(tmp_path, build):
    path, expected, atol, warns = build(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = nim.load_image(path)
    ours = [w for w in caught if issubclass(w.category, NSTWarning)]
    assert got.dtype == np.float32
    assert got.ndim == 3 and got.shape[2] == 3
    assert got.shape == expected.shape
    assert got.min() >= 0.0 and got.max() <= 1.0
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    if warns:
        assert len(ours) == 1
        msg = str(ours[0].message)
        assert path.name in msg and "animated or multi-page image, using the first frame" in msg
    else:
        assert not ours, [str(w.message) for w in ours]
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_sixteen_bit_precision_beyond_eight_bits(tmp_path):
    # values that differ only in the low byte must stay distinct
    v = np.array([[0x1200, 0x1201, 0x12FF], [0x1280, 0xFFFF, 0x0001]])
    rgb = np.stack([v, v[::-1], v], axis=-1)
    (tmp_path / "g.png").write_bytes(png_bytes(v[..., None], 16))
    (tmp_path / "c.png").write_bytes(png_bytes(rgb, 16))
    g = nim.load_image(tmp_path / "g.png")[..., 0]
    c = nim.load_image(tmp_path / "c.png")
    assert len(np.unique(g[0])) == 3 and len(np.unique(c[0, :, 0])) == 3
    np.testing.assert_allclose(g * 65535, v, atol=2e-3)
    np.testing.assert_allclose(c * 65535, rgb, atol=2e-3)


def tiff16_bytes(a: np.ndarray, byte_order: str, compression: int, predictor: int) -> bytes:
    """An RGB 16-bit TIFF (one strip), little ("<") or big (">") endian, raw (1) or deflate (8)."""
    h, w, _ = a.shape
    pix = np.ascontiguousarray(a, dtype=byte_order + "u2")
    if predictor == 2:  # horizontal differencing
        d = pix.astype(np.int64)
        d[:, 1:] = (pix[:, 1:].astype(np.int64) - pix[:, :-1]) % 65536
        pix = d.astype(byte_order + "u2")
    data = pix.tobytes()
    if compression == 8:
        data = zlib.compress(data)
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, 8), (259, 3, 1, compression), (262, 3, 1, 2),
               (273, 4, 1, 0), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1),
               (317, 3, 1, predictor)]
    data_off = 16 + 2 + 12 * len(entries) + 4
    ifd = struct.pack(byte_order + "H", len(entries))
    for tag, typ, count, value in entries:
        value = data_off if tag == 273 else value
        short = typ == 3 and count == 1
        field = struct.pack(byte_order + "HH", value, 0) if short else struct.pack(byte_order + "I", value)
        ifd += struct.pack(byte_order + "HHI", tag, typ, count) + field
    ifd += struct.pack(byte_order + "I", 0)
    magic = b"II*\x00" if byte_order == "<" else b"MM\x00*"
    head = magic + struct.pack(byte_order + "I", 16) + struct.pack(byte_order + "HHHH", 16, 16, 16, 0)
    return head + ifd + data


@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("compression,predictor", [(1, 1), (8, 1), (8, 2)])
def test_sixteen_bit_rgb_tiff_keeps_precision(tmp_path, byte_order, compression, predictor):
    a = RNG.integers(0, 65536, (6, 9, 3))
    path = tmp_path / "rgb16.tif"
    path.write_bytes(tiff16_bytes(a, byte_order, compression, predictor))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = nim.load_image(path)
    np.testing.assert_allclose(got, a / 65535.0, atol=1e-6)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _after_ihdr(png: bytes, *chunks: bytes) -> bytes:
    return png[:33] + b"".join(chunks) + png[33:]  # 8-byte signature + 25-byte IHDR chunk


@pytest.mark.parametrize("decoder", ["pypng", "imagecodecs"])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_sixteen_bit_png_decoders_equal_the_independent_encoder(tmp_path, decoder, channels):
    from nst_jax.image import sixteen

    a = RNG.integers(0, 65536, (11, 13, channels))
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(a, 16))  # every filter type, rows 0..4
    got = sixteen.read_png16(path, "x.png", (13, 11), decoder=decoder)
    assert got.values.dtype == np.uint16 and got.alpha == (channels in (2, 4)) and got.key is None
    np.testing.assert_array_equal(got.values, a)


def test_sixteen_bit_png_trns_key_and_exif_orientation(tmp_path):
    a = RNG.integers(0, 65536, (6, 10, 3))
    key = tuple(int(v) for v in a[2, 7])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "k.png"
    path.write_bytes(_after_ihdr(png_bytes(a, 16), _png_chunk(b"tRNS", struct.pack(">HHH", *key)),
                                 _png_chunk(b"eXIf", exif.tobytes()[6:])))  # eXIf holds the TIFF part
    expected = a / 65535.0
    expected[2, 7] = 1.0  # the key colour is transparent: white
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = nim.load_image(path)
    np.testing.assert_allclose(got, np.rot90(expected, k=-1), atol=1e-6)


def test_orient_matches_pillows_exif_transpose(tmp_path):
    from nst_jax.image import sixteen

    a = RNG.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(a).save(tmp_path / "o.png", exif=exif)
        with Image.open(tmp_path / "o.png") as im:
            want = np.asarray(ImageOps.exif_transpose(im))
        np.testing.assert_array_equal(sixteen.orient(a, orientation), want, err_msg=str(orientation))


def test_sixteen_bit_png_bomb_is_refused_before_inflating_it(tmp_path):
    import resource

    # a 4x4 RGB 16-bit image needs 4·(1 + 24) = 100 bytes of scanlines; this stream inflates to 400 MB
    ihdr = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)
    z, zeros = zlib.compressobj(9), bytes(1 << 20)
    idat = b"".join(z.compress(zeros) for _ in range(400)) + z.flush()  # never 400 MB in this process
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="decompression bomb"):
        nim.load_image(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: far below 400 MB


def test_sixteen_bit_png_over_the_pure_python_limit_falls_back_with_a_note(tmp_path, monkeypatch):
    from nst_jax.image import sixteen

    a = RNG.integers(0, 65536, (4, 5, 3))
    (tmp_path / "x.png").write_bytes(png_bytes(a, 16))
    monkeypatch.setattr(sixteen, "PYPNG_MAX_PIXELS", 19)
    with pytest.raises(sixteen.Fallback, match="8-bit precision.*nst-jax\\[images\\]"):
        sixteen.read_png16(tmp_path / "x.png", "x.png", (5, 4), decoder="pypng")
    monkeypatch.setattr(sixteen, "PYPNG_MAX_PIXELS", 20)
    np.testing.assert_array_equal(sixteen.read_png16(tmp_path / "x.png", "x.png", (5, 4), decoder="pypng").values, a)


@pytest.mark.parametrize("compression", ["lzw", "zlib", None])
def test_sixteen_bit_rgba_tiff_written_by_tifffile_keeps_precision(tmp_path, compression):
    import tifffile

    a = RNG.integers(0, 65536, (6, 9, 4)).astype(np.uint16)
    path = tmp_path / "rgba16.tif"
    tifffile.imwrite(path, a, photometric="rgb", extrasamples=["unassalpha"], compression=compression)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = nim.load_image(path)
    np.testing.assert_allclose(got, over_white(a[..., :3] / 65535.0, a[..., 3] / 65535.0), atol=1e-6)


def test_sixteen_bit_tiff_page_that_disagrees_with_the_header_is_refused(tmp_path):
    from nst_jax.image import sixteen

    a = RNG.integers(0, 65536, (6, 9, 3))
    path = tmp_path / "x.tif"
    path.write_bytes(tiff16_bytes(a, "<", 1, 1))
    with pytest.raises(ImageError, match="not the header's 12x6"):
        sixteen.read_tiff16(path, "x.tif", (12, 6))


def test_bad_icc_profile_warns_and_loads(tmp_path):
    a = RNG.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "icc.png", icc_profile=b"not a profile at all" * 10)
    with pytest.warns(NSTWarning, match="ICC"):
        got = nim.load_image(tmp_path / "icc.png")
    np.testing.assert_allclose(got, a / 255.0, atol=1e-6)


def test_pillow_pixel_limit_restored_and_not_in_the_way(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # far below the 100-pixel test image
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "x.png")
    assert nim.load_image(tmp_path / "x.png", max_pixels=100).shape == (10, 10, 3)
    assert Image.MAX_IMAGE_PIXELS == 10


# ---------------------------------------------------------------------------------------------
# refused kinds


def _write_truncated_png(p):
    a = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _write_truncated_jpeg(p):
    a = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG")
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


REFUSED = {
    "missing": (lambda p: None, "no such file"),
    "directory": (lambda p: p.mkdir(), "directory"),
    "zero_size": (lambda p: p.write_bytes(b""), "empty"),
    "random_bytes": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(300)), "not a recognised image"),
    "truncated_png": (_write_truncated_png, "truncated"),
    "truncated_jpeg": (_write_truncated_jpeg, "truncated"),
    "header_only_png": (lambda p: p.write_bytes(png_bytes(np.zeros((1, 1, 3), int), 8)[:33]), "damaged"),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_load_refused_kinds(tmp_path, kind):
    make, words = REFUSED[kind]
    path = tmp_path / f"bad_{kind}.png"
    make(path)
    with pytest.raises(ImageError) as info:
        nim.load_image(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert path.name in msg
    assert words in msg


def test_over_max_pixels_checked_before_decoding(tmp_path):
    # a header claiming 50 000 × 40 000 with almost no data: refused for size, not for truncation
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(np.zeros((1, 1, 3), int), 8, size=(50_000, 40_000)))
    with pytest.raises(ImageError) as info:
        nim.load_image(path)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg
    assert "50000x40000" in msg and "--max-pixels" in msg


def test_over_max_pixels_small_limit(tmp_path):
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "p.png")
    with pytest.raises(ImageError, match="--max-pixels"):
        nim.load_image(tmp_path / "p.png", max_pixels=119)
    assert nim.load_image(tmp_path / "p.png", max_pixels=120).shape == (10, 12, 3)


def test_unopenable_paths(tmp_path):
    """Paths that cannot be opened, as root too (CI runs as root, who can read a chmod-0 file):
    a path through a regular file, and a directory named like an image."""
    plain = tmp_path / "plain.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(plain)
    with pytest.raises(ImageError, match=r"plain.png/inner.png: cannot access file \(.*Not a directory"):
        nim.load_image(plain / "inner.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="dir.png: is a directory"):
        nim.load_image(tmp_path / "dir.png")
    with pytest.raises(ImageError, match="dir.png: is a directory"):
        nim.image_size(tmp_path / "dir.png")


def _valid_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


_PNG = _valid_png()


@st.composite
def _mutated_png(draw):
    data = bytearray(_PNG)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(min_size=0, max_size=400), _mutated_png()))
def test_fuzz_load_returns_image_or_image_error(data):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fuzz.img")
        with open(path, "wb") as f:
            f.write(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NSTWarning)
            try:
                out = nim.load_image(path, max_pixels=1_000_000)
            except ImageError as e:
                assert "\n" not in str(e) and "fuzz.img" in str(e)
                return
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        assert out.ndim == 3 and out.shape[2] == 3
        assert np.all(out >= 0) and np.all(out <= 1)


def _expected_from_pil(im: Image.Image) -> np.ndarray:
    """An independent (numpy) rendering of an L/RGB/RGBA/P image over white."""
    if im.mode == "L":
        return grey3(np.asarray(im) / 255.0)
    if im.mode == "RGB":
        return np.asarray(im) / 255.0
    if im.mode == "RGBA":
        a = np.asarray(im) / 255.0
        return over_white(a[..., :3], a[..., 3])
    pal = np.array(im.getpalette()[:768], float).reshape(-1, 3) / 255.0
    return pal[np.asarray(im)]


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 16),
    w=st.integers(1, 16),
    mode=st.sampled_from(["L", "RGB", "RGBA", "P"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_small_images_round_trip(h, w, mode, seed):
    rng = np.random.default_rng(seed)
    if mode == "L":
        im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    elif mode in ("RGB", "RGBA"):
        im = Image.fromarray(rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8), mode)
    else:
        im = Image.frombytes("P", (w, h), rng.integers(0, 256, (h, w), dtype=np.uint8).tobytes())
        im.putpalette(rng.integers(0, 256, 768).tolist())
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "src.png")
        im.save(src)
        loaded = nim.load_image(src)
        np.testing.assert_allclose(loaded, _expected_from_pil(im), atol=1e-6)
        out = nim.save_image(os.path.join(d, "out.png"), loaded)
        again = nim.load_image(out)
        np.testing.assert_allclose(again, loaded, atol=0.5 / 255 + 1e-6)
        if mode != "RGBA":  # values are exactly k/255: the round trip is exact
            np.testing.assert_array_equal(again, loaded)


# ---------------------------------------------------------------------------------------------
# saving


def _img(h=6, w=7):
    return RNG.random((h, w, 3)).astype(np.float32)


def _read(path):
    """(format, mode, size, pixels) of a file, closing it."""
    with Image.open(path) as im:
        im.load()
        return im.format, im.mode, im.size, np.asarray(im)


def test_save_refuses_existing_without_overwrite(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"precious")
    with pytest.raises(ImageError) as info:
        nim.save_image(path, _img())
    assert "--overwrite" in str(info.value) and "out.png" in str(info.value)
    assert path.read_bytes() == b"precious"
    nim.save_image(path, _img(), overwrite=True)
    assert _read(path)[0] == "PNG"
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_unknown_extension_refused_before_writing(tmp_path):
    for bad in ("out.gif", "out", "out.xyz"):
        with pytest.raises(ImageError) as info:
            nim.check_output_path(tmp_path / "new" / bad)
        assert ".png" in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(ImageError):
            nim.save_image(tmp_path / "new" / bad, _img())
    assert os.listdir(tmp_path) == []


def test_check_output_path(tmp_path):
    assert nim.check_output_path(tmp_path / "a" / "b.JPG") == tmp_path / "a" / "b.JPG"
    assert not (tmp_path / "a").exists()  # nothing created
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ImageError, match="--overwrite"):
        nim.check_output_path(tmp_path / "x.png")
    assert nim.check_output_path(tmp_path / "x.png", overwrite=True).name == "x.png"
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageError, match="directory"):
        nim.check_output_path(tmp_path / "d.png", overwrite=True)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ImageError, match="is a file"):
        nim.check_output_path(tmp_path / "file" / "o.png")


def test_missing_parent_directory_created(tmp_path):
    path = tmp_path / "a" / "b" / "out.png"
    assert nim.save_image(path, _img()) == path
    assert _read(path)[2] == (7, 6)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"old contents")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ImageError) as info:
        nim.save_image(path, _img(), overwrite=True)
    assert "No space left" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["out.png"]
    with pytest.raises(ImageError):
        nim.save_image(tmp_path / "new.png", _img())
    assert os.listdir(tmp_path) == ["out.png"]


@pytest.mark.parametrize(
    "name,fmt",
    [("o.png", "PNG"), ("o.PNG", "PNG"), ("o.jpg", "JPEG"), ("o.JPEG", "JPEG"), ("o.tif", "TIFF"),
     ("o.tiff", "TIFF"), ("o.webp", "WEBP"), ("o.bmp", "BMP")],
)
def test_format_from_extension(tmp_path, name, fmt):
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    img = np.stack([yy, xx, (yy + xx) / 2], axis=-1).astype(np.float32)  # smooth: fair to JPEG
    nim.save_image(tmp_path / name, img)
    with Image.open(tmp_path / name) as im:
        assert im.format == fmt and im.size == (16, 16) and im.mode == "RGB"
    back = nim.load_image(tmp_path / name)
    atol = 0.5 / 255 + 1e-6 if fmt in ("PNG", "TIFF", "BMP") else 0.05
    np.testing.assert_allclose(back, img, atol=atol)


def test_saved_file_permissions_follow_umask(tmp_path):
    path = nim.save_image(tmp_path / "p.png", _img())
    umask = os.umask(0o022)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_rounding_floor_vs_round(tmp_path):
    v = 0.5 / 255 + 1 / 255  # 1.5 levels
    img = np.full((2, 2, 3), v)
    assert nim.to_uint8(img, "round")[0, 0, 0] == 2
    assert nim.to_uint8(img, "floor")[0, 0, 0] == 1
    assert nim.to_uint8(np.array([-0.2, 0.0, 0.999, 1.0, 7.0, np.nan]), "round").tolist() == [0, 0, 255, 255, 255, 0]
    assert nim.to_uint8(np.array([254.9 / 255]), "floor").tolist() == [254]
    u = np.arange(6, dtype=np.uint8)
    assert nim.to_uint8(u) is u
    nim.save_image(tmp_path / "r.png", img, rounding="round")
    nim.save_image(tmp_path / "f.png", img, rounding="floor")
    assert _read(tmp_path / "r.png")[3][0, 0, 0] == 2
    assert _read(tmp_path / "f.png")[3][0, 0, 0] == 1
    with pytest.raises(ConfigError):
        nim.to_uint8(img, "ceil")


def test_uint8_and_greyscale_input(tmp_path):
    u = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    nim.save_image(tmp_path / "u.png", u)
    np.testing.assert_array_equal(_read(tmp_path / "u.png")[3], u)
    g = RNG.random((5, 4)).astype(np.float32)
    nim.save_image(tmp_path / "g.png", g)
    assert _read(tmp_path / "g.png")[1] == "L"
    nim.save_image(tmp_path / "j.png", jax.numpy.asarray(_img()))  # jax arrays accepted
    with pytest.raises(ValueError):
        nim.save_image(tmp_path / "bad.png", np.zeros((4, 4, 2)))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_output(tmp_path, ext):
    img = RNG.random((5, 9, 3))
    path = nim.save_image(tmp_path / f"o16{ext}", img, bit_depth=16)
    data16 = np.floor(img * 65535 + 0.5).astype(np.uint16)
    with Image.open(path) as im:  # Pillow reads the high bytes: the file is well formed
        assert im.format == ("PNG" if ext == ".png" else "TIFF") and im.size == (9, 5)
        np.testing.assert_array_equal(np.asarray(im), data16 >> 8)
    back = nim.load_image(path)
    np.testing.assert_allclose(back, data16 / 65535.0, atol=1e-6)
    assert np.abs(back - img).max() < 1e-5  # far beyond 8-bit precision
    grey = nim.save_image(tmp_path / f"g16{ext}", img[..., 0], bit_depth=16)
    with Image.open(grey) as im:
        assert im.mode.startswith("I;16")
        np.testing.assert_array_equal(np.asarray(im), data16[..., 0])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"o16{ext}", f"g16{ext}"])


def test_sixteen_bit_refused_for_eight_bit_formats(tmp_path):
    with pytest.raises(ImageError, match="PNG and TIFF"):
        nim.save_image(tmp_path / "o.jpg", _img(), bit_depth=16)
    with pytest.raises(ConfigError):
        nim.save_image(tmp_path / "o.png", _img(), bit_depth=12)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# geometry


@pytest.mark.parametrize(
    "h,w,size,side,expected",
    [
        (810, 1440, 400, "height", (400, 711)),  # Keras: int(1440 * 400 / 810) = int(711.1)
        (810, 1440, 400, "width", (225, 400)),
        (810, 1440, 512, "long", (288, 512)),
        (1440, 810, 512, "long", (512, 288)),
        (100, 300, 50, "long", (17, 50)),  # 16.67 rounds up
        (300, 100, 50, "long", (50, 17)),
        (100, 100, 64, "long", (64, 64)),
        (3, 1000, 10, "long", (1, 10)),  # min 1
        (599, 1000, 400, "height", (400, 667)),  # int(667.78): truncation, not rounding
        (1000, 599, 400, "width", (667, 400)),
    ],
)
def test_working_shape(h, w, size, side, expected):
    assert nim.working_shape(h, w, size, side) == expected


def test_working_shape_rejects_bad_values():
    with pytest.raises(ConfigError):
        nim.working_shape(10, 10, 5, "short")
    with pytest.raises(ConfigError):
        nim.working_shape(10, 10, 0)


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
@pytest.mark.parametrize("shape", [(13, 7), (40, 50), (20, 31)])
def test_resize_matches_pillow_uint8(method, shape):
    u = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    resample = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}[method]
    ref = np.asarray(Image.fromarray(u).resize((shape[1], shape[0]), resample)) / 255.0
    got = nim.resize(u / 255.0, shape, method)
    assert got.dtype == np.float32 and got.shape == (*shape, 3)
    np.testing.assert_allclose(got, ref, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("method", ["bicubic", "lanczos", "area"])
def test_resize_other_methods(method):
    img = RNG.random((20, 30, 3)).astype(np.float32)
    out = nim.resize(img, (11, 17), method)
    assert out.shape == (11, 17, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    flat = np.full((20, 30, 3), 0.3, np.float32)
    np.testing.assert_allclose(nim.resize(flat, (9, 45), method), 0.3, atol=1e-5)  # no quantisation


def test_resize_noop_and_grey():
    img = RNG.random((8, 9, 3)).astype(np.float32)
    same = nim.resize(img, (8, 9))
    assert same is img
    np.testing.assert_array_equal(same, img)
    g = nim.resize(img[..., 0], (4, 5), "bilinear")
    assert g.shape == (4, 5)
    with pytest.raises(ConfigError):
        nim.resize(img, (4, 4), "cubic")


def test_montage_shapes():
    a = np.zeros((10, 20, 3), np.float32)
    b = np.zeros((20, 20, 3), np.float32)
    c = np.zeros((5, 15), np.float32)
    m = figures.montage([a, b, c])
    assert m.shape == (10, 20 + 8 + 10 + 8 + 30, 3) and m.dtype == np.float32
    np.testing.assert_array_equal(m[:, 20:28], 1.0)  # white gap
    np.testing.assert_allclose(m[:, :20], 0.0, atol=1e-6)
    m2 = figures.montage([a, b], height=40, gap=0, background=0.5)
    assert m2.shape == (40, 80 + 40, 3)
    assert figures.montage([a]).shape == a.shape


# ---------------------------------------------------------------------------------------------
# loss plot


@pytest.mark.parametrize(
    "losses",
    [np.exp(-np.linspace(0, 12, 300)) * 1e7, [5.0, 4.0, 3.5, 3.4], [2.0, np.nan, 1.0, np.inf, 0.5], [1.0], []],
    ids=["log", "linear", "nonfinite", "single", "empty"],
)
def test_save_loss_plot(tmp_path, losses):
    path = figures.save_loss_plot(tmp_path / "plots" / "loss.png", losses, title="total loss")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        im.load()
        a = np.asarray(im)
    assert (a < 128).any() and (a > 250).any()  # something drawn on white
    with pytest.raises(ImageError, match="--overwrite"):
        figures.save_loss_plot(path, losses)
    figures.save_loss_plot(path, losses, overwrite=True)
    assert os.listdir(path.parent) == ["loss.png"]


def test_loss_plot_is_log_scale_with_the_terms_apart(tmp_path, monkeypatch):
    """The plotted curves, read back from matplotlib: total, content, style and TV, on a log axis."""
    from matplotlib.axes import Axes

    n = 200
    total = np.exp(-np.linspace(0, 9, n)) * 1e6 + 10
    parts = {"content": np.full(n, 5.0), "style": total - 5.0 - 1e-3, "tv": np.full(n, 1e-3)}
    seen = {}
    real_plot = Axes.plot

    def spy(self, x, y, *args, label=None, **kw):
        seen[label] = np.asarray(y)
        out = real_plot(self, x, y, *args, label=label, **kw)
        seen["yscale"] = self
        return out

    monkeypatch.setattr(Axes, "plot", spy)
    figures.save_loss_plot(tmp_path / "l.png", total, parts=parts)
    assert sorted(k for k in seen if k != "yscale") == ["content", "style", "total", "tv"]
    np.testing.assert_allclose(seen["total"], total)
    np.testing.assert_allclose(seen["tv"], parts["tv"])
    assert seen["yscale"].get_yscale() == "log"
    # a term that is never positive cannot be drawn on the log axis: it is named under the chart;
    # non-finite values are gaps; a short run has whole-number iteration ticks
    seen.clear()
    figures.save_loss_plot(tmp_path / "m.png", [3.0, np.nan, 1.0],
                           parts={"content": [1, np.nan, 1], "style": [2, np.nan, 0], "tv": [0, np.nan, 0.0]})
    assert "tv" not in seen and np.isnan(seen["total"][1])
    ax = seen["yscale"]
    assert "0 throughout: tv" in ax.get_xlabel()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks), ax.get_xticks()


def test_loss_plot_without_matplotlib_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "have_matplotlib", lambda: False)
    with pytest.raises(ImageError, match="nst-jax\\[plot\\]"):
        figures.save_loss_plot(tmp_path / "l.png", [1.0, 0.5])
    assert not (tmp_path / "l.png").exists()


# ---------------------------------------------------------------------------------------------
# colour


def _stats(x):
    f = np.asarray(x, np.float64).reshape(-1, 3)
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / len(f)


def _coloured(rng, h, w):
    base = rng.random((h, w, 3))
    mix = rng.normal(size=(3, 3)) * 0.4 + np.eye(3)
    return (base @ mix.T * 0.3 + rng.random(3) * 0.5).astype(np.float32)


def test_yiq_round_trip_and_luminance():
    rgb = RNG.random((9, 11, 3)).astype(np.float32)
    yiq = color.rgb_to_yiq(rgb)
    assert np.abs(np.asarray(color.yiq_to_rgb(yiq)) - rgb).max() < 1e-6
    np.testing.assert_allclose(np.asarray(color.luminance(rgb)), np.asarray(yiq)[..., 0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(color.rgb_to_yiq(np.ones((1, 1, 3)))), [[[1, 0, 0]]], atol=1e-6)
    y = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(np.asarray(color.luminance(jax.numpy.asarray(rgb))), y, atol=1e-6)


@pytest.mark.parametrize("method", ["chol", "pca", "sym"])
def test_match_color_statistics(method):
    rng = np.random.default_rng(5)
    source = _coloured(rng, 40, 30)  # recoloured
    target = _coloured(rng, 25, 50)  # supplies the colours
    out = np.asarray(color.match_color(source, target, method))
    assert out.shape == source.shape
    mu_o, cov_o = _stats(out)
    mu_t, cov_t = _stats(target)
    np.testing.assert_allclose(mu_o, mu_t, atol=1e-4)
    np.testing.assert_allclose(cov_o, cov_t, atol=1e-4)
    # the same image as both: the identity
    np.testing.assert_allclose(np.asarray(color.match_color(target, target, method)), target, atol=1e-4)
    jitted = jax.jit(color.match_color, static_argnames=("method", "clip"))(source, target, method=method)
    np.testing.assert_allclose(np.asarray(jitted), out, atol=1e-4)
    clipped = np.asarray(color.match_color(source, target, method, clip=True))
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0


def test_match_color_rejects_unknown_method():
    with pytest.raises(ConfigError):
        color.match_color(_img(), _img(), "lab")


def test_transfer_chroma():
    a = RNG.random((6, 8, 3)).astype(np.float32)
    b = RNG.random((6, 8, 3)).astype(np.float32)
    out = color.transfer_chroma(a, b)
    yiq_out = np.asarray(color.rgb_to_yiq(out))
    np.testing.assert_allclose(yiq_out[..., 0], np.asarray(color.luminance(a)), atol=1e-6)
    np.testing.assert_allclose(yiq_out[..., 1:], np.asarray(color.rgb_to_yiq(b))[..., 1:], atol=1e-6)
    with pytest.raises(ValueError):
        color.transfer_chroma(a, b[:3])


def test_match_luminance():
    rng = np.random.default_rng(3)
    style_y = rng.random((20, 30)).astype(np.float32) * 0.3 + 0.6
    content_y = rng.random((15, 10)).astype(np.float32) * 0.9
    out = np.asarray(color.match_luminance(style_y, content_y))
    assert out.shape == style_y.shape
    np.testing.assert_allclose(out.mean(), content_y.mean(), atol=1e-5)
    np.testing.assert_allclose(out.std(), content_y.std(), atol=1e-5)
    flat = np.asarray(color.match_luminance(np.full((3, 3), 0.4), content_y))
    np.testing.assert_allclose(flat, content_y.mean(), atol=1e-6)
