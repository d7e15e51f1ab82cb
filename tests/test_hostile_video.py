"""Hostile inputs and faults on the newer surfaces: the video command, its frame folder and flow cache,
TIFF geometry, zip entry counts, coarse-to-fine sizes, sweep names, signals at every stage.

Each refused case runs the real CLI in a forked child (``hostile_support``) and asserts what the
older hostile tests assert: exit 2 and one ``error:`` line, no traceback, seconds, little memory, and
no existing file changed or removed. The files are built here.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest

from hostile_support import REPO, _snapshot, refused, running
from nst_jax import image, weights
from nst_jax.video import io as video_io
from nst_jax.errors import ImageError

sys.path.insert(0, str(REPO / "scripts"))
from make_clip import make_clip  # noqa: E402

SHALLOW = ["--content-layers", "relu2_1", "--style-layers", "relu1_1,relu2_1", "--iterations", "3",
           "--optimizer", "adam", "--lr", "0.02", "--size", "32", "--no-progress"]


def write_clip(path: Path, frames: np.ndarray, fps: int = 10, fmt: str | None = None,
               audio_codec: str | None = None) -> Path:
    """A video file written with PyAV (libx264, ultrafast), with half a second of a stereo tone in
    ``audio_codec`` when given."""
    out = av.open(str(path), "w", format=fmt)
    v = out.add_stream("libx264", rate=fps)
    v.height, v.width = frames.shape[1:3]
    v.pix_fmt, v.options = "yuv420p", {"preset": "ultrafast"}
    a = out.add_stream(audio_codec, rate=48000) if audio_codec else None
    if a is not None:
        if audio_codec == "vorbis":
            a.codec_context.options = {"strict": "experimental"}
        a.layout = "stereo"
    for f in frames:
        for p in v.encode(av.VideoFrame.from_ndarray(np.asarray(f * 255).round().astype(np.uint8), format="rgb24")):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    if a is not None:
        tone = (np.sin(np.arange(24000) * 0.05) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]).T.reshape(1, -1).copy(), format="s16",
                                           layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        res = av.AudioResampler(format=a.codec_context.format.name, layout="stereo", rate=48000)
        for f in [*res.resample(frame), *res.resample(None)]:
            for p in a.encode(f):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    out.close()
    return path


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_video")
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    frames, _, _ = make_clip(3, 24, 32, seed=3)
    write_clip(d / "clip.mp4", frames)
    for t, f in enumerate(frames):
        image.save_image(d / "in" / f"frame{t:02d}.png", f)
    image.save_image(d / "style.png", np.random.default_rng(0).random((24, 24, 3)))
    return d


@pytest.fixture(scope="module")
def runner(d):
    with running(d / "noweights") as r:
        yield r


def video(d: Path, src, out, *extra) -> list[str]:
    return ["video", str(src), str(d / "style.png"), "-o", str(out), "--weights", str(d / "syn.h5"), *SHALLOW,
            *map(str, extra)]


def frames_of(folder: Path) -> list[np.ndarray]:
    return [image.load_image(f) for f in sorted(folder.glob("frame_*.png"))]


@pytest.fixture(scope="module")
def reference(runner, d):
    """The uninterrupted run of the clip into a folder: the frames every rerun must give."""
    res = runner.run(video(d, d / "clip.mp4", d / "ref"), d)
    assert res["rc"] == 0, res["stderr"]
    return frames_of(d / "ref")


# ---------------------------------------------------------------------------------------------
# 1. Inputs inside what the job writes or clears
# ---------------------------------------------------------------------------------------------


def test_inputs_inside_the_frame_folder_or_flow_cache_are_refused_before_any_work(runner, d, reference):
    # an earlier run's OUT.frames given as IN, with --overwrite: it would be cleared
    res = runner.run(video(d, d / "clip.mp4", d / "p.mp4"), d)
    assert res["rc"] == 0, res["stderr"]
    frames_dir = d / "p.mp4.frames"
    assert len(list(frames_dir.glob("frame_*.png"))) == 3
    refused(runner, video(d, frames_dir, d / "p.mp4", "--overwrite"), d, "the frame folder")
    # a style image that lives inside the frame folder, or inside the flow cache
    (frames_dir / "s.png").write_bytes((d / "style.png").read_bytes())
    argv = video(d, d / "clip.mp4", d / "p.mp4", "--overwrite")
    argv[2] = str(frames_dir / "s.png")
    refused(runner, argv, d, "style 1 input")
    (frames_dir / "s.png").unlink()
    cache = next((d / ".nst-flow").glob("clip-*"))
    (cache / "s.png").write_bytes((d / "style.png").read_bytes())
    argv[2] = str(cache / "s.png")
    refused(runner, argv, d, "the flow cache")
    (cache / "s.png").unlink()
    # a hard link elsewhere to a frame of the folder (same inode), as the style
    os.link(frames_dir / "frame_000000.png", d / "linked.png")
    argv[2] = str(d / "linked.png")
    refused(runner, argv, d, "style 1 input")
    (d / "linked.png").unlink()
    # a frame folder input that is the -o folder of a folder job
    res = runner.run(video(d, d / "in", d / "fo"), d)
    assert res["rc"] == 0, res["stderr"]
    refused(runner, video(d, d / "fo", d / "fo", "--overwrite"), d, "is the IN input")
    assert len(frames_of(frames_dir)) == 3 and len(frames_of(d / "fo")) == 3


def test_a_killed_job_json_write_does_not_lock_the_folder(runner, d, reference):
    out = d / "locked"
    out.mkdir()
    dead = 2**22 + 4321  # above the kernel's default pid_max: no such process
    temp = out / f".job.json.{dead}-0123abcd.json"
    temp.write_bytes(b'{"half": ')
    res = runner.run(video(d, d / "clip.mp4", out), d)
    assert res["rc"] == 0, res["stderr"]
    assert not temp.exists()
    for got, want in zip(frames_of(out), reference, strict=True):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# 3, 16. Non-regular files and links where nst-jax keeps its own files
# ---------------------------------------------------------------------------------------------


def test_fifos_and_links_in_the_job_and_flow_cache_neither_hang_nor_are_followed(runner, d, reference):
    out = d / "fifo_job"
    out.mkdir()
    os.mkfifo(out / "job.json")
    refused(runner, video(d, d / "clip.mp4", out), d, "not a regular file")
    refused(runner, video(d, d / "clip.mp4", out, "--overwrite"), d, "not a regular file")
    # the flow cache of this clip (made by the reference run, beside its -o): key.json a FIFO
    cache = next((d / ".nst-flow").glob("clip-*"))
    key = (cache / "key.json").read_bytes()
    (cache / "key.json").unlink()
    os.mkfifo(cache / "key.json")
    res = runner.run(video(d, d / "clip.mp4", d / "after_fifo"), d)
    assert res["rc"] == 0 and res["seconds"] < 60, res["stderr"]
    for got, want in zip(frames_of(d / "after_fifo"), reference, strict=True):
        np.testing.assert_array_equal(got, want)
    (cache / "key.json").unlink()
    (cache / "key.json").write_bytes(key)
    # a flow entry that is a FIFO, and one that is a link to a (valid-looking) flow outside the
    # folder: neither is read; the flow is estimated again and the frames are the reference's
    back1 = cache / "back_000001.npy"
    fwd2 = cache / "fwd_000002.npy"
    outside = d / "outside.npy"
    np.save(outside, np.full(np.load(back1).shape, 7.0, np.float32))
    back1.unlink()
    os.mkfifo(back1)
    fwd2.unlink()
    fwd2.symlink_to(outside)
    res = runner.run(video(d, d / "clip.mp4", d / "after_links"), d)
    assert res["rc"] == 0 and res["seconds"] < 60, res["stderr"]
    for got, want in zip(frames_of(d / "after_links"), reference, strict=True):
        np.testing.assert_array_equal(got, want)
    # the cache is nst-jax's own folder: the entries are replaced by real flows (the link itself,
    # never the file it pointed to)
    assert back1.is_file() and not back1.is_symlink() and fwd2.is_file() and not fwd2.is_symlink()
    assert (np.load(outside) == 7.0).all()


def test_a_fifo_given_as_an_image_is_refused_at_once(runner, d):
    os.mkfifo(d / "pipe.png")
    refused(runner, video(d, d / "clip.mp4", d / "x.mp4")[:2] + [str(d / "pipe.png")] + video(d, 0, d / "x.mp4")[3:],
            d, "not a regular file")
    (d / "pipe.png").unlink()


# ---------------------------------------------------------------------------------------------
# 4, 5. TIFF geometry and page counts
# ---------------------------------------------------------------------------------------------


def _tiff(pages: list[dict[int, tuple[int, list[int]]]], data: bytes = b"") -> bytes:
    """A little-endian TIFF: each page a dict tag -> (type, values) (3 SHORT, 4 LONG); ``data`` after."""
    out = bytearray(b"II*\0\0\0\0\0")
    data_at = 8
    out += data
    offsets = []
    for page in pages:
        offsets.append(len(out))
        out += struct.pack("<H", len(page)) + b"\0" * (12 * len(page)) + b"\0\0\0\0"
    for k, page in enumerate(pages):
        at = offsets[k]
        for i, (tag, (typ, values)) in enumerate(sorted(page.items())):
            size = {3: 2, 4: 4}[typ]
            if len(values) * size <= 4:
                raw = b"".join(struct.pack("<H" if typ == 3 else "<I", v) for v in values).ljust(4, b"\0")
            else:
                raw = struct.pack("<I", len(out))
                out += b"".join(struct.pack("<H" if typ == 3 else "<I", v) for v in values)
            struct.pack_into("<HHI4s", out, at + 2 + 12 * i, tag, typ, len(values), raw)
        nxt = offsets[k + 1] if k + 1 < len(pages) else 0
        struct.pack_into("<I", out, at + 2 + 12 * len(page), nxt)
    struct.pack_into("<I", out, 4, offsets[0])
    assert data_at == 8
    return bytes(out)


def _tiled(tile: int, bits: int, size: int = 64) -> bytes:
    """A size x size RGB TIFF (8 or 16 bits) declaring one tile x tile tile of 256 stored bytes."""
    data = bytes(256)
    return _tiff([{256: (4, [size]), 257: (4, [size]), 258: (3, [bits] * 3), 259: (3, [1]), 262: (3, [2]),
                   277: (3, [3]), 284: (3, [1]), 322: (4, [tile]), 323: (4, [tile]), 324: (4, [8]),
                   325: (4, [len(data)])}], data)


def test_tiff_tiles_larger_than_the_image_are_refused_before_decoding(runner, d):
    for tile, bits in ((16384, 16), (32768, 16), (16384, 8)):
        path = d / f"tile{tile}_{bits}.tif"
        path.write_bytes(_tiled(tile, bits))
        argv = ["stylize", str(path), str(d / "style.png"), "-o", str(d / "t.png"), "--weights", str(d / "syn.h5"),
                *SHALLOW]
        refused(runner, argv, d, "TIFF tiles of", declared=tile * tile * 3 * bits // 8)
        path.unlink()
    # the same file with tiles of the image's size is not refused for its tiles
    (d / "ok.tif").write_bytes(_tiled(64, 16))
    with pytest.raises(ImageError) as info:  # (its tile holds 256 zero bytes: truncated, not a tile error)
        image.load_image(d / "ok.tif")
    assert "TIFF tiles" not in str(info.value)
    (d / "ok.tif").unlink()


def test_a_tiff_of_100000_pages_is_read_as_its_first_in_seconds(d):
    page = {256: (4, [16]), 257: (4, [16]), 258: (3, [8]), 259: (3, [1]), 262: (3, [1]), 273: (4, [8]),
            277: (3, [1]), 278: (4, [16]), 279: (4, [256])}
    path = d / "pages.tif"
    path.write_bytes(_tiff([page] * 100_000, bytes(range(256))))
    assert path.stat().st_size > 10_000_000
    t0 = time.monotonic()
    with pytest.warns(Warning, match="multi-page image, using the first frame"):
        got = image.load_image(path)
    assert time.monotonic() - t0 < 20  # (107 s before: every page was walked to count them)
    assert got.shape == (16, 16, 3)
    np.testing.assert_allclose(got[0, :, 0], np.arange(16) / 255.0, atol=1e-6)
    path.unlink()


# ---------------------------------------------------------------------------------------------
# 6. Zip archives with many entries
# ---------------------------------------------------------------------------------------------


def test_a_pth_with_200000_extra_entries_is_refused_in_seconds(runner, d):
    path = d / "many.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        for i in range(200_000):
            zf.writestr(f"archive/data/x{i}", b"")
    refused(runner, ["weights", "convert", str(path), "-o", str(d / "many.h5")], d, "200,001 entries")
    path.unlink()


# ---------------------------------------------------------------------------------------------
# 7, 8, 15. Sizes and rates checked before work
# ---------------------------------------------------------------------------------------------


def test_scales_style_scales_and_rates_are_checked_before_work(runner, d):
    c, s = str(d / "in" / "frame00.png"), str(d / "style.png")
    base = ["stylize", c, s, "-o", str(d / "r.png"), "--weights", str(d / "syn.h5"), "--no-progress"]
    for extra, expect in [
        (["--size", "32", "--scales", "4000,32"], "scales must rise"),
        (["--size", "32", "--scales", "20000,32"], "scales must rise"),
        (["--size", "32", "--scales", "1e30,32"], "--scales takes"),
        (["--size", "20000", "--scales", "32,20000"], "over the limit"),
        (["--size", "32", "--scales", "8,32"], "scales must rise from at least 16"),
        (["--size", "32", "--style-scale", "1e308"], "style scale"),
        (["--size", "32", "--set", "style_scale=1e308"], "style scale"),
        (["--size", "32", "--style-scale", "inf"], "style"),
        (["--size", str(10**400)], "largest side"),
    ]:
        refused(runner, base + extra, d, expect)
    vbase = video(d, d / "clip.mp4", d / "v.mp4")
    for extra, expect in [
        (["--style-scale", "1e308"], "style scale"),
        (["--fps", "0.0001"], "cannot be encoded"),
        (["--every", str(10**12)], "cannot be encoded"),
    ]:
        refused(runner, vbase + extra, d, expect)


def test_sweep_formats_are_extensions_not_paths(runner, d):
    c, s = str(d / "in" / "frame00.png"), str(d / "style.png")
    (d / "sweep").mkdir(exist_ok=True)
    for fmt in ("png/../../x.png", "../x", "png/", "exe"):
        refused(runner, ["stylize", c, s, "-o", str(d / "sweep"), "--weights", str(d / "syn.h5"), *SHALLOW,
                         "--style-weight", "1,2", "--format", fmt], d, "--format")
    assert not (d.parent / "x.png").exists()


# ---------------------------------------------------------------------------------------------
# 9, 10, 11. What the video job holds and where it writes, known before painting
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_clips(d):
    """20,000 frames of 16x16, as MP4 (declares its frame count) and Matroska (does not)."""
    frames = np.zeros((20_000, 16, 16, 3), np.float32)
    return write_clip(d / "long.mp4", frames, fps=25), write_clip(d / "long.mkv", frames, fps=25, fmt="matroska")


def test_multipass_counts_every_frame_it_holds(runner, d, long_clips):
    for clip in long_clips:
        line = refused(runner, video(d, clip, d / "mp", "--method", "multipass", "--size", "512"), d, "needs about")
        assert "--method sequential" in line


def test_max_frames_is_enforced_before_painting_when_the_container_does_not_say(runner, d, long_clips):
    mkv = long_clips[1]
    with av.open(str(mkv)) as c:
        assert c.streams.video[0].frames == 0  # Matroska declares no count
    line = refused(runner, video(d, mkv, d / "mf.mp4", "--max-frames", "100"), d, "more than 100 frames")
    assert "painted" not in line


def test_a_stray_file_where_the_flow_cache_goes_is_found_before_painting(runner, d):
    (d / "stray").mkdir()
    (d / "stray" / ".nst-flow").write_bytes(b"not a folder")
    refused(runner, video(d, d / "clip.mp4", d / "stray" / "o.mp4"), d, "is not a folder")
    (d / "stray" / ".nst-flow").unlink()
    (d / "stray" / "out").mkdir()
    (d / "stray" / "out" / "job.json").mkdir()  # (a folder where the marker file goes)
    refused(runner, video(d, d / "clip.mp4", d / "stray" / "out"), d, "not a regular file")


# ---------------------------------------------------------------------------------------------
# 12. Audio the output container cannot hold
# ---------------------------------------------------------------------------------------------

AUDIO = {"aac": ("aac", "mp4"), "mp3": ("libmp3lame", "mp4"), "opus": ("libopus", "matroska"),
         "vorbis": ("vorbis", "matroska"), "pcm": ("pcm_s16le", "matroska")}


@pytest.fixture(scope="module")
def audio_clips(d):
    frames, _, _ = make_clip(3, 24, 32, seed=3)
    return {name: write_clip(d / f"a_{name}.{'mp4' if fmt == 'mp4' else 'mkv'}", frames, fmt=fmt, audio_codec=codec)
            for name, (codec, fmt) in AUDIO.items()}


def _forced_copy(src: Path, ext: str) -> bool:
    """The reference: copy the audio packets into a container of ``ext`` with PyAV directly, as far
    as the trailer; whether the muxer took them."""
    try:
        with av.open(str(src)) as s, av.open(io.BytesIO(), "w", format=video_io._CONTAINERS[ext]) as out:
            v = out.add_stream(video_io.VIDEO_EXTENSIONS[ext], rate=10)
            v.width, v.height, v.pix_fmt = 32, 24, "yuv420p"
            a = out.add_stream_from_template(s.streams.audio[0])
            for p in v.encode(av.VideoFrame.from_ndarray(np.zeros((24, 32, 3), np.uint8), format="rgb24")):
                out.mux(p)
            for p in v.encode(None):
                out.mux(p)
            for p in s.demux(s.streams.audio[0]):
                if p.dts is not None:
                    p.stream = a
                    out.mux(p)
        return True
    except (av.FFmpegError, ValueError):
        return False


@pytest.mark.parametrize("ext", sorted(video_io.VIDEO_EXTENSIONS))
def test_the_audio_trial_agrees_with_the_muxer_for_each_codec_and_container(d, audio_clips, ext):
    """``audio_copy_problem`` decides before painting. Where it says yes the file is written with
    the audio; where it says no, a direct copy with PyAV (the reference) fails too, and
    ``write_video`` writes the video without audio and says why in a note."""
    frames = [np.zeros((24, 32, 3), np.float32)] * 3
    took = {}
    for name, src in audio_clips.items():
        why = video_io.audio_copy_problem(src, f"x{ext}")
        assert (not why) == _forced_copy(src, ext), (name, ext, why)
        out = d / f"copy_{name}{ext}"
        notes = video_io.write_video(out, frames, 10, audio_from=src, overwrite=True)
        with av.open(str(out)) as c:
            assert bool(c.streams.audio) == (not why) and c.streams.video[0].frames in (0, 3), (name, ext)
        assert bool(notes) == bool(why) and (not notes or "audio dropped" in notes[0]), notes
        took[name] = not why
        out.unlink()
    if ext != ".mkv":
        assert not all(took.values()), ext  # (each of the others refuses at least one of the five)


def test_the_video_command_drops_audio_it_cannot_copy_with_a_note(runner, d, audio_clips):
    res = runner.run(video(d, audio_clips["pcm"], d / "pcm.mp4"), d)
    assert res["rc"] == 0, res["stderr"]
    assert "note: audio dropped" in res["stderr"] and "pcm_s16le" in res["stderr"]
    with av.open(str(d / "pcm.mp4")) as c:
        assert c.streams.video[0].frames == 3 and not c.streams.audio
    res = runner.run(video(d, audio_clips["opus"], d / "opus.webm"), d)
    assert res["rc"] == 0 and "with audio" in res["stdout"], res["stderr"]


# ---------------------------------------------------------------------------------------------
# 14. Signals at every stage of `nst-jax video`: the same command again gives the uninterrupted result
# ---------------------------------------------------------------------------------------------

STAGES = {
    # stage: (method, function the signal comes at, its call)
    "loading": ("sequential", "nst_jax.weights:load_weights", 1),
    "frames": ("sequential", "nst_jax.video.frames:stylize", 2),
    "independent": ("independent", "nst_jax.video.frames:stylize", 2),
    "flows": ("multipass", "nst_jax.video.flow:estimate", 2),
    "passes": ("multipass", "nst_jax.video.frames:stylize_many", 2),
    "encoding": ("sequential", "nst_jax.video.io:write_video", 1),
}


@pytest.fixture(scope="module")
def references(runner, d):
    """Each method's uninterrupted run (video file out): its frames and its encoded video."""
    refs = {}
    for method in ("sequential", "independent", "multipass"):
        out = d / f"sig_ref_{method}.mp4"
        res = runner.run(video(d, d / "clip.mp4", out, "--method", method, *_passes(method)), d)
        assert res["rc"] == 0, res["stderr"]
        refs[method] = (frames_of(d / f"sig_ref_{method}.mp4.frames"), _decoded(out))
    return refs


def _passes(method: str) -> list[str]:
    return ["--passes", "2"] if method == "multipass" else []  # (refused for the other methods)


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_a_signal_at_each_stage_then_the_same_command_gives_the_uninterrupted_result(runner, d, references, stage,
                                                                                      sig):
    method, at, call = STAGES[stage]
    out = d / f"sig_{stage}_{sig.name}" / "o.mp4"  # (its own folder: its own flow cache)
    argv = video(d, d / "clip.mp4", out, "--method", method, *_passes(method))
    res = runner.run(argv, d, kill={"at": at, "call": call, "signal": int(sig)})
    if sig == signal.SIGKILL:
        assert res["rc"] == -9, res
    else:
        assert res["rc"] == 128 + int(sig), (res["rc"], res["stderr"])
        assert "Traceback" not in res["stderr"] and "CHILD-EXCEPTION" not in res["stderr"], res["stderr"]
    res = runner.run(argv, d)
    assert res["rc"] == 0, res["stderr"]
    frames, encoded = references[method]
    for got, want in zip(frames_of(out.parent / f"{out.name}.frames"), frames, strict=True):
        np.testing.assert_array_equal(got, want)
    # The video is an H.264 encoding of exactly those frames. (x264's bytes are not always the same
    # for the same frames in a process that painted before encoding, so the decoded video is held to
    # the frames, not to the reference file's bytes: the same count, within the codec's loss.)
    decoded = _decoded(out)
    assert len(decoded) == len(encoded)
    for got, want in zip(decoded, frames, strict=True):
        err = np.abs(got.astype(np.float64) - np.round(want * 255.0))
        assert err.mean() < 6.0 and err.max() < 96, (err.mean(), err.max())


def _wait_for_our_handlers(pid: int, timeout: float = 30.0) -> None:
    """Until the child catches SIGTERM (Python itself never does; ``nst_jax.entry`` does as its first
    instruction): a signal before that reaches the interpreter's own start-up, which no program
    can handle (under a loaded machine's start-up it took over 50 ms, and the test measured Python)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return  # (gone already, or no /proc: the delays alone then)
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.002)


def test_signals_while_the_command_imports_and_a_second_ctrl_c_give_one_line(d):
    """A real process: SIGINT or SIGTERM while JAX is still importing ends with 130 / 143 and one line;
    a second Ctrl-C right after the first never prints a traceback (JAX's exit hooks included)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", NST_JAX_CACHE_DIR="", PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "nst_jax", *video(d, d / "clip.mp4", d / "imp.mp4")]
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        for delay in (0.05, 0.3, 1.0):
            proc = subprocess.Popen(argv, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _wait_for_our_handlers(proc.pid)
            time.sleep(delay)
            proc.send_signal(sig)
            if sig == signal.SIGINT:
                time.sleep(0.05)
                proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode in (code, 130), (sig, delay, proc.returncode, err)
            assert "Traceback" not in err, (sig, delay, err)
            assert len([ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]) <= 2, err


# ---------------------------------------------------------------------------------------------
# 17. Memory: the kernel's MemAvailable, not MemFree
# ---------------------------------------------------------------------------------------------


def test_available_memory_is_memavailable_not_memfree(tmp_path):
    from nst_jax.engine import memory

    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       24000000 kB\nMemFree:          900000 kB\nMemAvailable:   20000000 kB\n"
                    "Cached:         18000000 kB\n")
    assert memory.available_ram(str(fake)) == 20_000_000 * 1024
    assert memory.memory_shortfall(30, 40, __import__("nst_jax").preset("default"),
                                   free=memory.available_ram(str(fake))) is None


def test_snapshot_helper_sees_a_changed_file(tmp_path):
    """(the guard every refused case relies on: a changed or removed file shows in the snapshot)"""
    (tmp_path / "a").write_bytes(b"1")
    before = _snapshot(tmp_path)
    (tmp_path / "a").write_bytes(b"2")
    assert _snapshot(tmp_path) != before


def test_stylize_options_the_video_job_does_not_apply_are_refused(runner, d):
    """The video parser shares stylize's options; those the job does not apply (they used to leave
    the frames byte-identical) are one error line. (--preserve-colors works per frame now.)"""
    (d / "mask.png").write_bytes((d / "style.png").read_bytes())
    base = video(d, d / "clip.mp4", d / "refused.mp4")
    for extra, name in [(["--content-mask", str(d / "mask.png")], "--content-mask"),
                        (["--scales", "16,32"], "--scales"),
                        (["--iterations-per-scale", "2"], "--iterations-per-scale"),
                        (["--original-size"], "--original-size")]:
        refused(runner, base + extra, d, f"{name}: `nst-jax video` does not apply this yet")
    refused(runner, base + ["--color-match", "pca"], d, "--color-match picks the colour transfer of --preserve-colors")
    refused(runner, base + ["--passes", "2"], d, "--passes applies to --method multipass only")
    refused(runner, base + ["--method", "multipass", "--long-term", "1,2"], d, "--long-term applies to --method sequential")
    refused(runner, base + ["--long-term", "2,4"], d, "1 among them")
    (d / "mask.png").unlink()
