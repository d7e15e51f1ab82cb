"""Loss terms by name: every term of ``objective.TERMS`` reaches the loss rows, ``Result.parts()``,
the progress callback, the loss plot and the batch manifest, temporal included."""

from __future__ import annotations

import numpy as np

from nst_jax import StyleConfig, stylize, stylize_many
from nst_jax.image import figures
from nst_jax.objective import terms as objective
from nst_jax.network import vgg

from conftest import random_image

SMALL = dict(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), size=32)


def test_every_term_is_a_named_part_and_the_parts_sum_to_the_total(vgg19_params):
    content, style = random_image(24, 32, 1), random_image(24, 32, 2)
    warped = random_image(24, 32, 3)
    weights = np.random.default_rng(0).random((24, 32)).astype(np.float32)
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=4, learning_rate=0.02, tv_loss="l2", tv_weight=1e-3,
                      temporal_weight=7.0)
    seen = []
    r = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, temporal=(warped, weights),
                callback=lambda p: seen.append(dict(p.parts)))
    assert tuple(r.parts()) == objective.part_names() == ("content", "style", "tv", "temporal")
    assert set(seen[-1]) == set(objective.part_names())
    total = sum(r.parts().values())
    np.testing.assert_allclose(total, r.losses, rtol=1e-5)
    # the temporal part at the start image (the content), transcribed with numpy: Caffe's input is
    # BGR 0-255 less the mean, so the difference is 255·(content − warped) per channel
    diff = 255.0 * (content.astype(np.float64) - warped)
    want = 7.0 * np.sum(weights[..., None] * diff**2) / diff.size
    np.testing.assert_allclose(r.parts()["temporal"][0], want, rtol=1e-4)
    # a run without a temporal target or a TV term has neither part
    plain = stylize(content, style, vgg19_params, cfg.replace(tv_loss="none"), convention=vgg.CAFFE)
    assert tuple(plain.parts()) == ("content", "style")
    np.testing.assert_allclose(sum(plain.parts().values()), plain.losses, rtol=1e-5)


def test_the_loss_plot_draws_every_part_of_a_run(vgg19_params, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    content, style = random_image(24, 32, 1), random_image(24, 32, 2)
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=3, learning_rate=0.02, tv_loss="l2", tv_weight=1e-3)
    r = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE,
                temporal=(random_image(24, 32, 3), np.ones((24, 32), np.float32)))
    labels = []
    real = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, label=None, **k: (labels.append(label), real(self, *a, **k))[1])
    figures.save_loss_plot(tmp_path / "l.png", r.losses, parts=r.parts())
    assert labels == ["total", "content", "style", "tv", "temporal"]


def test_a_batch_reports_the_parts_of_each_member(vgg19_params):
    content = random_image(24, 32, 1)
    styles = [random_image(24, 32, 2), random_image(24, 32, 3)]
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=3, learning_rate=0.02, tv_loss="l1")
    configs = [cfg, cfg.replace(style_weight=cfg.style_weight * 10)]
    many = stylize_many(content, styles, vgg19_params, cfg, configs=configs, convention=vgg.CAFFE, batch_size=2)
    for i in range(2):
        parts = many[i].parts()
        assert tuple(parts) == ("content", "style", "tv")
        np.testing.assert_allclose(sum(parts.values()), many.losses[i], rtol=1e-5)


def test_an_optimizer_is_one_entry_of_the_table(vgg19_params, monkeypatch):
    """A new optimiser is one ``optimizers.OPTIMIZERS`` entry: the config accepts its name, the
    engine runs it (here optax's AdamW, its weight decay visible against plain Adam), and the
    memory estimate counts its state."""
    import optax

    from nst_jax.engine import memory
    from nst_jax.program import optimizers

    def adamw(program, values, lr):
        return optax.with_extra_args_support(optax.adamw(lr, weight_decay=50.0))

    monkeypatch.setitem(optimizers.OPTIMIZERS, "adamw-test", optimizers.Optimizer(adamw, lambda config: 1))
    content, style = random_image(24, 32, 1), random_image(24, 32, 2)
    cfg = StyleConfig(**SMALL, optimizer="adamw-test", iterations=3, learning_rate=0.02)
    r = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE)
    a = stylize(content, style, vgg19_params, cfg.replace(optimizer="adam"), convention=vgg.CAFFE)
    assert len(r.losses) == 3 and not np.allclose(r.image, a.image)
    extra = memory.estimate_bytes_per_result(24, 32, cfg) - memory.estimate_bytes_per_result(
        24, 32, cfg.replace(optimizer="adam"))
    assert extra == 24 * 32 * 3 * 4  # its one image-sized buffer


def test_a_new_term_is_one_entry_of_the_table(vgg19_params, tmp_path, monkeypatch, capsys):
    """A new loss term is one ``objective.TERMS`` entry: with only that added (here a brightness
    term, 0.01 · mean(network input)², made up for the test), the total, the loss rows,
    ``Result.parts()``, the progress callback, the loss plot and a batch's manifest all carry it."""
    import json

    import jax
    import jax.numpy as jnp
    from PIL import Image

    from nst_jax import cli, weights

    def brightness(a):
        return 0.01 * jnp.mean(a.xn) ** 2, {}

    monkeypatch.setattr(objective, "TERMS", objective.TERMS + (objective.Term("brightness", lambda p, t: True,
                                                                              brightness),))
    try:
        content, style = random_image(26, 34, 1), random_image(26, 34, 2)
        # (a chunk length and sizes no other test uses: the compiled programs with the extra term
        # are not reused by any other test, and the caches are cleared below)
        cfg = StyleConfig(**SMALL, optimizer="adam", iterations=3, learning_rate=0.02, chunk_size=37)
        seen = []
        r = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, callback=lambda p: seen.append(p.parts))
        assert tuple(r.parts()) == ("content", "style", "brightness") and "brightness" in seen[-1]
        xn = vgg.CAFFE.to_network(jnp.asarray(content))  # the start image is the content
        np.testing.assert_allclose(r.parts()["brightness"][0], 0.01 * float(jnp.mean(xn)) ** 2, rtol=1e-5)
        np.testing.assert_allclose(sum(r.parts().values()), r.losses, rtol=1e-5)
        from matplotlib.axes import Axes

        labels = []
        real = Axes.plot
        monkeypatch.setattr(Axes, "plot", lambda self, *a, label=None, **k: (labels.append(label),
                                                                            real(self, *a, **k))[1])
        figures.save_loss_plot(tmp_path / "l.png", r.losses, parts=r.parts())
        assert "brightness" in labels
        weights.write_synthetic(tmp_path / "syn.h5", arch="vgg19", seed=0)
        Image.fromarray((content * 255).astype(np.uint8)).save(tmp_path / "c.png")
        Image.fromarray((style * 255).astype(np.uint8)).save(tmp_path / "s.png")
        assert cli.main(["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o", str(tmp_path / "out"),
                         "--weights", str(tmp_path / "syn.h5"), "--size", "30", "--iterations", "2",
                         "--chunk-size", "41", "--style-weight", "1,2", "--no-progress"]) == 0
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert all("brightness" in e["final_parts"] for e in manifest["results"])
    finally:
        capsys.readouterr()
        jax.clear_caches()
