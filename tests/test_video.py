"""Video: OpenCV flow against the synthetic clip's true flow, the flow cache on hostile files, the
multi-pass algorithm against a per-frame transcription, video files in and out (PyAV), and the
``nst-jax video`` command on a tiny clip (a file with audio, a folder of frames, resume, bad input)."""

from __future__ import annotations

import json
import pathlib

import av
import jax.numpy as jnp
import numpy as np
import pytest
from make_clip import make_clip

from nst_jax import StyleConfig, cli, image, weights
from nst_jax.video import flow, frames as video, io as video_io
from nst_jax.objective import temporal
from nst_jax.network import vgg

RNG = np.random.default_rng(0)
# shallow layers and a few iterations: the command's plumbing, not the art
SHALLOW = ["--content-layers", "relu2_1", "--style-layers", "relu1_1,relu2_1", "--iterations", "4",
           "--optimizer", "adam", "--lr", "0.02", "--size", "32", "--no-progress"]


def _write_clip(path: pathlib.Path, frames: np.ndarray, fps: int = 10, audio_seconds: float = 0.0,
                codec: str = "libx264") -> None:
    """A video file written with PyAV itself (and an AAC tone when ``audio_seconds``)."""
    out = av.open(str(path), "w")
    v = out.add_stream(codec, rate=fps)
    v.height, v.width = frames.shape[1:3]
    v.pix_fmt = "yuv420p"
    a = out.add_stream("aac", rate=16000) if audio_seconds else None
    for f in frames:
        for p in v.encode(av.VideoFrame.from_ndarray((f * 255).round().astype(np.uint8), format="rgb24")):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    if a is not None:
        n = int(16000 * audio_seconds) // 1024
        for k in range(n):
            tone = (0.3 * np.sin(np.arange(k * 1024, (k + 1) * 1024) * 0.05)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 16000, k * 1024
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    out.close()


def test_opencv_flow_follows_temporal_warps_convention_and_the_true_flow():
    # a smooth texture shifted by (dx, dy) = (3, 2): a[y, x] = b[y - 2, x - 3], so the flow a -> b is (-3, -2)
    from scipy.ndimage import gaussian_filter

    big = gaussian_filter(RNG.random((100, 120, 3)), (2, 2, 0))
    big = (big - big.min()) / (big.max() - big.min())
    a, b = big[10:74, 10:90], big[12:76, 13:93]
    for method in flow.FLOW_METHODS:
        f = flow.estimate(a, b, method)
        assert f.shape == (64, 80, 2) and f.dtype == np.float32
        inner = f[8:-8, 8:-8]
        np.testing.assert_allclose(np.median(inner.reshape(-1, 2), axis=0), [-3.0, -2.0], atol=0.05)
    # the synthetic clip: the estimated backward flow is close to the true one where it is visible,
    # and warping by it lines the frames up better than no motion at all
    frames, back, _ = make_clip(3, 64, 80, seed=0)
    est = flow.estimate(frames[1], frames[0], "dis")
    epe = np.linalg.norm(est - back[1], axis=-1)
    assert np.median(epe) < 0.3, np.median(epe)
    # flow.estimate's finer DIS settings: mean error 0.10 px here (the MEDIUM preset's was 0.33)
    assert epe.mean() < 0.2, epe.mean()
    warped = np.asarray(temporal.warp(jnp.asarray(frames[0]), jnp.asarray(est)))
    assert np.abs(warped - frames[1]).mean() < 0.6 * np.abs(frames[0] - frames[1]).mean()


def test_flow_cache_round_trips_and_ignores_hostile_files(tmp_path):
    key = {"input": "x", "frames": [0, None, 1]}
    cache = flow.FlowCache(tmp_path / "c", key, (6, 8))
    f = RNG.standard_normal((6, 8, 2)).astype(np.float32)
    cache.put("back", 1, f)
    np.testing.assert_array_equal(flow.FlowCache(tmp_path / "c", key, (6, 8)).get("back", 1), f)
    # another clip's key: not read, not written
    other = flow.FlowCache(tmp_path / "c", {**key, "input": "y"}, (6, 8))
    assert other.get("back", 1) is None
    other.put("fwd", 1, f)
    assert not (tmp_path / "c" / "fwd_000001.npy").exists()
    target = tmp_path / "c" / "back_000002.npy"
    hostile = {
        "shape": lambda fh: np.lib.format.write_array(fh, np.zeros((7, 8, 2), "<f4")),
        "dtype": lambda fh: np.lib.format.write_array(fh, np.zeros((6, 8, 2), "<f8")),
        "pickle": lambda fh: np.lib.format.write_array(fh, np.array([{"a": 1}] * 96, object).reshape(6, 8, 2),
                                                       allow_pickle=True),
        "nan": lambda fh: np.lib.format.write_array(fh, np.full((6, 8, 2), np.nan, "<f4")),
    }
    for name, write in hostile.items():
        with open(target, "wb") as fh:
            write(fh)
        assert cache.get("back", 2) is None, name
    with open(target, "wb") as fh:  # a header that promises more bytes than the file has
        np.lib.format.write_array(fh, np.zeros((6, 8, 2), "<f4"))
    target.write_bytes(target.read_bytes()[:-40])
    assert cache.get("back", 2) is None
    # a hostile entry is recomputed, never used
    a, b = RNG.random((6, 8, 3)), RNG.random((6, 8, 3))
    np.testing.assert_array_equal(cache.flow("back", 2, a, b, "farneback"), flow.estimate(a, b, "farneback"))


def test_multipass_batches_equal_the_frames_run_one_by_one(vgg19_params):
    """Every pass of ``stylize_multipass`` (all frames in one batch) against the pass written out
    here frame by frame with ``stylize``: the neighbours' mean T = (c_p ω_p + c_n ω_n)/(c_p + c_n),
    c = max(c_p, c_n), start s = δ·c·T + (1 − δ·c)·x, temporal term to s under c / 40."""
    from nst_jax import stylize

    frames, back, fwd = make_clip(3, 24, 32, seed=2)
    style = RNG.random((24, 32, 3)).astype(np.float32)
    cfg = StyleConfig(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"), optimizer="adam",
                      learning_rate=0.02, iterations=4, chunk_size=4, size=32)
    got = video.stylize_multipass(frames, style, vgg19_params, cfg, list(back), list(fwd), passes=2, blend=0.5,
                                  batch_size=3, convention=vgg.CAFFE)
    x = [stylize(f, style, vgg19_params, cfg, convention=vgg.CAFFE).output for f in frames]

    def warp_and_mask(i, j):
        to_j, back_j = (back[i], fwd[i]) if j == i - 1 else (fwd[j], back[j])
        w = np.asarray(temporal.warp(jnp.asarray(x[j]), jnp.asarray(to_j)))
        return w, np.asarray(temporal.consistency_mask(jnp.asarray(to_j), jnp.asarray(back_j)))

    for _ in (1, 2):
        new = []
        for i, f in enumerate(frames):
            pairs = [warp_and_mask(i, j) for j in (i - 1, i + 1) if 0 <= j < len(frames)]
            num = sum(c[..., None] * w for w, c in pairs)
            den = sum(c for _, c in pairs)[..., None]
            mean = np.where(den > 0, num / np.maximum(den, 1), x[i])
            c = np.minimum(den, 1)
            start = 0.5 * c * mean + (1 - 0.5 * c) * x[i]
            new.append(stylize(f, style, vgg19_params, cfg, convention=vgg.CAFFE, init_image=start,
                               temporal=(start, c[..., 0] / 40)).output)  # the hold: 1/40 of the weight
        x = new
    for i in range(3):
        np.testing.assert_allclose(got[i].output, x[i], atol=2e-4)
    assert np.abs(got[1].output - frames[1]).max() > 0.01  # it did optimise


def test_multipass_passes_and_blends_share_one_compiled_program(vgg19_params):
    """Pass 0 (temporal weights 0), the forward and backward passes, and another blend or
    temporal weight are one batched program: only values change between them."""
    from conftest import CompileCounter

    frames, back, fwd = make_clip(3, 24, 32, seed=4)
    style = RNG.random((24, 32, 3)).astype(np.float32)
    # a chunk length no other test uses: the batched chunk is traced here for the first time
    cfg = StyleConfig(content_layers=("relu2_1",), style_layers=("relu1_1",), optimizer="adam",
                      learning_rate=0.02, iterations=2, chunk_size=23, size=32)
    with CompileCounter() as count:
        video.stylize_multipass(frames, style, vgg19_params, cfg, list(back), list(fwd), passes=2, blend=0.5,
                                batch_size=3, convention=vgg.CAFFE)
        assert count.traces == 1, "the passes of one run compiled more than one program"
        video.stylize_multipass(frames, style, vgg19_params, cfg.replace(temporal_weight=7.0), list(back),
                                list(fwd), passes=1, blend=0.2, batch_size=3, convention=vgg.CAFFE)
        assert count.traces == 1, "another blend or temporal weight recompiled"


def test_video_files_and_frame_folders_read_back_what_was_written(tmp_path):
    frames, _, _ = make_clip(4, 32, 48, seed=0)
    _write_clip(tmp_path / "a.mp4", frames, audio_seconds=0.5)
    clip = video_io.probe(tmp_path / "a.mp4")
    assert (clip.kind, clip.width, clip.height, clip.frames, float(clip.fps), clip.has_audio) == \
        ("file", 48, 32, 4, 10.0, True)
    got = list(video_io.read_frames(clip, start=1, every=2))
    assert [i for i, _ in got] == [1, 3]
    assert np.abs(got[0][1] - frames[1]).mean() < 0.03  # H.264 at the default quality
    resized = list(video_io.read_frames(clip, stop=2, shape=(16, 24)))
    assert [a.shape for _, a in resized] == [(16, 24, 3)] * 2
    # a folder of frames
    d = tmp_path / "frames"
    for t, f in enumerate(frames):
        image.save_image(d / f"f{t:03d}.png", f)
    fclip = video_io.probe(d, fps=12)
    assert (fclip.kind, fclip.frames, float(fclip.fps), fclip.has_audio) == ("folder", 4, 12.0, False)
    np.testing.assert_allclose(next(video_io.read_frames(fclip))[1], image.load_image(d / "f000.png"))
    # written back with the audio copied (not re-encoded)
    notes = video_io.write_video(tmp_path / "b.mkv", (f for f in frames), 10, audio_from=tmp_path / "a.mp4")
    assert notes == []
    with av.open(str(tmp_path / "b.mkv")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"] and c.streams.audio[0].codec_context.name == "aac"
    with pytest.raises(Exception, match="already exists"):
        video_io.write_video(tmp_path / "b.mkv", list(frames), 10)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    frames, _, _ = make_clip(4, 24, 32, seed=3)
    _write_clip(d / "clip.mp4", frames, audio_seconds=0.4)
    for t, f in enumerate(frames):
        image.save_image(d / "in" / f"frame{t:02d}.png", f)
    image.save_image(d / "style.png", RNG.random((24, 24, 3)))
    return d


def _run(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _interrupt_on_call(monkeypatch, module, name: str, call: int) -> None:
    """Send this process SIGINT (Ctrl-C) just before the ``call``-th call of ``module.name``."""
    import os
    import signal

    original, calls = getattr(module, name), [0]

    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*a, **k)

    monkeypatch.setattr(module, name, wrapped)


def _frames(d: pathlib.Path) -> list[np.ndarray]:
    return [image.load_image(f) for f in sorted(d.glob("frame_*.png"))]


def test_cli_video_file_with_audio_ctrl_c_and_resume_give_the_uninterrupted_frames(work, capsys, monkeypatch):
    from nst_jax.video import frames as video_module

    common = [work / "clip.mp4", work / "style.png", "--weights", work / "syn.h5", *SHALLOW]
    code, stdout, err = _run(["video", common[0], common[1], "-o", work / "ref.mp4", *common[2:]], capsys)
    assert code == 0, err
    assert "4 frames" in stdout and "with audio" in stdout
    with av.open(str(work / "ref.mp4")) as c:
        assert c.streams.video[0].codec_context.width == 32 and c.streams.video[0].frames == 4
        assert c.streams.audio
    reference = _frames(work / "ref.mp4.frames")
    assert len(reference) == 4
    assert len(list((work / ".nst-flow").glob("*/back_*.npy"))) == 3  # flows cached for the next run
    # Ctrl-C while frame 2 is painted: frames 0 and 1 are kept, no video is written, exit 130
    args = ["video", common[0], common[1], "-o", work / "out.mp4", *common[2:]]
    with monkeypatch.context() as m:
        _interrupt_on_call(m, video_module, "stylize", 3)
        code, _, err = _run(args, capsys)
    assert code == 130 and "run the same command again to resume" in err, err
    assert len(_frames(work / "out.mp4.frames")) == 2 and not (work / "out.mp4").exists()
    # the same command resumes at frame 2 and gives the uninterrupted run's frames
    code, _, err = _run(args, capsys)
    assert code == 0, err
    assert "2 frames painted" in err
    for got, want in zip(_frames(work / "out.mp4.frames"), reference, strict=True):
        np.testing.assert_array_equal(got, want)
    # the same command again finds its own finished job (its frame folder's job.json): it encodes the
    # video from the frames again, painting nothing (a run killed as it encoded finishes so); another
    # job's command does not replace the video without --overwrite, which restarts the folder
    code, _, err = _run(args, capsys)
    assert code == 0 and "frames painted" not in err, err
    with av.open(str(work / "out.mp4")) as c:
        assert c.streams.video[0].frames == 4
    image.save_image(work / "style2.png", RNG.random((20, 20, 3)))
    code, _, err = _run(["video", common[0], work / "style2.png", "-o", work / "out.mp4", "--weights",
                         work / "syn.h5", *SHALLOW], capsys)
    assert code == 2 and "already exists" in err
    (work / "out.mp4").unlink()
    code, _, err = _run(["video", common[0], work / "style2.png", "-o", work / "out.mp4", "--weights",
                         work / "syn.h5", *SHALLOW], capsys)
    assert code == 2 and "frames of another job" in err
    code, _, err = _run(["video", common[0], work / "style2.png", "-o", work / "out.mp4", "--overwrite",
                         "--weights", work / "syn.h5", *SHALLOW], capsys)
    assert code == 0 and "4 frames painted" in err, err


def test_cli_video_folder_to_folder_multipass_resumes_after_its_last_pass(work, capsys, monkeypatch):
    from nst_jax.video import frames as video_module

    def args(out):
        return ["video", work / "in", work / "style.png", "-o", out, "--weights", work / "syn.h5", "--method",
                "multipass", "--passes", "2", "--every", "2", *SHALLOW]

    code, _, err = _run(args(work / "mp_ref"), capsys)
    assert code == 0, err
    assert sorted(p.name for p in (work / "mp_ref").iterdir()) == ["frame_000000.png", "frame_000001.png", "job.json"]
    assert "pass 3/3 done" in err
    job = json.loads((work / "mp_ref" / "job.json").read_text())
    assert job["method"] == "multipass" and job["frames"] == [0, None, 2]
    # Ctrl-C during pass 2: pass 1's frames are kept; the same command resumes from them
    with monkeypatch.context() as m:
        _interrupt_on_call(m, video_module, "stylize_many", 2)
        code, _, err = _run(args(work / "mp"), capsys)
    assert code == 130, err
    assert (work / "mp" / "pass.npy").exists() and not list((work / "mp").glob("frame_*"))
    code, _, err = _run(args(work / "mp"), capsys)
    assert code == 0 and "resuming after pass 2 of 3" in err, err
    for got, want in zip(_frames(work / "mp"), _frames(work / "mp_ref"), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not (work / "mp" / "pass.npy").exists()


def test_cli_video_long_term_holds_frames_two_back_caches_their_flows_and_resumes(work, capsys, monkeypatch):
    """--long-term 1,2 through the command: the flows of the pairs (t, t − 2) are estimated and
    cached, frame t's temporal target is the paper's long-term one built from the frames *as
    written* (checked against temporal.long_term_target here), and a run stopped at frame 3
    resumes to the uninterrupted frames (frames 1 and 2 read back from the folder)."""
    from nst_jax.video import frames as video_module

    def args(out):
        return ["video", work / "in", work / "style.png", "-o", out, "--weights", work / "syn.h5", "--long-term",
                "1,2", *SHALLOW, "--lr", "4"]

    seen = []
    original = video_module.stylize

    def spy(*a, **k):
        seen.append(k.get("temporal"))
        return original(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(video_module, "stylize", spy)
        code, _, err = _run(args(work / "lt_ref"), capsys)
    assert code == 0, err
    ref = _frames(work / "lt_ref")
    cache = next(p for p in (work / ".nst-flow").iterdir() if list(p.glob("back2_*.npy")))
    assert sorted(p.name for p in cache.glob("*2_*.npy")) == ["back2_000002.npy", "back2_000003.npy",
                                                              "fwd2_000002.npy", "fwd2_000003.npy"]
    frames = [image.resize(image.load_image(p), (24, 32), "bicubic") for p in sorted((work / "in").glob("*.png"))]
    for t in (2, 3):  # the target from the written frames t−1, t−2 and the cached flows
        ws, cs = [], []
        for j, tag in ((1, ""), (2, "2")):
            to_j = np.load(cache / f"back{tag}_{t:06d}.npy")
            back_j = np.load(cache / f"fwd{tag}_{t:06d}.npy")
            np.testing.assert_allclose(to_j, flow.estimate(frames[t], frames[t - j]), atol=1e-5)
            ws.append(np.asarray(temporal.warp(jnp.asarray(ref[t - j]), jnp.asarray(to_j))))
            cs.append(np.asarray(temporal.consistency_mask(jnp.asarray(to_j), jnp.asarray(back_j))))
        want_target, want_weights = temporal.long_term_target(ws, cs)
        np.testing.assert_allclose(seen[t][0], want_target, atol=1e-5)
        np.testing.assert_allclose(seen[t][1], want_weights, atol=1e-6)
    # stopped while frame 3 is painted, then the same command again
    with monkeypatch.context() as m:
        _interrupt_on_call(m, video_module, "stylize", 4)
        code, _, err = _run(args(work / "lt"), capsys)
    assert code == 130, err
    assert len(_frames(work / "lt")) == 3
    code, _, err = _run(args(work / "lt"), capsys)
    assert code == 0 and "1 frames painted" in err, err
    for got, want in zip(_frames(work / "lt"), ref, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", ["truncated", "pickle", "wrong_shape", "wrong_dtype", "nan", "huge", "no_header"])
def test_cli_multipass_ignores_a_hostile_pass_file_and_starts_over(work, capsys, case):
    """A ``pass.npy`` in the job folder that is not what this job wrote is never unpickled or
    trusted: the run starts again from pass 0 and gives the uninterrupted run's frames."""
    import pickle

    out = work / f"mp_hostile_{case}"
    argv = ["video", work / "in", work / "style.png", "-o", out, "--weights", work / "syn.h5", "--method",
            "multipass", "--passes", "1", "--every", "2", *SHALLOW]
    ref = work / "mp_hostile_ref"
    if not ref.exists():
        code, _, err = _run([*argv[:4], ref, *argv[5:]], capsys)
        assert code == 0, err
    # the job folder as an interrupted run of this job leaves it (job.json), with a bad pass file
    out.mkdir()
    (out / "job.json").write_bytes((ref / "job.json").read_bytes())
    good = np.zeros((2, 24, 32, 3), "<f4")  # 2 frames at the working size
    pf = out / "pass.npy"
    with open(pf, "wb") as f:
        if case == "pickle":
            pickle.dump({"passes": 1, "frames": good}, f)
        elif case == "no_header":
            np.lib.format.write_array(f, good, allow_pickle=False)
        else:
            np.lib.format.write_array(f, np.asarray([1], np.int64), allow_pickle=False)
            body = {"wrong_shape": np.zeros((2, 24, 31, 3), "<f4"), "wrong_dtype": good.astype("<f8"),
                    "nan": np.full_like(good, np.nan), "truncated": good, "huge": good}[case]
            if case == "huge":  # a header declaring 10^12 frames over a few bytes
                header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 24, 32, 3)}
                np.lib.format.write_array_header_1_0(f, header)
                f.write(b"\0" * 64)
            else:
                np.lib.format.write_array(f, body, allow_pickle=False)
    if case == "truncated":
        pf.write_bytes(pf.read_bytes()[:-100])
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    assert "resuming after pass" not in err and "pass 1/2 done" in err
    for got, want in zip(_frames(out), _frames(ref), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case, message", [
    ("text", "not a video FFmpeg can read"),
    ("unknown_codec", "video codec is unknown to FFmpeg (no decoder)"),
    ("audio_only", "has no video stream"),
    ("empty_dir", "no frames"),
    ("sizes_change", "frame sizes must not change mid-clip"),
    ("foreign_out", "holds files nst-jax did not write"),
    ("frames", "--frames takes A:B"),
    ("too_large", "over the limit"),
])
def test_cli_video_bad_input_is_one_error_line(work, tmp_path, capsys, case, message):
    src, out, extra = work / "clip.mp4", tmp_path / "o.mp4", []
    if case == "text":
        src = tmp_path / "x.mp4"
        src.write_text("not a video at all\n" * 50)
    elif case == "unknown_codec":
        # a real MP4 whose sample entry names a codec FFmpeg has never heard of ('avc1' -> 'zzzz')
        src = tmp_path / "odd.mp4"
        data = (work / "clip.mp4").read_bytes()
        assert data.count(b"avc1") >= 1
        src.write_bytes(data.replace(b"avc1", b"zzzz"))
    elif case == "audio_only":
        src = tmp_path / "a.m4a"
        c = av.open(str(src), "w", format="mp4")
        a = c.add_stream("aac", rate=16000)
        af = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        af.sample_rate = 16000
        for p in [*a.encode(af), *a.encode(None)]:
            c.mux(p)
        c.close()
    elif case == "empty_dir":
        src = tmp_path / "empty"
        src.mkdir()
    elif case == "sizes_change":
        src = tmp_path / "mixed"
        image.save_image(src / "a.png", RNG.random((24, 32, 3)))
        image.save_image(src / "b.png", RNG.random((26, 32, 3)))
        out = tmp_path / "o"
    elif case == "foreign_out":
        out = tmp_path / "mine"
        (out).mkdir()
        (out / "holiday.png").write_bytes(b"x")
    elif case == "frames":
        extra = ["--frames", "5:2"]
    elif case == "too_large":
        extra = ["--max-pixels", "100"]
    code, _, err = _run(["video", src, work / "style.png", "-o", out, "--weights", work / "syn.h5", *SHALLOW, *extra],
                        capsys)
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    if case == "foreign_out":
        assert (out / "holiday.png").read_bytes() == b"x"


# NTSC YIQ (scikit-image's yiq_from_rgb), written out here for the check
_YIQ = np.array([[0.299, 0.587, 0.114], [0.59590059, -0.27455667, -0.32134392], [0.21153661, -0.52273617, 0.31119955]])


@pytest.mark.parametrize("mode,method", [("swap", "sequential"), ("lum", "sequential"), ("lum", "multipass")])
def test_cli_video_preserve_colors_keeps_each_frames_own_colours(work, capsys, mode, method):
    """--preserve-colors works per frame: every painted frame keeps the chroma (I, Q) of its own
    source frame, not of frame 0 or the style's; and the luminance is painted."""
    out = work / f"colours-{mode}-{method}"
    code, _, err = _run(["video", work / "in", work / "style.png", "-o", out, "--weights", work / "syn.h5",
                         "--preserve-colors", mode, "--method", method, *SHALLOW, "--lr", "4"], capsys)
    assert code == 0, err
    got = _frames(out)
    sources = [image.resize(image.load_image(p), (24, 32), "bicubic") for p in sorted((work / "in").glob("*.png"))]
    assert len(got) == len(sources) == 4
    for g, s in zip(got, sources):
        yiq_g, yiq_s = g.astype(np.float64) @ _YIQ.T, s.astype(np.float64) @ _YIQ.T
        inside = (g > 0.01).all(-1) & (g < 0.99).all(-1)  # where the restore did not clip
        assert inside.mean() > 0.8
        assert np.abs(yiq_g[..., 1:] - yiq_s[..., 1:])[inside].max() < 0.01  # 8-bit rounding
        assert np.abs(yiq_g[..., 0] - yiq_s[..., 0]).mean() > 0.01  # painted
    # frames differ in colour, so one frame's chroma on all of them would have failed above
    assert np.abs(sources[0] @ _YIQ.T[:, 1:] - sources[-1] @ _YIQ.T[:, 1:]).max() > 0.05
