"""Bad input, faults and long runs: one-line errors with exit 2, nothing partial, Ctrl-C saves, resume is exact."""

from __future__ import annotations

import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nst_jax import StyleConfig, cli, weights
from nst_jax.engine import batching, checkpoint
from nst_jax.network import vgg
from nst_jax.cli import plan as cli_plan
from nst_jax.errors import ConfigError
from nst_jax.engine.single import stylize
from nst_jax.engine.loop import init_state

from conftest import random_image


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    weights.write_synthetic(d / "vgg16.h5", arch="vgg16", seed=0)
    raw = (d / "syn.h5").read_bytes()
    (d / "truncated.h5").write_bytes(raw[: len(raw) // 3])
    (d / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(4096))
    with h5py.File(d / "wrong_shape.h5", "w") as f:  # our format, one kernel of the wrong shape
        with h5py.File(d / "syn.h5", "r") as src:
            for k, v in src.attrs.items():
                f.attrs[k] = v
            for name in src:
                g = f.create_group(name)
                g["kernel"] = src[name]["kernel"][()] if name != "conv3_2" else np.zeros((3, 3, 256, 128), np.float32)
                g["bias"] = src[name]["bias"][()]
    good = (random_image(40, 48, 1) * 255).astype(np.uint8)
    Image.fromarray(good).save(d / "content.png")
    Image.fromarray(good).save(d / "style.png")
    Image.fromarray(good[:, :, 0]).save(d / "grey.png")
    Image.fromarray(np.dstack([good, np.full(good.shape[:2], 128, np.uint8)])).save(d / "alpha.png")
    png = (d / "content.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is not an image\n")
    Image.fromarray(good[:8, :8]).save(d / "tiny.png")
    return d


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


CASES = [
    # (name, argv tail after CONTENT STYLE -o OUT, expected message fragment); {d} is the files dir
    ("missing content", ["{d}/nope.png", "{d}/style.png"], "nope.png"),
    ("truncated content", ["{d}/truncated.png", "{d}/style.png"], "truncated.png"),
    ("empty style", ["{d}/content.png", "{d}/empty.png"], "empty.png"),
    ("not an image", ["{d}/content.png", "{d}/text.png"], "text.png"),
    ("a directory", ["{d}", "{d}/style.png"], "directory"),
    ("too many pixels", ["{d}/content.png", "{d}/style.png", "--max-pixels", "100"], "--max-pixels"),
    ("missing weights", ["{d}/content.png", "{d}/style.png", "--weights", "{d}/none.h5"], "nst-jax weights"),
    ("truncated weights", ["{d}/content.png", "{d}/style.png", "--weights", "{d}/truncated.h5"], "truncated.h5"),
    ("corrupt weights", ["{d}/content.png", "{d}/style.png", "--weights", "{d}/corrupt.h5"], "corrupt.h5"),
    ("wrong shapes", ["{d}/content.png", "{d}/style.png", "--weights", "{d}/wrong_shape.h5"], "conv3_2"),
    ("wrong arch", ["{d}/content.png", "{d}/style.png", "--weights", "{d}/vgg16.h5"], "--arch vgg16"),
    ("negative weight", ["{d}/content.png", "{d}/style.png", "--style-weight", "-1"], "style_weight"),
    ("non-finite weight", ["{d}/content.png", "{d}/style.png", "--content-weight", "nan"], "content_weight"),
    ("unknown layer", ["{d}/content.png", "{d}/style.png", "--content-layers", "relu6_1"], "valid: conv1_1"),
    ("impossible size", ["{d}/content.png", "{d}/style.png", "--size", "8"], "at least 16"),
    ("tiny fixed shape", ["{d}/content.png", "{d}/style.png", "--shape", "8x8"], "at least 16"),
    ("bad shape syntax", ["{d}/content.png", "{d}/style.png", "--shape", "big"], "HEIGHTxWIDTH"),
    ("blend count", ["{d}/content.png", "{d}/style.png", "--style-blend-weights", "1,1"], "blend weights"),
    ("ema with lbfgs", ["{d}/content.png", "{d}/style.png", "--optimizer", "lbfgs", "--ema", "0.9"], "ema_decay"),
    ("batch + resume", ["{d}/content.png", "{d}/style.png", "--batch", "--resume", "{d}/x.npz"], "give -o a directory"),
    ("bad resume file", ["{d}/content.png", "{d}/style.png", "--resume", "{d}/text.png"], "checkpoint"),
]


@pytest.mark.parametrize("name, tail, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_no_output(name, tail, message, files, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NST_JAX_NO_DOWNLOAD", "1")
    out = tmp_path / "out.png"
    argv = [a.format(d=files) for a in tail[:2]] + ["-o", out, "--weights", files / "syn.h5", "--size", "32",
                                                     "--iterations", "2", "--no-progress"]
    argv += [a.format(d=files) for a in tail[2:]]
    code, _, err = run(["stylize", *argv], capsys)
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing partial


@pytest.mark.parametrize("source", ["grey.png", "alpha.png"])
def test_accepted_variants_run(source, files, capsys, tmp_path):
    code, _, err = run(["stylize", files / source, files / "style.png", "-o", tmp_path / "o.jpg", "--weights",
                        files / "syn.h5", "--size", "32", "--iterations", "1", "--no-progress"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "o.jpg").format == "JPEG"


def test_small_image_is_upscaled_to_the_working_size(files, capsys, tmp_path):
    code, _, err = run(["stylize", files / "tiny.png", files / "style.png", "-o", tmp_path / "o.png", "--weights",
                        files / "syn.h5", "--size", "32", "--iterations", "1", "--no-progress"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "o.png").size == (32, 32)


def test_internal_error_is_exit_1_without_traceback(files, capsys, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(batching, "stylize_many", boom)  # the engine under every command
    code, _, err = run(["stylize", files / "content.png", files / "style.png", "-o", tmp_path / "o.png",
                        "--weights", files / "syn.h5", "--size", "32", "--no-progress"], capsys)
    assert code == 1 and "internal error" in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_nonfinite_loss_keeps_the_best_image_before_it(files, capsys, tmp_path):
    """A run that diverges saves the lowest-loss iterate it saw before the loss became non-finite
    (not the last finite iterate, which is already far gone), and says the steps diverged."""
    from nst_jax import image

    out = tmp_path / "o.png"
    argv = ["stylize", files / "content.png", files / "style.png", "-o", out, "--weights", files / "syn.h5",
            "--size", "32", "--iterations", "5", "--optimizer", "sgd", "--lr", "1e4", "--set", "variable_space=network",
            "--set", "clamp=false", "--no-progress"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "became non-finite" in err and "--lr" in err
    # the same run in the library: where the losses go, and the iterate of each step
    cfg = cli.config_from_args(cli.build_parser().parse_args([str(a) for a in argv])).cfg
    net = weights.load_weights(files / "syn.h5")
    content, styles, _, _ = cli_plan.working_images(str(files / "content.png"), [str(files / "style.png")], cfg, None)
    full = stylize(content, styles[0], net.params, cfg, convention=net.convention)
    assert full.status == "nonfinite"
    finite = np.flatnonzero(np.isfinite(full.losses))
    best, last = int(finite[np.argmin(full.losses[finite])]), int(finite[-1])
    assert best != last  # the two rules differ on this run
    at = lambda k: image.to_uint8(stylize(content, styles[0], net.params, cfg.replace(iterations=k),  # noqa: E731
                                                   convention=net.convention).image)
    saved = np.asarray(Image.open(out).convert("RGB"))
    np.testing.assert_array_equal(saved, at(best))
    assert np.abs(saved.astype(int) - at(last).astype(int)).max() > 50


def test_a_loss_too_large_for_float32_points_at_the_weights(files, capsys, tmp_path):
    out = tmp_path / "o.png"
    code, _, err = run(["stylize", files / "content.png", files / "style.png", "-o", out, "--weights", files / "syn.h5",
                        "--size", "32", "--iterations", "3", "--style-weight", "1e39", "--no-progress"], capsys)
    assert code == 2 and "not finite from the start" in err, err
    assert "--style-weight" in err and "--lr" not in err


RESUMABLE = {
    "lbfgs": dict(optimizer="lbfgs"),
    "adam": dict(optimizer="adam", learning_rate=0.05),
    "matlab-best": dict(optimizer="adam", learning_rate=0.05, adam_eps_mode="sqrt_v", select="after_best"),
    "ema": dict(optimizer="adam", learning_rate=0.05, ema_decay=0.7),
    "lbfgs-zoom": dict(optimizer="lbfgs", lbfgs_linesearch="zoom"),
}


@pytest.mark.parametrize("kind", list(RESUMABLE))
def test_resume_from_checkpoint_equals_uninterrupted_run(vgg19_params, files, tmp_path, kind):
    content, style = random_image(40, 48, 5), random_image(40, 48, 6)
    cfg = StyleConfig(content_layers=("relu3_2",), style_layers=("relu1_1", "relu2_1", "relu3_1"), size=48,
                      iterations=12, chunk_size=4, init="noise", **RESUMABLE[kind])
    full = stylize(content, style, vgg19_params, cfg, seed=7, convention=vgg.CAFFE)
    meta = dict(config=cfg, seed=7, weights_fingerprint="abc", content_shape=content.shape)
    ckpt = tmp_path / "run.ckpt.npz"

    def stop_at_8(p):
        if p.iteration == 8:
            checkpoint.save(ckpt, p.state, p.losses, **meta)
            return True
        return False

    first = stylize(content, style, vgg19_params, cfg, seed=7, convention=vgg.CAFFE, callback=stop_at_8)
    assert first.status == "stopped" and first.iterations == 8
    template = init_state(np.zeros(content.shape, np.float32), cfg.program(), cfg.values())
    state, losses, header = checkpoint.load(ckpt, template, **meta)
    assert header["iteration"] == 8 and len(losses) == 8
    resumed = stylize(content, style, vgg19_params, cfg, seed=7, convention=vgg.CAFFE, resume=state,
                               resume_losses=losses)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    np.testing.assert_array_equal(resumed.image, full.image)
    np.testing.assert_array_equal(resumed.output, full.output)  # best iterate / EMA: the selected output too
    assert resumed.evaluations == full.evaluations
    if kind != "lbfgs":
        return  # the refusals below are the same for every optimiser
    # a checkpoint from other weights, another config or another seed is refused
    with pytest.raises(checkpoint.CheckpointError, match="other weights"):
        checkpoint.load(ckpt, template, **{**meta, "weights_fingerprint": "xyz"})
    with pytest.raises(checkpoint.CheckpointError, match="another config"):
        checkpoint.load(ckpt, template, **{**meta, "config": cfg.replace(style_weight=1.0)})
    with pytest.raises(checkpoint.CheckpointError, match="seed"):
        checkpoint.load(ckpt, template, **{**meta, "seed": 8})
    # more iterations are fine
    checkpoint.load(ckpt, template, **{**meta, "config": cfg.replace(iterations=100)})


def _wait_for(path: pathlib.Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.2)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_best_so_far_and_resume_finishes(sig, code, files, tmp_path, capsys):
    """Only the interrupted run needs a process of its own (to receive the signal); the refusal,
    the resume and the uninterrupted reference run in-process."""
    out = tmp_path / "o.png"
    args = ["stylize", str(files / "content.png"), str(files / "style.png"), "-o", str(out), "--weights",
            str(files / "syn.h5"), "--size", "32", "--preset", "matlab", "--no-progress",
            "--content-layers", "relu2_1", "--style-layers", "relu1_1,relu2_1"]  # shallow: compile time
    proc = subprocess.Popen([sys.executable, "-m", "nst_jax.cli", *args, "--iterations", "100000", "--save-every", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    try:
        _wait_for(tmp_path / "o_00003.png", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a watchdog that fires must not leave a 100,000-iteration run behind
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert out.exists() and Image.open(out).size == (48, 40)  # matlab: back to the original size
    ckpt = tmp_path / "o.png.ckpt.npz"
    assert ckpt.exists() and "--resume" in err
    # a new run refuses to clobber the checkpoint; --resume continues it to the end
    rc, _, err = run(args + ["--iterations", "3"], capsys)
    assert rc == 2 and "--resume" in err
    stopped_at = checkpoint.read_header(ckpt)["iteration"]
    assert stopped_at >= 3
    total = stopped_at + 2
    rc, stdout, err = run(args + ["--iterations", str(total), "--resume", str(ckpt)], capsys)
    assert rc == 0, err
    assert f"{total} iterations" in stdout
    assert not ckpt.exists()  # a finished run removes its checkpoint
    # pixel for pixel what an uninterrupted run of as many iterations writes
    ref = tmp_path / "ref.png"
    rc, _, err = run([a if a != str(out) else str(ref) for a in args] + ["--iterations", str(total)], capsys)
    assert rc == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(ref)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["content_weight", "style_weight", "tv_weight", "learning_rate", "iterations", "size",
                         "chunk_size", "pooling", "optimizer", "ema_decay", "init_noise_ratio", "style_scale",
                         "lbfgs_memory", "adam_b1", "content_layers", "style_layer_weights"]),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10_000), st.text(max_size=8),
                  st.none(), st.booleans(), st.lists(st.text(max_size=6), max_size=3).map(tuple),
                  st.lists(st.floats(), max_size=6).map(tuple)),
        max_size=4,
    )
)
def test_random_config_values_only_raise_config_error(changes):
    try:
        cfg = StyleConfig(**changes)
    except ConfigError:
        return
    # whatever was accepted is usable: finite non-negative weights, positive sizes
    assert cfg.iterations >= 0 and cfg.chunk_size > 0
    for name in ("content_weight", "style_weight", "tv_weight"):
        assert math.isfinite(getattr(cfg, name)) and getattr(cfg, name) >= 0


def test_cli_resume_under_scales_equals_the_uninterrupted_run(files, tmp_path, capsys, monkeypatch):
    """``--checkpoint-every`` under ``--scales`` (per-scale iterations): a checkpoint taken in the
    second scale, resumed with ``--resume``, writes the uninterrupted run's image pixel for pixel."""
    import shutil

    out = tmp_path / "o.png"
    args = ["stylize", files / "content.png", files / "style.png", "-o", out, "--weights", files / "syn.h5",
            "--size", "48", "--scales", "34,48", "--iterations", "6", "--optimizer", "adam", "--lr", "0.05",
            "--checkpoint-every", "2", "--no-progress", "--set", "content_layers=relu2_2",
            "--set", "style_layers=relu1_1,relu2_1"]
    kept = tmp_path / "scale2.ckpt.npz"
    real_save = checkpoint.save

    def save_and_keep_the_second_scales(path, state, losses, **kw):
        written = real_save(path, state, losses, **kw)
        if len(kw.get("scales_done", ())) == 1 and not kept.exists():
            shutil.copy(written, kept)  # the run goes on; this copy is an "interrupted" run's file
        return written

    monkeypatch.setattr(checkpoint, "save", save_and_keep_the_second_scales)
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert kept.exists()
    header = checkpoint.read_header(kept)
    assert header["scale"] == 1 and header["iteration"] == 2 and header["scales_done"][0][0] == 6
    reference = np.asarray(Image.open(out))
    out.unlink()
    (tmp_path / "o.png.ckpt.npz").unlink(missing_ok=True)
    code, stdout, err = run(args + ["--resume", kept], capsys)
    assert code == 0, err
    assert "of scale 2/2" in err and "9 iterations" in stdout  # 6 + 3 on the second scale
    np.testing.assert_array_equal(np.asarray(Image.open(out)), reference)
