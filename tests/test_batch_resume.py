"""One driver for one image or many: batches and sweeps gain L-BFGS rounds and checkpoint/resume.

A resumed batch (library and CLI, a sweep of values times styles in groups) ends exactly where the
uninterrupted batch ends; L-BFGS rounds in a batch equal the single runs'.
"""

from __future__ import annotations

import itertools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nst_jax import StyleConfig, cli, stylize, stylize_many, weights
from nst_jax.engine import checkpoint
from nst_jax.network import vgg
from nst_jax.engine.batching import ManyResume

from conftest import random_image
from hostile_support import rewrite_npz

SMALL = dict(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), size=32)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_library_batch_resumed_in_either_group_equals_the_uninterrupted_batch(optimizer, vgg19_params):
    content = random_image(24, 32, 1)
    styles = [random_image(24, 32, 2 + k) for k in range(3)]
    cfg = StyleConfig(**SMALL, optimizer=optimizer, iterations=6, chunk_size=2,
                      learning_rate=0.05 if optimizer == "adam" else 1.0)
    configs = [cfg.replace(style_weight=w) for w in (1e2, 1e3, 1e4)]
    kept = {}

    def keep(p):  # every chunk boundary: copies (the loop donates its state's buffers to the next chunk)
        kept[(p.group, p.iteration)] = ManyResume(p.done, jax.tree.map(jnp.copy, p.batch_state), p.rows.copy())

    whole = stylize_many(content, styles, vgg19_params, cfg, configs=configs, batch_size=2, callback=keep,
                         convention=vgg.CAFFE)
    assert sorted(kept) == [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (1, 6)]
    for where, left in [((0, 2), 5), ((1, 4), 1)]:
        seen = []  # the chunk boundaries the resumed run passes: only those after the checkpoint
        resumed = stylize_many(content, styles, vgg19_params, cfg, configs=configs, batch_size=2,
                               convention=vgg.CAFFE, resume=kept[where],
                               callback=lambda p: seen.append((p.group, p.iteration)))
        assert len(seen) == left and seen[0] > where, seen
        np.testing.assert_array_equal(resumed.images, whole.images)
        np.testing.assert_array_equal(resumed.losses, whole.losses)
        assert resumed.status == whole.status == ["done"] * 3
        assert [c.style_weight for c in resumed.configs] == [1e2, 1e3, 1e4]


def test_lbfgs_rounds_in_a_batch_equal_the_single_runs(vgg19_params):
    content = random_image(24, 32, 1)
    styles = [random_image(24, 32, 2), random_image(24, 32, 3)]
    cfg = StyleConfig(**SMALL, optimizer="lbfgs", iterations=7, lbfgs_round=3, learning_rate=1.0)
    many = stylize_many(content, styles, vgg19_params, cfg, convention=vgg.CAFFE, batch_size=2)
    for i, style in enumerate(styles):
        single = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE)
        assert len(single.losses) == 7
        np.testing.assert_allclose(many.losses[i], single.losses, rtol=2e-4)
        np.testing.assert_allclose(many.images[i], single.image, atol=1e-3)
    # the rounds restart the optimiser: without them the run is another one
    plain = stylize_many(content, styles, vgg19_params, cfg.replace(lbfgs_round=None), convention=vgg.CAFFE,
                         batch_size=2)
    assert not np.allclose(plain.losses[:, -1], many.losses[:, -1])


@pytest.fixture
def inputs(tmp_path):
    weights.write_synthetic(tmp_path / "syn.h5", arch="vgg19", seed=0)
    Image.fromarray((random_image(40, 56, 1) * 255).astype(np.uint8)).save(tmp_path / "c.png")
    for k in (1, 2):
        Image.fromarray((random_image(40, 40, 1 + k) * 255).astype(np.uint8)).save(tmp_path / f"s{k}.png")
    return tmp_path


def _outputs(d):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(d.glob("*.png"))}


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_cli_batch_and_sweep_resume_equals_the_uninterrupted_run(optimizer, inputs, capsys, monkeypatch):
    """``--batch`` × ``--style-weight a,b`` in groups of 3 (4 members: groups of 3 and 1), with
    ``--checkpoint-every 2``: a checkpoint taken in the first group and one in the second, each
    resumed with ``--resume``, write the uninterrupted run's images byte for byte and its losses."""
    d = inputs
    out = d / "out"
    args = ["stylize", d / "c.png", d / "s1.png", d / "s2.png", "--batch", "--style-weight", "1e2,1e3",
            "-o", out, "--weights", d / "syn.h5", "--size", "32", "--iterations", "6", "--optimizer", optimizer,
            "--batch-size", "3", "--checkpoint-every", "2", "--no-progress", "--set", "content_layers=relu2_2",
            "--set", "style_layers=relu1_1,relu2_1"]
    args = [str(a) for a in args]
    real_save = checkpoint.save_batch
    kept = []
    numbers = itertools.count()

    def save_and_keep(path, state, rows, done, **kw):
        written = real_save(path, state, rows, done, **kw)
        copy = d / f"kept{next(numbers)}.npz"
        shutil.copy(written, copy)  # the run goes on; each copy is an "interrupted" run's file
        kept.append(copy)
        return written

    monkeypatch.setattr(checkpoint, "save_batch", save_and_keep)
    assert cli.main(args) == 0, capsys.readouterr().err
    monkeypatch.undo()
    capsys.readouterr()
    assert len(kept) == 6  # iterations 2, 4, 6 of each group
    assert not (out / "batch.ckpt.npz").exists()  # a finished batch removes its checkpoint
    reference = _outputs(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(reference) == 4
    in_second_group = [k for k in kept if checkpoint.read_header(k)["batch"]["done"] == 3]
    assert len(in_second_group) == 3
    first = kept[0]
    for k, left in ((first, 5), (in_second_group[0], 2)):
        shutil.rmtree(out)
        kept.clear()
        monkeypatch.setattr(checkpoint, "save_batch", save_and_keep)
        assert cli.main(args + ["--resume", str(k)]) == 0
        monkeypatch.undo()
        assert len(kept) == left  # it went on from the checkpoint: only the later boundaries passed
        err = capsys.readouterr().err
        assert "resuming" in err
        assert _outputs(out).keys() == reference.keys()
        for name, pixels in _outputs(out).items():
            np.testing.assert_array_equal(pixels, reference[name], err_msg=name)
        again = json.loads((out / "manifest.json").read_text())
        assert [e["final_loss"] for e in again["results"]] == [e["final_loss"] for e in manifest["results"]]
        terms = {"content", "style"} | ({"tv"} if again["config"]["tv_loss"] != "none" else set())
        assert set(again["results"][0]["final_parts"]) == terms


def _batch_args(d, *extra):
    return [str(a) for a in ["stylize", d / "c.png", d / "s1.png", d / "s2.png", "--batch", "--weights",
                             d / "syn.h5", "--size", "32", "--iterations", "4", "--optimizer", "adam",
                             "--checkpoint-every", "2", "--no-progress", "--set", "content_layers=relu2_2",
                             "--set", "style_layers=relu1_1,relu2_1", *extra]]


def _run_keeping_the_last_checkpoint(base, out, kept, capsys) -> None:
    """Run a batch to the end, keeping a copy of the last checkpoint it wrote (an "interrupted" run's)."""
    real_save = checkpoint.save_batch

    def keep(path, *a, **kw):
        written = real_save(path, *a, **kw)
        shutil.copy(written, kept)
        return written

    with pytest.MonkeyPatch.context() as m:
        m.setattr(checkpoint, "save_batch", keep)
        assert cli.main(base + ["-o", str(out)]) == 0
    capsys.readouterr()


def test_cli_batch_resume_refuses_other_members_and_single_checkpoints(inputs, capsys):
    d = inputs
    base = _batch_args(d)
    kept = d / "kept.npz"
    _run_keeping_the_last_checkpoint(base, d / "a", kept, capsys)
    # the styles in another order: other members
    swapped = [str(d / "s2.png") if a == str(d / "s1.png") else str(d / "s1.png") if a == str(d / "s2.png") else a
               for a in base]
    assert cli.main(swapped + ["-o", str(d / "b"), "--resume", str(kept)]) == 2
    assert "other members" in capsys.readouterr().err
    # a single run's checkpoint for a batch, and a batch's for a single run
    single = d / "one.png"
    one = [a for a in base if a not in (str(d / "s2.png"), "--batch")]
    with pytest.MonkeyPatch.context() as m:
        real = checkpoint.save

        def keep_single(path, *a, **kw):
            written = real(path, *a, **kw)
            shutil.copy(written, d / "single.npz")
            return written

        m.setattr(checkpoint, "save", keep_single)
        assert cli.main(one + ["-o", str(single)]) == 0
    capsys.readouterr()
    assert cli.main(base + ["-o", str(d / "c"), "--resume", str(d / "single.npz")]) == 2
    assert "made by a single run" in capsys.readouterr().err
    assert cli.main(one + ["-o", str(d / "two.png"), "--resume", str(kept)]) == 2
    assert "error:" in capsys.readouterr().err


def test_hostile_batch_checkpoints_are_refused_in_one_line(inputs, capsys):
    """A batch checkpoint comes from anywhere: counts, shapes, dtypes and status codes are checked
    against the header and this run before any array is read; each fault is one ``error:`` line."""
    d = inputs
    base = _batch_args(d, "--batch-size", "1")
    kept = d / "kept.npz"
    _run_keeping_the_last_checkpoint(base, d / "a", kept, capsys)
    assert checkpoint.read_header(kept)["batch"]["done"] == 1  # in the second group, one result done

    def header_edit(fn):
        def change(m):
            h = json.loads(bytes(m["header"]).decode())
            m["header"] = np.frombuffer(json.dumps(fn(h)).encode(), np.uint8)
        return change

    def batch_edit(**changes):
        return header_edit(lambda h: {**h, "batch": {**h["batch"], **changes}})

    cases = [
        (batch_edit(rows=10**9), "do not fit"),
        (batch_edit(done=2, group=1), "do not fit this run"),
        (batch_edit(group_size=0), "batch counts are damaged"),
        (batch_edit(members=[]), "other members"),
        (header_edit(lambda h: {k: v for k, v in h.items() if k != "batch"}), "made by a single run"),
        (lambda m: m.__setitem__("losses", np.zeros((3, 3), np.float32)), "loss rows do not fit"),
        (lambda m: m.__setitem__("done_images", m["done_images"].astype(np.float64)), "has dtype float64"),
        (lambda m: m.__setitem__("done_status", np.array([7], np.uint8)), "status codes are damaged"),
        (lambda m: m.__setitem__("done_steps", np.array([{"a": 1}], dtype=object)), "Python objects"),
    ]
    for k, (change, expect) in enumerate(cases):
        bad = d / f"bad{k}.npz"
        shutil.copy(kept, bad)
        rewrite_npz(bad, change)
        out = d / f"out{k}"
        assert cli.main(base + ["-o", str(out), "--resume", str(bad)]) == 2, expect
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and expect in err[-1], (expect, err)
        assert not out.exists() or not any(out.iterdir())  # refused before any work
