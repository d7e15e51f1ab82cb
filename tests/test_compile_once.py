"""Compile once, vary everything: values, iteration counts and picture settings never recompile the
loop, and a sweep of values runs as one program whose results equal the single runs."""

from __future__ import annotations

import numpy as np
import pytest

from nst_jax import StyleConfig, cli, make_loss_fn, stylize, stylize_many
from nst_jax.control import runs as control
from nst_jax.network import vgg
from nst_jax.errors import ConfigError

from conftest import CompileCounter, random_image

# Each test below uses a chunk length no other test uses, so its program cannot be compiled already
# and the first run must trace exactly once.
SMALL = dict(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), size=48)


def test_five_style_weights_compile_once(vgg19_params):
    content, style = random_image(32, 40, 1), random_image(32, 40, 2)
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=3, chunk_size=11)
    finals = []
    with CompileCounter() as count:
        for w in (1e1, 1e2, 1e3, 1e4, 1e5):
            finals.append(stylize(content, style, vgg19_params, cfg.replace(style_weight=w), convention=vgg.CAFFE))
    assert count.traces == 1
    # the weights reached the program as values: the losses scale with them (style dominates here)
    first = [r.losses[0] for r in finals]
    assert all(b > 5 * a for a, b in zip(first, first[1:])), first


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs", "sgd"])
def test_another_learning_rate_compiles_nothing(optimizer, vgg19_params):
    content, style = random_image(32, 40, 1), random_image(32, 40, 2)
    cfg = StyleConfig(**SMALL, optimizer=optimizer, iterations=3, chunk_size=12, learning_rate=0.01,
                      lr_decay_rate=0.5 if optimizer == "sgd" else None)
    with CompileCounter() as count:
        a = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE)
        b = stylize(content, style, vgg19_params, cfg.replace(learning_rate=0.03), convention=vgg.CAFFE)
    assert count.traces == 1
    assert not np.allclose(a.image, b.image)  # the new rate was used


def test_ten_and_a_hundred_iterations_share_one_compilation(vgg19_params):
    content, style = random_image(32, 40, 1), random_image(32, 40, 2)
    cfg = StyleConfig(**SMALL, optimizer="adam", chunk_size=13)
    with CompileCounter() as count:
        ten = stylize(content, style, vgg19_params, cfg, iterations=10, convention=vgg.CAFFE)
        hundred = stylize(content, style, vgg19_params, cfg, iterations=100, convention=vgg.CAFFE)
    assert count.traces == 1
    assert len(ten.losses) == 10 and len(hundred.losses) == 100
    np.testing.assert_allclose(hundred.losses[:10], ten.losses, rtol=1e-6)


def test_colour_modes_and_output_size_reuse_the_chunk(vgg19_params):
    content, style = random_image(32, 40, 1), random_image(36, 36, 2)
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=2, chunk_size=14)
    with CompileCounter() as count:
        for mode in ("none", "lum", "match", "swap"):
            control.stylize_controlled(content, style, vgg19_params, cfg.replace(preserve_colors=mode),
                                       convention=vgg.CAFFE)
    assert count.traces == 1


def test_cli_output_size_colour_mode_and_weights_compile_no_new_chunk(tmp_path, capsys):
    from PIL import Image

    from nst_jax import weights

    weights.write_synthetic(tmp_path / "syn.h5", arch="vgg19", seed=0)
    Image.fromarray((random_image(40, 56, 1) * 255).astype(np.uint8)).save(tmp_path / "c.png")
    Image.fromarray((random_image(40, 40, 2) * 255).astype(np.uint8)).save(tmp_path / "s.png")
    base = ["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "--weights", str(tmp_path / "syn.h5"),
            "--size", "32", "--iterations", "2", "--chunk-size", "15", "--no-progress", "--optimizer", "adam"]
    with CompileCounter() as count:
        assert cli.main(base + ["-o", str(tmp_path / "a.png")]) == 0
        assert count.traces == 1
        assert cli.main(base + ["-o", str(tmp_path / "b.png"), "--original-size", "--preserve-colors", "lum",
                                "--style-weight", "77", "--lr", "0.5", "--iterations", "7"]) == 0
    assert count.traces == 1, "a picture setting, a weight, a learning rate or the iterations recompiled the loop"
    assert Image.open(tmp_path / "a.png").size == (32, 23) and Image.open(tmp_path / "b.png").size == (56, 40)
    capsys.readouterr()


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_sweep_of_four_style_weights_times_two_styles_is_one_program(optimizer, vgg19_params):
    content = random_image(32, 40, 1)
    styles = [random_image(32, 40, 2), random_image(40, 32, 3)]
    cfg = StyleConfig(**SMALL, optimizer=optimizer, learning_rate=0.02 if optimizer == "adam" else 1.0,
                      iterations=6, chunk_size=16 if optimizer == "adam" else 17)
    weights = [1e1, 1e2, 1e3, 1e4]
    configs = [c for s in styles for c in cfg.sweep(style_weight=weights)]
    members = [s for s in styles for _ in weights]
    with CompileCounter() as count:
        many = stylize_many(content, members, vgg19_params, cfg, configs=configs, batch_size=8,
                            convention=vgg.CAFFE)
    assert count.traces == 1 and len(many) == 8
    assert [r.config.style_weight for r in many] == weights * 2
    for i, (style, member) in enumerate(zip(members, configs)):
        single = stylize(content, style, vgg19_params, member, convention=vgg.CAFFE)
        np.testing.assert_allclose(many.losses[i], single.losses, rtol=2e-4)
        # (as test_many: L-BFGS's curvature pairs amplify the batched sums' rounding)
        np.testing.assert_allclose(many.images[i], single.image, atol=1e-3 if optimizer == "lbfgs" else 2e-4)


def test_sweep_members_must_share_the_program(vgg19_params):
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=2)
    content, style = random_image(32, 40, 1), random_image(32, 40, 2)
    with pytest.raises(ConfigError, match="differs in pooling"):
        stylize_many(content, [style, style], vgg19_params, cfg, configs=[cfg, cfg.replace(pooling="avg")],
                     convention=vgg.CAFFE)
    with pytest.raises(ConfigError, match="only value fields"):
        cfg.sweep(pooling=["max", "avg"])
    with pytest.raises(ConfigError, match="EMA"):
        stylize_many(content, [style, style], vgg19_params, cfg, configs=[cfg, cfg.replace(ema_decay=0.9)],
                     convention=vgg.CAFFE)


def test_cli_sweep_times_styles_writes_images_manifest_and_a_labelled_grid(tmp_path, capsys):
    import json

    from PIL import Image

    from nst_jax import weights

    weights.write_synthetic(tmp_path / "syn.h5", arch="vgg19", seed=0)
    Image.fromarray((random_image(40, 56, 1) * 255).astype(np.uint8)).save(tmp_path / "c.png")
    for k in (1, 2):
        Image.fromarray((random_image(40, 40, 1 + k) * 255).astype(np.uint8)).save(tmp_path / f"s{k}.png")
    common = ["--weights", str(tmp_path / "syn.h5"), "--size", "32", "--iterations", "3", "--no-progress",
              "--optimizer", "adam", "--chunk-size", "18"]
    argv = ["stylize", str(tmp_path / "c.png"), str(tmp_path / "s1.png"), str(tmp_path / "s2.png"), "--batch",
            "--style-weight", "1e1,1e2,1e3,1e4", "--batch-size", "8", "-o", str(tmp_path / "out"),
            "--grid", str(tmp_path / "grid.png"), *common]
    with CompileCounter() as count:
        assert cli.main(argv) == 0, capsys.readouterr().err
    assert count.traces == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["sweep"] == {"style_weight": [10.0, 100.0, 1000.0, 10000.0]}
    results = manifest["results"]
    assert len(results) == 8
    assert [(pathlib_stem(r["style"]), r["values"]["style_weight"]) for r in results] == \
        [(s, w) for s in ("s1", "s2") for w in (10.0, 100.0, 1000.0, 10000.0)]
    images = [np.asarray(Image.open(r["output"]), np.float32) / 255 for r in results]
    assert all(im.shape == (23, 32, 3) for im in images)
    assert "c_s2_style-weight1000.png" in [r["output"].rsplit("/", 1)[1] for r in results]
    # The grid: 2 rows (styles) x 4 columns (weights), each cell the saved image, labels outside.
    grid = np.asarray(Image.open(tmp_path / "grid.png"), np.float32) / 255
    h, w = 23, 32
    rows_at = [(y, x) for y in range(grid.shape[0] - h + 1) for x in range(grid.shape[1] - w + 1)
               if np.abs(grid[y:y + h, x:x + w] - images[3]).max() < 2 / 255]
    assert len(rows_at) == 1, "the first row's last cell is not in the grid once"
    (y3, x3), = rows_at
    below = [y for y in range(y3 + h, grid.shape[0] - h + 1) if np.abs(grid[y:y + h, x3:x3 + w] - images[7]).max() < 2 / 255]
    assert below, "the second row's last cell is not below the first row's"
    assert x3 > grid.shape[1] * 0.6  # the last column
    # labels are drawn outside the cells: something dark above the first row and left of the cells
    assert grid[:y3].min() < 0.5
    # One member equals the single run with its values (same program: compile nothing new).
    single = tmp_path / "single.png"
    assert cli.main(["stylize", str(tmp_path / "c.png"), str(tmp_path / "s2.png"), "-o", str(single),
                     "--style-weight", "1000", *common]) == 0
    ref = np.asarray(Image.open(single), np.float32) / 255
    np.testing.assert_allclose(images[6], ref, atol=2 / 255)
    capsys.readouterr()


def pathlib_stem(path: str) -> str:
    import pathlib

    return pathlib.Path(path).stem


def test_cli_refuses_a_sweep_into_an_image_file_and_grid_without_a_sweep(tmp_path, capsys):
    from PIL import Image

    from nst_jax import weights

    weights.write_synthetic(tmp_path / "syn.h5", arch="vgg19", seed=0)
    Image.fromarray((random_image(40, 56, 1) * 255).astype(np.uint8)).save(tmp_path / "c.png")
    base = ["stylize", str(tmp_path / "c.png"), str(tmp_path / "c.png"), "--weights", str(tmp_path / "syn.h5"),
            "--size", "32", "--iterations", "1", "--no-progress"]
    assert cli.main(base + ["--lr", "0.1,0.2", "-o", str(tmp_path / "x.png")]) == 2
    assert "give -o a directory" in capsys.readouterr().err
    assert cli.main(base + ["--grid", str(tmp_path / "g.png"), "-o", str(tmp_path / "y.png")]) == 2
    assert "--grid draws several results" in capsys.readouterr().err
    assert cli.main(base + ["--style-weight", "1,nope", "-o", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "d").exists()


def test_make_loss_fn_compiles_its_objective_once_across_values(vgg19_params):
    """make_loss_fn's jitted objective takes the values as arguments: other weights, no new trace,
    and the value follows them (the style term scales with the style weight)."""
    content, style, image = random_image(32, 40, 1), random_image(32, 40, 2), random_image(32, 40, 3)
    cfg = StyleConfig(content_layers=("relu1_2",), style_layers=("relu1_1",), size=48, tv_loss="l2")
    with CompileCounter("objective") as count:
        parts = [make_loss_fn(vgg19_params, content, style, cfg.replace(style_weight=w, tv_weight=t),
                              convention=vgg.CAFFE)(image)[1] for w, t in ((1.0, 0.0), (10.0, 0.5), (100.0, 1.0))]
    assert count.traces == 1
    np.testing.assert_allclose([float(p["style"]) for p in parts], [float(parts[0]["style"]) * k for k in (1, 10, 100)],
                               rtol=1e-5)
    assert float(parts[0]["tv"]) == 0.0 and float(parts[2]["tv"]) == pytest.approx(2 * float(parts[1]["tv"]), rel=1e-5)
