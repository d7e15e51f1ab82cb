"""Spatial control (guided Grams), gradient normalisation, Wasserstein-2 style loss and EMA of iterates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from nst_jax import StyleConfig, image, losses, transfer, vgg

from conftest import random_image

SHALLOW = dict(content_layers=(), style_layers=("relu1_1", "relu2_1"), content_weight=0.0, size=64,
               gram_norm="chw", style_reduce="mean")


def _halves(h: int, w: int) -> np.ndarray:
    left = np.zeros((h, w), np.float32)
    left[:, : w // 2] = 1.0
    return np.stack([left, 1.0 - left])


def test_region_loss_does_not_depend_on_the_other_region(vgg19_params):
    content = random_image(32, 64, 1)
    s1, s2 = random_image(40, 40, 2), random_image(24, 48, 3)
    masks = _halves(32, 64)
    masks[1] = 0.0  # only region A (left half) is styled: the loss is region A's term + a constant
    cfg = StyleConfig(**SHALLOW)
    loss_fn = transfer.make_loss_fn(vgg19_params, content, [s1, s2], cfg, convention=vgg.CAFFE, masks=masks)
    grad = jax.grad(lambda im: loss_fn(im)[0])(jnp.asarray(content))
    g = np.abs(np.asarray(grad)).sum(-1)
    # relu2_1 sees 10×10 pixels, the mask at its 16×32 resolution blends one column at the border:
    # pixels of region B more than 16 columns from the border cannot touch region A's term.
    assert np.all(g[:, 32 + 16:] == 0.0)
    assert np.all(g[:, :28].sum(0) > 0)


def test_guided_gram_targets_and_loss_match_numpy(vgg19_params):
    content = random_image(32, 64, 4)
    s1, s2 = random_image(32, 32, 5), random_image(40, 24, 6)
    masks = _halves(32, 64)
    cfg = StyleConfig(**SHALLOW, style_layer_weights=(1.0, 0.5), style_weight=10.0)
    targets = transfer.compute_targets(vgg19_params, vgg.CAFFE, content, [s1, s2], cfg, masks)
    x = random_image(32, 64, 7)
    total, parts = transfer.make_loss_fn(vgg19_params, content, [s1, s2], cfg, convention=vgg.CAFFE, masks=masks)(x)
    want = 0.0
    for li, (name, lw) in enumerate(zip(cfg.style_layers, (1.0, 0.5))):
        fx = np.asarray(vgg.features(vgg19_params, vgg.CAFFE.to_network(x), [name])[name], np.float64)
        h, w, c = fx.shape
        layer_masks = np.asarray(targets.masks[li], np.float64)
        assert layer_masks.shape == (2, h, w)
        np.testing.assert_allclose(layer_masks.sum(0), 1.0, atol=1e-5)  # the regions still partition the image
        for k, style in enumerate((s1, s2)):
            fs = np.asarray(vgg.features(vgg19_params, vgg.CAFFE.to_network(style), [name])[name], np.float64)
            fs = fs.reshape(-1, c)
            target = fs.T @ fs / (c * fs.shape[0])  # each style's whole image: its region
            np.testing.assert_allclose(np.asarray(targets.style[li][k]), target, rtol=1e-4, atol=1e-7)
            m = layer_masks[k].reshape(-1, 1)
            fm = fx.reshape(-1, c) * m
            g = fm.T @ fm / (c * m.sum())
            want += 10.0 * lw * np.mean((g - target) ** 2)
    assert float(parts["style"]) == pytest.approx(want, rel=1e-4)


def test_mask_file_regions(tmp_path):
    pal = Image.new("P", (8, 4))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    px = np.zeros((4, 8), np.uint8)
    px[:, 4:] = 2
    px[2:, :2] = 1
    pal.putdata(px.ravel().tolist())
    pal.save(tmp_path / "m.png")
    m = image.load_region_mask(tmp_path / "m.png", 3, (4, 8))
    np.testing.assert_array_equal(m.argmax(0), px)
    Image.fromarray(np.tile(np.array([0, 255], np.uint8).repeat(4), (4, 1))).save(tmp_path / "g.png")
    g = image.load_region_mask(tmp_path / "g.png", 2, (4, 8))
    np.testing.assert_allclose(g[0, :, :3], 1.0)
    np.testing.assert_allclose(g[1, :, 5:], 1.0)


def test_cli_content_mask(tmp_path, vgg19_params, capsys):
    from nst_jax import cli, weights

    weights.write_synthetic(tmp_path / "syn.h5", seed=0)
    for name, seed in (("c.png", 1), ("a.png", 2), ("b.png", 3)):
        Image.fromarray((random_image(32, 48, seed) * 255).astype(np.uint8)).save(tmp_path / name)
    Image.fromarray(np.tile(np.array([0, 255], np.uint8).repeat(24), (32, 1))).save(tmp_path / "mask.png")
    code = cli.main([str(a) for a in ["stylize", tmp_path / "c.png", tmp_path / "a.png", tmp_path / "b.png", "-o",
                                      tmp_path / "o.png", "--weights", tmp_path / "syn.h5", "--size", "48",
                                      "--iterations", "2", "--content-mask", tmp_path / "mask.png", "--no-progress"]])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "o.png").exists()


def test_normalized_gradient_matches_neural_style():
    f = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5, 3)), jnp.float32)
    t = jnp.zeros_like(f)
    fn = lambda a, b: jnp.sum((a - b) ** 2)  # noqa: E731
    wrapped = losses.normalized_gradient(fn)
    assert float(wrapped(f, t)) == pytest.approx(float(fn(f, t)))
    g = np.asarray(jax.grad(lambda a: 7.0 * wrapped(a, t))(f))
    raw = 2 * np.asarray(f)  # d/df of the unweighted loss
    np.testing.assert_allclose(g, 7.0 * raw / (np.abs(raw).sum() + 1e-8), rtol=1e-5)


def test_normalize_gradients_changes_the_gradient_not_the_value(vgg19_params, images):
    content, style, x = images
    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), size=64)
    plain = transfer.make_loss_fn(vgg19_params, content, style, cfg, convention=vgg.CAFFE)
    normed = transfer.make_loss_fn(vgg19_params, content, style, cfg.replace(normalize_gradients=True),
                                   convention=vgg.CAFFE)
    assert float(normed(x)[0]) == pytest.approx(float(plain(x)[0]), rel=1e-6)
    g1 = jax.grad(lambda im: plain(im)[0])(jnp.asarray(x))
    g2 = jax.grad(lambda im: normed(im)[0])(jnp.asarray(x))
    assert not np.allclose(g1, g2)


def test_wasserstein2_matches_scipy():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 5, 4)).astype(np.float32)
    b = (rng.normal(size=(7, 3, 4)) * 2 + 1).astype(np.float32)
    mu_a, cov_a = losses.mean_cov(jnp.asarray(a))
    mu_b, cov_b = losses.mean_cov(jnp.asarray(b))
    fa, fb = a.reshape(-1, 4).astype(np.float64), b.reshape(-1, 4).astype(np.float64)
    ca = np.cov(fa.T, bias=True)
    cb = np.cov(fb.T, bias=True)
    sb = scipy.linalg.sqrtm(cb).real
    want = np.sum((fa.mean(0) - fb.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(scipy.linalg.sqrtm(sb @ ca @ sb).real)
    got = float(losses.wasserstein2(mu_a, cov_a, mu_b, cov_b))
    assert got == pytest.approx(want, rel=1e-4)
    assert float(losses.wasserstein2(mu_a, cov_a, mu_a, cov_a)) == pytest.approx(0.0, abs=1e-3)


def test_wasserstein_style_loss_runs_and_falls(vgg19_params, images):
    content, style, _ = images
    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), size=64,
                      style_loss="wasserstein", optimizer="adam", learning_rate=0.02, iterations=8, init="noise")
    result = transfer.stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE)
    assert result.losses[-1] < result.losses[0]


def test_ema_of_iterates(vgg19_params, images):
    content, style, _ = images
    base = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1",), size=64, optimizer="sgd",
                       learning_rate=1e-5, variable_space="network", clamp=False)
    runs = [transfer.stylize(content, style, vgg19_params, base, iterations=n, convention=vgg.CAFFE)
            for n in (1, 2)]
    v0 = vgg.CAFFE.to_network(jnp.asarray(content))
    v1, v2 = (r.state.v for r in runs)
    ema = transfer.stylize(content, style, vgg19_params, base.replace(ema_decay=0.5), iterations=2,
                           convention=vgg.CAFFE)
    want = 0.5 * (0.5 * v0 + 0.5 * v1) + 0.5 * v2
    np.testing.assert_allclose(np.asarray(ema.state.ema_v), np.asarray(want), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ema.image, np.clip(np.asarray(vgg.CAFFE.from_network(want)), 0, 1), atol=1e-5)
