"""The command line on small images with synthetic weights: files written, exit codes, messages."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from nst_jax import cli, weights
from nst_jax import preset as nst_jax_preset
from nst_jax.engine.memory import memory_shortfall

from conftest import random_image


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    Image.fromarray((random_image(60, 80, 1) * 255).astype(np.uint8)).save(d / "content.png")
    Image.fromarray((random_image(50, 50, 2) * 255).astype(np.uint8)).save(d / "style.png")
    Image.fromarray((random_image(40, 70, 3) * 255).astype(np.uint8)).save(d / "style2.jpg")
    return d


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_stylize_writes_output_intermediates_montage_and_loss_plot(workdir, capsys, monkeypatch):
    monkeypatch.setenv("NST_JAX_NO_DOWNLOAD", "1")
    out = workdir / "out" / "result.png"  # a missing directory is created
    code, stdout, err = run(
        ["stylize", workdir / "content.png", workdir / "style.png", "-o", out, "--weights", workdir / "syn.h5",
         "--preset", "matlab", "--size", "48", "--iterations", "6", "--save-every", "2",
         "--montage", workdir / "out" / "montage.png", "--loss-plot", workdir / "out" / "loss.png",
         "--original-size", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    assert "not pretrained" in err  # the synthetic-weights warning
    assert Image.open(out).size == (80, 60)  # --original-size: back to the content's size
    for k in (2, 4):
        assert Image.open(workdir / "out" / f"result_{k:05d}.png").size == (48, 36)
    assert not (workdir / "out" / "result_00006.png").exists()  # the last one is the output itself
    # content | result | style, drawn at 256 px at least (a 36-px montage could not be looked at),
    # each named above its panel: dark text in the white strip over the panels
    montage = np.asarray(Image.open(workdir / "out" / "montage.png").convert("L"))
    assert 256 + 10 < montage.shape[0] < 256 + 60 and montage.shape[1] > 3 * 256 * 48 // 36
    strip = montage[: montage.shape[0] - 256 - 8]
    assert (strip < 100).any() and (strip > 250).mean() > 0.7
    assert Image.open(workdir / "out" / "loss.png").format == "PNG"
    assert "6 iterations" in stdout


def test_stylize_refuses_to_overwrite_before_any_work(workdir, capsys):
    target = workdir / "exists.png"
    target.write_bytes(b"user's file")
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", "-o", target,
                        "--weights", workdir / "syn.h5"], capsys)
    assert code == 2
    assert err.strip().startswith("error:") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert target.read_bytes() == b"user's file"


def test_blend_two_styles_and_set_fields(workdir, capsys):
    out = workdir / "blend.png"
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", workdir / "style2.jpg", "-o", out,
                        "--weights", workdir / "syn.h5", "--style-blend-weights", "0.7,0.3", "--size", "40",
                        "--iterations", "3", "--set", "optimizer=adam", "--set", "learning_rate=0.01",
                        "--style-scale", "1.5", "--no-progress"], capsys)
    assert code == 0, err
    assert Image.open(out).size == (40, 30)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--style-layers", "relu1_1,relu9_9"], "valid: conv1_1"),
        (["--style-weight", "-1"], "style_weight must be"),
        (["--set", "nonsense=1"], "unknown config field"),
        (["--preset", "nope"], "unknown preset"),
        (["--style-blend-weights", "1,2"], "2 style blend weights for 1 styles"),
        (["--iterations", "x"], "invalid int value"),
    ],
)
def test_bad_options_are_one_line_errors(workdir, capsys, extra, message):
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", "-o", workdir / "never.png",
                        "--weights", workdir / "syn.h5", *extra], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (workdir / "never.png").exists()


def test_missing_weights_says_which_command_gets_them(workdir, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NST_JAX_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("NST_JAX_NO_DOWNLOAD", "1")
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", "-o", tmp_path / "x.png"], capsys)
    assert code == 2 and "nst-jax weights download --arch vgg19" in err


def test_demo_runs_on_synthetic_weights(tmp_path, capsys):
    code, stdout, err = run(["demo", "--synthetic", "--iterations", "4", "--size", "48", "-o", tmp_path / "demo",
                             "--no-progress"], capsys)
    assert code == 0, err
    for name in ("result.png", "montage.png", "loss.png"):
        assert (tmp_path / "demo" / name).exists()


def test_presets_lists_every_preset(capsys):
    code, out, _ = run(["presets"], capsys)
    assert code == 0
    for name in ("keras", "pytorch", "matlab", "gatys", "jcjohnson", "default"):
        assert name in out
    code, out, _ = run(["presets", "matlab", "--json"], capsys)
    assert json.loads(out)["adam_eps_mode"] == "sqrt_v"


def test_batch_writes_one_image_per_style_and_a_manifest(workdir, capsys):
    outdir = workdir / "batch"
    styles_dir = workdir / "styles"
    styles_dir.mkdir()
    for k in range(3):
        Image.fromarray((random_image(30 + 10 * k, 40, 20 + k) * 255).astype(np.uint8)).save(styles_dir / f"s{k}.png")
    code, stdout, err = run(["stylize", workdir / "content.png", workdir / "style.png", "--styles-dir", styles_dir,
                             "-o", outdir, "--weights", workdir / "syn.h5", "--size", "40", "--iterations", "3",
                             "--set", "optimizer=adam", "--batch-size", "2", "--no-progress"], capsys)
    assert code == 0, err
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert len(manifest["results"]) == 4
    for entry in manifest["results"]:
        assert pathlib.Path(entry["output"]).exists()
        assert Image.open(entry["output"]).size == (40, 30)
        assert np.isfinite(entry["final_loss"]) and entry["iterations"] == 3 and entry["seed"] == 0
    assert [pathlib.Path(e["style"]).name for e in manifest["results"]] == ["style.png", "s0.png", "s1.png", "s2.png"]
    assert manifest["config"]["optimizer"] == "adam"
    # a second run refuses to overwrite
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", "--batch", "-o", outdir,
                        "--weights", workdir / "syn.h5", "--size", "40", "--iterations", "1"], capsys)
    assert code == 2 and "--overwrite" in err


def test_preserve_colors_and_coarse_to_fine(workdir, capsys):
    out = workdir / "c2f.png"
    code, stdout, err = run(["stylize", workdir / "content.png", workdir / "style.png", "-o", out,
                             "--weights", workdir / "syn.h5", "--size", "48", "--scales", "32,48",
                             "--iterations-per-scale", "3,2", "--preserve-colors", "swap", "--set", "optimizer=adam",
                             "--save-every", "2", "--no-progress"], capsys)
    assert code == 0, err
    assert "5 iterations" in stdout
    assert Image.open(out).size == (48, 36)
    # intermediates count iterations over all scales; each is the iterate itself, at the scale it
    # was taken at: the one at 2 is from the 32-px scale (not upsampled to the final 48x36)
    assert Image.open(workdir / "c2f_00002.png").size == (32, 24)
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", "-o", workdir / "bad.png",
                        "--weights", workdir / "syn.h5", "--size", "48", "--scales", "32,40"], capsys)
    assert code == 2 and "last scale" in err


def test_size_that_will_not_fit_is_a_clear_error_before_any_work(workdir, capsys, monkeypatch):
    from nst_jax.engine import memory

    free_bytes = 3 * 2**29  # 1.5 GiB free: a 384x512 default run does not fit, a smaller one does
    monkeypatch.setattr(memory, "free_device_memory", lambda device=None: free_bytes)
    out = workdir / "toolarge.png"
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", "-o", out,
                        "--weights", workdir / "syn.h5", "--size", "512", "--no-progress"], capsys)
    assert code == 2
    errors = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("error: a 384x512 run needs about") and "--size" in errors[0]
    assert "1.5 GiB is free" in errors[0] and "Traceback" not in err
    assert not out.exists()
    # batch runs are checked too
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", workdir / "style2.jpg", "-o",
                        workdir / "toolarge_batch", "--batch", "--weights", workdir / "syn.h5", "--size", "512",
                        "--no-progress"], capsys)
    assert code == 2 and "needs about" in err and not (workdir / "toolarge_batch" / "manifest.json").exists()
    # the suggested size does fit the same estimate
    need, free, fits = memory_shortfall(384, 512, nst_jax_preset("default"), free=free_bytes)
    assert need > free and 16 <= fits < 512 and f"--size {fits} " in errors[0]
    assert memory_shortfall(fits * 3 // 4, fits, nst_jax_preset("default"), free=free) is None
    assert memory_shortfall(384, 512, nst_jax_preset("default"), free=64 * 2**30) is None
    # split over 4 devices, each needs a quarter of the optimisation (the one-off style pass, which
    # peaks before the optimisation does, and the host-side images are not split) and a size twice
    # as long fits
    from nst_jax.engine.memory import estimate_bytes_per_result, estimate_run_bytes

    cfg = nst_jax_preset("default")
    one, four = (estimate_run_bytes(384, 512, cfg, style_shapes=[(384, 512)], devices=n) for n in (1, 4))
    per = estimate_bytes_per_result(384, 512, cfg) + 4 * cfg.iterations
    style_pass = 384 * 512 * 320 * 4  # one forward pass at the style's size, float32
    assert style_pass < per and one - four == per - max(per / 4, style_pass)
    _, _, fits1 = memory_shortfall(1536, 2048, cfg, free=2**31)
    _, _, fits4 = memory_shortfall(1536, 2048, cfg, free=2**31, devices=4)
    assert fits1 >= 256 and abs(fits4 - 2 * fits1) <= 32, (fits1, fits4)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_batch_two_processes_each_write_their_share(workdir, tmp_path, capsys):
    """Two processes on this machine stand in for two hosts: jax.distributed.initialize with a
    127.0.0.1 coordinator; each runs and writes only its share, with the single-process losses."""
    import os
    import subprocess
    import sys

    styles = [workdir / "style.png", workdir / "style2.jpg", workdir / "content.png"]
    common = ["stylize", workdir / "content.png", *styles, "--batch", "--weights", workdir / "syn.h5",
              "--size", "32", "--iterations", "2", "--no-progress", "--content-layers", "relu2_1",
              "--style-layers", "relu1_1,relu2_1"]  # shallow: three processes compile it
    env = dict(os.environ, JAX_PLATFORMS="cpu", NST_JAX_CACHE_DIR="")
    env.pop("XLA_FLAGS", None)
    port = _free_port()
    out = tmp_path / "dist"
    procs = [subprocess.Popen([sys.executable, "-m", "nst_jax.cli", *map(str, common), "-o", str(out), "--distributed",
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_o, e) in zip(procs, results):
        assert p.returncode == 0, e[-2000:]
    manifests = [json.loads((out / f"manifest-{i}.json").read_text()) for i in range(2)]
    assert [m["host"] for m in manifests] == [0, 1] and all(m["hosts"] == 2 for m in manifests)
    assert [e["style"] for e in manifests[0]["results"]] == [str(styles[0]), str(styles[2])]
    assert [e["style"] for e in manifests[1]["results"]] == [str(styles[1])]
    assert not (out / "manifest.json").exists()
    for m in manifests:
        for e in m["results"]:
            assert pathlib.Path(e["output"]).is_file()
    # the same batch in one process (this one: no need for a third)
    single = tmp_path / "single"
    assert cli.main([*map(str, common), "-o", str(single)]) == 0
    ref = {e["style"]: e["final_loss"] for e in json.loads((single / "manifest.json").read_text())["results"]}
    for m in manifests:
        for e in m["results"]:
            np.testing.assert_allclose(e["final_loss"], ref[e["style"]], rtol=1e-4)


def test_distributed_without_a_coordinator_is_a_one_line_error(workdir, capsys, monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", "-o", workdir / "nodist",
                        "--batch", "--distributed", "--weights", workdir / "syn.h5"], capsys)
    assert code == 2 and err.strip().startswith("error: JAX_NUM_PROCESSES must be an integer")
    assert len(err.strip().splitlines()) == 1


def test_compilation_cache_is_reused_by_a_second_process(workdir, tmp_path):
    """README: a second run of the same size and settings skips compilation. Each run is its own
    process (the cache is per process once set); the cache folder is listed after each."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "xla"
    # (every compilation is cached: at 32 px one can take under the CLI's 1 s threshold on a quiet machine)
    env = dict(os.environ, NST_JAX_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    code = "import sys; from nst_jax.cli import main; sys.exit(main(sys.argv[1:]))"

    def stylize(size: int, out: str) -> set[str]:
        argv = ["stylize", str(workdir / "content.png"), str(workdir / "style.png"), "-o", str(tmp_path / out),
                "--weights", str(workdir / "syn.h5"), "--size", str(size), "--iterations", "3", "--preset", "pytorch",
                "--no-progress"]
        proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return {p.name for p in cache.rglob("*") if p.is_file()}

    first = stylize(32, "a.png")
    assert first, "the first run wrote no cache entries"
    assert stylize(32, "b.png") == first  # same size and settings: nothing new compiled
    assert stylize(48, "c.png") - first  # another size: new programs


def test_skip_memory_check_runs_anyway_and_debug_shows_the_traceback(workdir, capsys, monkeypatch):
    from nst_jax.engine import memory
    from nst_jax.errors import ConfigError, ImageError

    monkeypatch.setattr(memory, "free_device_memory", lambda device=None: 2**20)  # 1 MiB "free"
    argv = ["stylize", workdir / "content.png", workdir / "style.png", "-o", workdir / "skip.png",
            "--weights", workdir / "syn.h5", "--size", "32", "--iterations", "2", "--no-progress"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "needs about" in err and "--skip-memory-check" in err
    code, out, err = run(argv + ["--skip-memory-check"], capsys)
    assert code == 0, err
    assert (workdir / "skip.png").exists() and "2 iterations" in out
    # --debug: the same refusal raises (a traceback) instead of printing one line
    with pytest.raises(ConfigError, match="needs about"):
        cli.main([str(a) for a in ["--debug", *argv[:4], workdir / "skip2.png", *argv[5:]]])
    with pytest.raises(ImageError, match="no such file"):
        cli.main(["--debug", "stylize", str(workdir / "missing.png"), str(workdir / "style.png"), "-o",
                  str(workdir / "x.png"), "--weights", str(workdir / "syn.h5")])


@pytest.mark.parametrize("existing, extra", [
    ("keep_00002.png", ["--save-every", "2"]),
    ("keep_montage.png", ["--montage", "{d}/keep_montage.png"]),
    ("keep_loss.png", ["--loss-plot", "{d}/keep_loss.png"]),
])
def test_existing_intermediate_montage_or_plot_is_refused_before_any_work(workdir, capsys, tmp_path, existing, extra):
    from nst_jax.engine import batching

    target = tmp_path / existing
    target.write_bytes(b"precious")
    called = []
    real = batching.stylize_many

    def spy(*a, **k):
        called.append(1)
        return real(*a, **k)

    import unittest.mock

    with unittest.mock.patch.object(batching, "stylize_many", spy):  # the engine under every command
        code, _, err = run(["stylize", workdir / "content.png", workdir / "style.png", "-o", tmp_path / "keep.png",
                            "--weights", workdir / "syn.h5", "--size", "32", "--iterations", "5", "--no-progress",
                            *[e.format(d=tmp_path) for e in extra]], capsys)
    assert code == 2 and "already exists" in err and existing in err
    assert called == [] and not (tmp_path / "keep.png").exists()
    assert target.read_bytes() == b"precious"
