"""Every option of every command either changes what the command does or is refused in one line.

The walk reads the options from the parser itself (``cli.build_parser``), so a new option that no
probe covers fails ``test_every_option_has_a_probe``. Each probe runs the command twice, in-process
and in fresh folders: the baseline, then the baseline with the option (a value that is valid on
its own). The option passes when the exit code, stdout, stderr (numbers masked), the files left
behind (their bytes), the files written on the way (checkpoints, flows) or, for the few options
that by design change the compiled program and not the picture, the engine's plan (the config and
run arguments it is called with) differ; or when the command refuses it: exit 2, one ``error:``
line. An option accepted and ignored leaves all of these equal, and fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
from typing import Any, NamedTuple

import numpy as np
import pytest
from make_clip import make_clip

from nst_jax import cli, image, weights

RNG = np.random.default_rng(7)


class Probe(NamedTuple):
    args: tuple  # the option and its value(s), and any option it needs with it (replacing the
    # baseline's); "{d}" is the fixture folder, "{run}" the run's
    extra: tuple = ()  # added to the baseline and the probe alike (a context the option needs)
    scenario: str = ""  # a set-up both runs share (see _scenario)
    plan: bool = False  # changes the compiled program by design, never the picture


STYLE2 = "{d}/style2.png"  # a second style: a positional, placed after the baseline's style
SHALLOW = ("--content-layers", "relu2_1", "--style-layers", "relu1_1,relu2_1", "--iterations", "3")
BASE = {
    "stylize": ("stylize", "{d}/content.png", "{d}/style.png", "-o", "{run}/out.png", "--weights", "{d}/syn.h5",
                "--size", "32", *SHALLOW),
    "video": ("video", "{d}/clip", "{d}/style.png", "-o", "{run}/frames", "--weights", "{d}/syn.h5", "--size", "32",
              "--content-layers", "relu2_1", "--style-layers", "relu1_1", "--iterations", "2"),
    "demo": ("demo", "--synthetic", "-o", "{run}/demo", "--size", "32", "--iterations", "2"),
    "presets": ("presets",),
    "weights convert": ("weights", "convert", "{d}/keras16.h5", "-o", "{run}/w.h5"),
    "weights download": ("weights", "download", "--arch", "vgg16", "--weights-dir", "{run}/w", "--url", "{url}/a.h5",
                         "--sha256", "{sha}"),
    "weights synthetic": ("weights", "synthetic", "-o", "{run}/s.h5", "--arch", "vgg16"),
    "weights info": ("weights", "info", "{d}/syn.h5"),
}

# the options shared by `stylize` and `video` (the config's and the run's)
CONFIG = {
    "--preset": Probe(("--preset", "matlab")),
    "--weights": Probe(("--weights", "{d}/syn2.h5")),
    "--no-download": Probe(("--no-download",), scenario="offline"),
    "--no-progress": Probe(("--no-progress",)),
    "--arch": Probe(("--arch", "vgg16", "--weights", "{d}/syn16.h5")),
    "--pooling": Probe(("--pooling", "avg")),
    "--content-layers": Probe(("--content-layers", "relu1_2")),
    "--content-layer-weights": Probe(("--content-layer-weights", "3")),
    "--content-weight": Probe(("--content-weight", "500")),
    "--style-layers": Probe(("--style-layers", "relu1_2")),
    "--style-layer-weights": Probe(("--style-layer-weights", "1,30"), extra=("--style-layers", "relu1_1,relu2_1")),
    "--style-weight": Probe(("--style-weight", "1e4")),
    "--style-blend-weights": Probe(("--style-blend-weights", "1,4"), extra=(STYLE2,)),
    "--style-loss": Probe(("--style-loss", "wasserstein")),
    "--normalize-gradients": Probe(("--normalize-gradients",)),
    "--tv-weight": Probe(("--tv-weight", "10")),
    "--temporal-weight": Probe(("--temporal-weight", "5000")),
    "--optimizer": Probe(("--optimizer", "adam")),
    "--lr": Probe(("--lr", "0.3")),
    "--linesearch": Probe(("--linesearch", "zoom")),
    "--iterations": Probe(("--iterations", "1")),
    "--ema": Probe(("--ema", "0.5"), extra=("--optimizer", "adam")),
    "--chunk-size": Probe(("--chunk-size", "1"), plan=True),
    "--precision": Probe(("--precision", "bf16")),
    "--conv": Probe(("--conv", "direct"), plan=True),
    "--remat": Probe(("--remat",), plan=True),
    "--original-size": Probe(("--original-size",)),
    "--preserve-colors": Probe(("--preserve-colors", "lum")),
    "--init": Probe(("--init", "noise")),
    "--seed": Probe(("--seed", "3")),
    "--set": Probe(("--set", "tv_weight=20")),
    "--size": Probe(("--size", "24")),
    "--shape": Probe(("--shape", "16x24")),
    "--style-scale": Probe(("--style-scale", "0.5")),
    "--max-pixels": Probe(("--max-pixels", "100")),
    "--skip-memory-check": Probe(("--skip-memory-check",), scenario="no memory"),
    "--scales": Probe(("--scales", "16,32")),
    "--iterations-per-scale": Probe(("--iterations-per-scale", "1")),
    "--color-match": Probe(("--color-match", "pca")),
    "--devices": Probe(("--devices", "2"), plan=True),
    "--mesh": Probe(("--mesh", "1x2"), plan=True),
    "--content-mask": Probe(("--content-mask", "{d}/mask.png"), extra=(STYLE2,)),
}
PROBES: dict[str, dict[str, Probe]] = {
    "stylize": {
        **CONFIG,
        "-o": Probe(("-o", "{run}/other.png")),
        "--save-every": Probe(("--save-every", "1")),
        "--montage": Probe(("--montage", "{run}/m.png")),
        "--loss-plot": Probe(("--loss-plot", "{run}/l.png")),
        "--overwrite": Probe(("--overwrite",), scenario="output exists"),
        "--checkpoint-every": Probe(("--checkpoint-every", "1")),
        "--checkpoint": Probe(("--checkpoint", "{run}/c.npz"), extra=("--checkpoint-every", "1")),
        "--resume": Probe(("--resume", "{run}/out.png.ckpt.npz"), scenario="interrupted"),
        "--web": Probe(("--web",)),  # the live view (its address on stderr); tests/test_serve_web.py watches it
        "--batch": Probe(("--batch", "-o", "{run}/many")),
        "--styles-dir": Probe(("--styles-dir", "{d}/styles", "-o", "{run}/many")),
        "--batch-size": Probe(("--batch-size", "1")),
        "--format": Probe(("--format", "jpg")),
        "--grid": Probe(("--grid", "{run}/g.png")),
        "--distributed": Probe(("--distributed",)),
        "--coordinator": Probe(("--coordinator", "127.0.0.1:1")),
        "--num-processes": Probe(("--num-processes", "1")),
        "--process-id": Probe(("--process-id", "0")),
    },
    "video": {
        **CONFIG,
        "-o": Probe(("-o", "{run}/other")),
        "--method": Probe(("--method", "multipass")),
        "--passes": Probe(("--passes", "1"), extra=("--method", "multipass")),
        "--blend": Probe(("--blend", "0.9"), extra=("--method", "multipass")),
        "--batch-size": Probe(("--batch-size", "1"), extra=("--method", "multipass"), plan=True),
        "--long-term": Probe(("--long-term", "1,2")),
        "--flow": Probe(("--flow", "farneback")),
        "--fps": Probe(("--fps", "5")),
        "--frames": Probe(("--frames", "1:")),
        "--every": Probe(("--every", "2")),
        "--max-frames": Probe(("--max-frames", "2")),
        "--overwrite": Probe(("--overwrite",), scenario="another job"),
    },
    "demo": {
        "-o": Probe(("-o", "{run}/elsewhere")),
        "--preset": Probe(("--preset", "matlab")),
        "--weights": Probe(("--weights", "{d}/syn.h5")),
        "--synthetic": Probe((), scenario="offline"),  # (the probe drops the baseline's --synthetic)
        "--iterations": Probe(("--iterations", "1")),
        "--size": Probe(("--size", "24")),
        "--overwrite": Probe(("--overwrite",), scenario="demo exists"),
        "--no-progress": Probe(("--no-progress",)),
    },
    "presets": {"--json": Probe(("--json",))},
    "weights convert": {
        "-o": Probe(("-o", "{run}/other.h5")),
        "--input-convention": Probe(("--input-convention", "torchvision")),
        "--overwrite": Probe(("--overwrite",), scenario="converted exists"),
    },
    "weights download": {
        "--source": Probe(("--source", "torchvision")),
        "--arch": Probe(("--arch", "vgg19")),
        "--weights-dir": Probe(("--weights-dir", "{run}/w2")),
        "--url": Probe(("--url", "{url}/b.h5", "--sha256", "{sha_b}")),
        "--sha256": Probe(("--sha256", "0" * 64)),
        "--overwrite": Probe(("--overwrite",), scenario="downloaded exists"),
        "--no-progress": Probe(("--no-progress",)),
        "--timeout": Probe(("--timeout", "0.000001")),
    },
    "weights synthetic": {
        "-o": Probe(("-o", "{run}/t.h5")),
        "--seed": Probe(("--seed", "5")),
        "--arch": Probe(("--arch", "vgg19")),
        "--convention": Probe(("--convention", "torchvision")),
        "--stride-on": Probe(("--stride-on", "3x3")),
        "--overwrite": Probe(("--overwrite",), scenario="synthetic exists"),
    },
    "weights info": {},
}
# Not walked, with the reason: the top-level parser's own flag and `bench`'s pass-through.
NOT_WALKED = {
    "--debug": "the top-level parser's flag (shows tracebacks), not a command's; test_errors covers it",
    "bench": "passes everything after it to scripts/benchmark.py (test_benchmark_script covers that parser)",
    "serve": "a long-running server, not a run with a result: tests/test_serve*.py start it with --port, --data-dir, "
             "--weights, --max-batch, --max-pending and check --host/--token (check_bind), the limits and the drain",
}


def _commands(parser) -> dict[str, Any]:
    """{"stylize": its parser, "weights convert": ..., ...} from the parser tree."""
    import argparse

    out = {}

    def walk(p, prefix):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[" ".join(prefix)] = p
            return
        for name, child in subs[0].choices.items():
            walk(child, prefix + [name])

    walk(parser, [])
    return out


def _options(p) -> list[str]:
    """Each optional argument's long name (or its only name), help excluded."""
    names = []
    for a in p._actions:
        if not a.option_strings or a.dest == "help":
            continue
        longs = [o for o in a.option_strings if o.startswith("--")]
        names.append("-o" if "-o" in a.option_strings else (longs[0] if longs else a.option_strings[0]))
    return names


def test_every_option_has_a_probe():
    """A new option without a probe fails here: add it to PROBES (and make it work or refuse it)."""
    parser = cli.build_parser()
    assert _options(parser) == ["--debug"]
    commands = _commands(parser)
    walked = set(commands) - {n for n in NOT_WALKED if not n.startswith("-")}
    assert walked == set(PROBES), walked ^ set(PROBES)
    for name, p in commands.items():
        if name in NOT_WALKED:
            continue
        missing = set(_options(p)) - set(PROBES[name])
        stale = set(PROBES[name]) - set(_options(p))
        assert not missing and not stale, (name, sorted(missing), sorted(stale))


# --------------------------------------------------------------------------------------------
# the runs


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    from test_weights import write_keras_legacy

    d = tmp_path_factory.mktemp("options")
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    weights.write_synthetic(d / "syn2.h5", arch="vgg19", seed=1)
    weights.write_synthetic(d / "syn16.h5", arch="vgg16", seed=2)
    image.save_image(d / "content.png", RNG.random((36, 48, 3)))
    image.save_image(d / "style.png", RNG.random((30, 30, 3)))
    image.save_image(d / "style2.png", RNG.random((28, 40, 3)) * 0.5)
    image.save_image(d / "styles" / "s.png", RNG.random((30, 30, 3)))
    mask = np.zeros((36, 48), np.float32)
    mask[:, 24:] = 1.0
    image.save_image(d / "mask.png", mask[..., None].repeat(3, axis=2))
    frames, _, _ = make_clip(3, 24, 32, seed=5)
    for t, f in enumerate(frames):
        image.save_image(d / "clip" / f"f{t:02d}.png", f)
    for name, seed in (("keras16.h5", 3), ("b.h5", 4)):
        write_keras_legacy(d / name, weights.synthetic_params("vgg16", seed), "vgg16", generation="new")
    return d


@pytest.fixture(scope="module")
def url(d):
    """A local server for `weights download` (127.0.0.1 only)."""
    import http.server
    import threading

    from test_weights import _Handler

    routes = {"/a.h5": (d.joinpath("keras16.h5").read_bytes(),), "/b.h5": (d.joinpath("b.h5").read_bytes(),)}
    routes = {k: (v[0], len(v[0])) for k, v in routes.items()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"routes": routes}))
    server.daemon_threads = True
    server.handle_error = lambda *a: None  # a client that gave up (--timeout) is not the command's output
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Outcome(NamedTuple):
    code: int
    stdout: str
    stderr: str
    files: dict  # path relative to the run folder -> sha256 of its bytes
    written: tuple  # every path written atomically on the way (relative), in order, deduplicated
    plan: tuple  # (config, run arguments) of every engine call


def _mask(text: str, run: pathlib.Path) -> str:
    text = text.replace(str(run), "{run}")
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)


def _scenario(name: str, run: pathlib.Path, d: pathlib.Path, argv: list[str], monkeypatch, capsys) -> list[str]:
    """Set up what both runs share; returns the argv to use."""
    from nst_jax import errors

    if name == "offline":  # no weights anywhere, and any download fails at once
        monkeypatch.setenv("NST_JAX_WEIGHTS", str(run / "no-weights"))
        monkeypatch.delenv("NST_JAX_NO_DOWNLOAD", raising=False)

        def offline(*a, **k):
            raise errors.WeightsError("offline (test)")

        monkeypatch.setattr(weights, "download", offline)
        if "--weights" in argv:
            i = argv.index("--weights")
            argv = argv[:i] + argv[i + 2:]
    elif name == "no memory":
        from nst_jax.engine import memory

        monkeypatch.setattr(memory, "available_ram", lambda: 1 << 20)
    elif name == "output exists":
        image.save_image(run / "out.png", np.zeros((4, 4, 3)))
    elif name == "demo exists":
        image.save_image(run / "demo" / "result.png", np.zeros((4, 4, 3)))
    elif name == "another job":
        (run / "frames").mkdir(parents=True)
        (run / "frames" / "job.json").write_text(json.dumps({"another": "job"}))
    elif name in ("converted exists", "synthetic exists"):
        shutil.copy(d / "syn.h5", run / ("w.h5" if name == "converted exists" else "s.h5"))
    elif name == "downloaded exists":
        (run / "w").mkdir()
        shutil.copy(d / "syn.h5", run / "w" / "vgg16.h5")
    elif name == "interrupted":  # a run stopped by Ctrl-C left its checkpoint beside -o
        import signal

        from nst_jax.engine import batching

        original = batching.stylize_many  # the engine under every command

        def interrupted(*a, **k):
            os.kill(os.getpid(), signal.SIGINT)
            return original(*a, **k)

        with monkeypatch.context() as m:
            m.setattr(batching, "stylize_many", interrupted)
            assert cli.main(argv + ["--chunk-size", "1"]) == 130
        capsys.readouterr()
        assert (run / "out.png.ckpt.npz").exists()
        argv = argv + ["--chunk-size", "1"]
    elif name:
        raise AssertionError(name)
    return argv


def _run(argv: list[str], run: pathlib.Path, monkeypatch, capsys) -> Outcome:
    from nst_jax.engine import batching, checkpoint, single as engine
    from nst_jax import files
    from nst_jax.video import frames as video

    written: list[str] = []
    plan: list = []

    def logged(fn):
        def wrapper(path, *a, **k):
            p = pathlib.Path(path)
            name = str(p.relative_to(run)) if p.is_relative_to(run) else str(p)
            if name not in written:
                written.append(name)
            return fn(path, *a, **k)
        return wrapper

    def planned(fn, config_at):
        def wrapper(*a, **k):
            cfg = a[config_at] if len(a) > config_at else k.get("config")
            simple = {key: v for key, v in k.items() if isinstance(v, (int, float, str, type(None)))}
            devices = k.get("devices")
            plan.append((json.dumps(cfg.to_dict(), sort_keys=True, default=str), sorted(simple.items()),
                         None if devices is None else len(devices)))
            return fn(*a, **k)
        return wrapper

    with monkeypatch.context() as m:
        m.setattr(files, "atomic_write", logged(files.atomic_write))
        m.setattr(checkpoint, "atomic_write", logged(checkpoint.atomic_write))
        m.setattr(engine, "stylize", planned(engine.stylize, 3))
        m.setattr(video, "stylize", planned(video.stylize, 3))
        m.setattr(batching, "stylize_many", planned(batching.stylize_many, 3))
        m.setattr(video, "stylize_many", planned(video.stylize_many, 3))
        code = cli.main(argv)
    out, err = capsys.readouterr()
    found = {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(run.rglob("*")) if p.is_file() and ".nst-flow" not in p.parts}
    return Outcome(code, _mask(out, run), _mask(err, run), found, tuple(written), tuple(plan))


def _fill(args, d: pathlib.Path, run: pathlib.Path, url: str) -> list[str]:
    sha, sha_b = (hashlib.sha256((d / n).read_bytes()).hexdigest() for n in ("keras16.h5", "b.h5"))
    return [str(a).replace("{d}", str(d)).replace("{run}", str(run)).replace("{url}", url).replace("{sha}", sha)
            .replace("{sha_b}", sha_b) for a in args]


def _with_extra(base: list[str], extra: list[str], d: pathlib.Path) -> list[str]:
    """The baseline with the shared context: a second style right after the first (positionals
    stay together), options at the end."""
    argv = list(base)
    for a in extra:
        if a == str(d / "style2.png"):
            argv.insert(argv.index(str(d / "style.png")) + 1, a)
        else:
            argv.append(a)
    return argv


def _with_option(base: list[str], option: str, probe: Probe) -> list[str]:
    """The baseline with the probe's options: each one's value replaced where the baseline has it,
    else appended; a flag of the baseline's that the probe names alone is dropped."""
    argv = list(base)
    for opt in [option] + [a for a in probe.args if a.startswith("-") and a != option]:
        if opt in argv:
            i = argv.index(opt)
            takes_value = i + 1 < len(argv) and not argv[i + 1].startswith("-")
            del argv[i:i + (2 if takes_value else 1)]
    return argv + list(probe.args)


CASES = [(cmd, opt) for cmd in PROBES for opt in PROBES[cmd]]


@pytest.mark.parametrize("command,option", CASES, ids=[f"{c}:{o}" for c, o in CASES])
def test_each_option_changes_the_result_or_is_refused(command, option, d, url, tmp_path, monkeypatch, capsys):
    probe = PROBES[command][option]
    outcomes = []
    for which in ("base", "probe"):
        run = tmp_path / which
        run.mkdir()
        base = _with_extra(_fill(BASE[command], d, run, url), _fill(probe.extra, d, run, url), d)
        with monkeypatch.context() as m:
            m.setenv("NST_JAX_NO_DOWNLOAD", "1")
            m.setenv("NST_JAX_WEIGHTS", str(d / "no-weights-here"))
            base = _scenario(probe.scenario, run, d, base, m, capsys)
            argv = base if which == "base" else _with_option(base, option, probe._replace(
                args=tuple(_fill(probe.args, d, run, url))))
            outcomes.append(_run(argv, run, m, capsys))
    before, after = outcomes
    if os.environ.get("NST_JAX_OPTION_REPORT"):  # how each option passed, for a reader
        verdict = ("refused: " + after.stderr.strip().splitlines()[-1] if after.code == 2 else
                   "changed: " + ",".join(f for f in Outcome._fields if getattr(before, f) != getattr(after, f)))
        with open(os.environ["NST_JAX_OPTION_REPORT"], "a") as f:
            f.write(f"{command} {option}: {verdict[:200]}\n")
    if after.code == 2:  # refused: in one line
        lines = [l for l in after.stderr.splitlines() if l.strip()]
        assert lines and lines[-1].startswith("error: ") and "Traceback" not in after.stderr, after.stderr
        assert sum(l.startswith("error: ") for l in lines) == 1, after.stderr
        return
    assert after.code == 0, (after.code, after.stderr)
    if probe.plan:
        assert after.plan != before.plan, f"{command} {option}: the engine was called with the same plan"
        return
    same = [f for f in ("code", "stdout", "stderr", "files", "written") if getattr(before, f) == getattr(after, f)]
    assert len(same) < 5, f"{command} {option}: accepted and changed nothing ({before.stderr[-300:]})"
