"""Spatial control (guided Grams), gradient normalisation, Wasserstein-2 style loss and EMA of iterates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from nst_jax import StyleConfig, image
from nst_jax.program import losses
from nst_jax.network import vgg
from nst_jax.engine.single import stylize
from nst_jax.engine.loop import initial_variable
from nst_jax import make_loss_fn
from nst_jax.objective.targets import compute_targets

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
    loss_fn = make_loss_fn(vgg19_params, content, [s1, s2], cfg, convention=vgg.CAFFE, masks=masks)
    grad = jax.grad(lambda im: loss_fn(im)[0])(jnp.asarray(content))
    g = np.abs(np.asarray(grad)).sum(-1)
    # relu2_1 sees 10×10 pixels, the mask at its 16×32 resolution blends one column at the border:
    # pixels of region B more than 16 columns from the border cannot touch region A's term.
    assert np.all(g[:, 32 + 16:] == 0.0)
    assert np.all(g[:, :28].sum(0) > 0)


def _area_resize(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area-weighted resize, written independently of the code under test: repeat every pixel
    h (resp. w) times, so each output cell covers a whole block of the fine grid, then average."""
    big_h, big_w = mask.shape
    fine = np.repeat(np.repeat(mask.astype(np.float64), h, axis=0), w, axis=1)  # (big_h*h, big_w*w)
    return fine.reshape(h, big_h, w, big_w).mean(axis=(1, 3))


def test_area_resize_reference_is_what_it_says():
    m = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(_area_resize(m, 3, 2), [[0.5, 2.5], [4.5, 6.5], [8.5, 10.5]])
    np.testing.assert_allclose(_area_resize(m, 1, 1), [[m.mean()]])
    # 3 rows to 2: each output row covers 1.5 input rows
    np.testing.assert_allclose(_area_resize(m, 2, 4)[0], (m[0] + 0.5 * m[1]) / 1.5)


def test_guided_gram_targets_and_loss_match_numpy(vgg19_params):
    content = random_image(32, 64, 4)
    s1, s2 = random_image(32, 32, 5), random_image(40, 24, 6)
    masks = _halves(32, 64)
    # a border that does not fall on a pooling boundary, so the resize's weights matter
    masks[0, :, :29] = 1.0
    masks[0, :, 29:] = 0.0
    masks[0, :, 29] = 0.25
    masks[1] = 1.0 - masks[0]
    cfg = StyleConfig(**SHALLOW, style_layer_weights=(1.0, 0.5), style_weight=10.0)
    targets = compute_targets(vgg19_params, vgg.CAFFE, content, [s1, s2], cfg, masks=masks)
    x = random_image(32, 64, 7)
    total, parts = make_loss_fn(vgg19_params, content, [s1, s2], cfg, convention=vgg.CAFFE, masks=masks)(x)
    want = 0.0
    for li, (name, lw) in enumerate(zip(cfg.style_layers, (1.0, 0.5))):
        fx = np.asarray(vgg.features(vgg19_params, vgg.CAFFE.to_network(x), [name])[name], np.float64)
        h, w, c = fx.shape
        layer_masks = np.stack([_area_resize(m, h, w) for m in masks])  # independent of the code
        np.testing.assert_allclose(np.asarray(targets.masks[li]), layer_masks, atol=1e-6)
        np.testing.assert_allclose(layer_masks.sum(0), 1.0, atol=1e-9)  # the regions still partition the image
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
    """The CLI paints region k with style k: its output is the library's guided run with the mask
    file's regions (black = first style), and swapping the mask's colours swaps the result."""
    from nst_jax import cli, preset, weights
    from nst_jax.control import runs as control

    net = weights.write_synthetic(tmp_path / "syn.h5", seed=0)
    for name, seed in (("c.png", 1), ("a.png", 2), ("b.png", 3)):
        Image.fromarray((random_image(32, 48, seed) * 255).astype(np.uint8)).save(tmp_path / name)
    stripes = np.tile(np.array([0, 255], np.uint8).repeat(24), (32, 1))  # left black, right white
    Image.fromarray(stripes).save(tmp_path / "mask.png")
    Image.fromarray(255 - stripes).save(tmp_path / "swapped.png")
    outs = {}
    for mask in ("mask", "swapped"):
        code = cli.main([str(a) for a in ["stylize", tmp_path / "c.png", tmp_path / "a.png", tmp_path / "b.png", "-o",
                                          tmp_path / f"{mask}-out.png", "--weights", tmp_path / "syn.h5", "--size", "48",
                                          "--iterations", "2", "--content-mask", tmp_path / f"{mask}.png",
                                          "--no-progress"]])
        assert code == 0, capsys.readouterr().err
        outs[mask] = image.load_image(tmp_path / f"{mask}-out.png")
    content, a, b = (image.load_image(tmp_path / n) for n in ("c.png", "a.png", "b.png"))
    cfg = preset("default").replace(size=48, iterations=2)
    left = np.zeros((32, 48), np.float32)
    left[:, :24] = 1.0
    for mask, regions in (("mask", [left, 1 - left]), ("swapped", [1 - left, left])):
        want = control.stylize_controlled(content, [a, b], net, cfg, seed=0, masks=np.stack(regions)).output
        np.testing.assert_allclose(outs[mask], want, atol=1.01 / 255)  # the file is 8-bit
    assert np.abs(outs["mask"] - outs["swapped"]).max() >= 4 / 255  # (5/255 after 2 iterations on the EPYC)


def test_normalized_gradient_matches_neural_style():
    f = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5, 3)), jnp.float32)
    t = jnp.zeros_like(f)
    fn = lambda a, b: jnp.sum((a - b) ** 2)  # noqa: E731
    wrapped = losses.normalized_gradient(fn)
    assert float(wrapped(f, t)) == pytest.approx(float(fn(f, t)))
    g = np.asarray(jax.grad(lambda a: 7.0 * wrapped(a, t))(f))
    raw = 2 * np.asarray(f)  # d/df of the unweighted loss
    np.testing.assert_allclose(g, 7.0 * raw / (np.abs(raw).sum() + 1e-8), rtol=1e-5)


def test_normalize_gradients_follows_neural_style_rule(vgg19_params, images):
    """neural-style's -normalize_gradients, transcribed: each loss module's gradient w.r.t. its
    layer's features (computed here in numpy, float64) is divided by its L1 norm + 1e-8, then
    multiplied by its weight, and the network carries the sum back to the image."""
    content, style, x = images
    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), size=64,
                      style_layer_weights=(1.0, 0.25), content_weight=3.0, style_weight=50.0, tv_weight=0.0)
    plain = make_loss_fn(vgg19_params, content, style, cfg, convention=vgg.CAFFE)
    normed = make_loss_fn(vgg19_params, content, style, cfg.replace(normalize_gradients=True),
                                   convention=vgg.CAFFE)
    assert float(normed(x)[0]) == pytest.approx(float(plain(x)[0]), rel=1e-6)  # the value is unchanged
    got = np.asarray(jax.grad(lambda im: normed(im)[0])(jnp.asarray(x)))

    layers = ["relu2_2", "relu1_1", "relu2_1"]
    feats = lambda im: vgg.features(vgg19_params, vgg.CAFFE.to_network(im), layers)  # noqa: E731
    fx, back = jax.vjp(feats, jnp.asarray(x))
    fc, fs = feats(jnp.asarray(content)), feats(jnp.asarray(style))

    def unit(g):  # neural-style: gradInput:div(torch.norm(gradInput, 1) + 1e-8)
        return g / (np.abs(g).sum() + 1e-8)

    cot = {}
    f, p = np.asarray(fx["relu2_2"], np.float64), np.asarray(fc["relu2_2"], np.float64)
    cot["relu2_2"] = 3.0 * unit(2 * (f - p) / f.size)  # d mean((F-P)^2) / dF, times content weight
    for name, lw in (("relu1_1", 1.0), ("relu2_1", 0.25)):
        f = np.asarray(fx[name], np.float64)
        h, w, c = f.shape
        flat, n = f.reshape(-1, c), h * w * c
        gs = np.asarray(fs[name], np.float64).reshape(-1, c)
        dg = 2 * (flat.T @ flat / n - gs.T @ gs / n) / c**2  # d mean((G-T)^2) / dG
        cot[name] = 50.0 * lw * unit((2 * flat @ dg / n).reshape(h, w, c))  # dG/dF, G symmetric
    (want,) = back({k: jnp.asarray(v, jnp.float32) for k, v in cot.items()})
    np.testing.assert_allclose(got, np.asarray(want), rtol=2e-4, atol=1e-6 * np.abs(want).max())
    plain_grad = np.asarray(jax.grad(lambda im: plain(im)[0])(jnp.asarray(x)))
    assert np.abs(plain_grad - got).max() > 10 * np.abs(got).max() * 1e-3  # and it is not the plain gradient


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


def test_wasserstein_blend_is_the_mixture_of_the_styles(vgg19_params):
    """Blending styles under the W2 loss: the target is the mixture's mean and covariance (raw
    moments averaged), computed here from the pooled, weighted feature samples in float64."""
    # different sizes (per-sample weights differ) and brightness (the means differ)
    a, b = random_image(32, 40, 5), 0.4 * random_image(40, 24, 6)
    cfg = StyleConfig(content_layers=("relu1_2",), style_layers=("relu1_1", "relu2_1"), size=48,
                      style_loss="wasserstein")
    targets = compute_targets(vgg19_params, vgg.CAFFE, a, [(a, 0.3), (b, 0.7)], cfg)
    for name, (mu, cov) in zip(cfg.style_layers, targets.style):
        fa, fb = (np.asarray(vgg.features(vgg19_params, vgg.CAFFE.to_network(im), [name])[name], np.float64)
                  for im in (a, b))
        xa, xb = fa.reshape(-1, fa.shape[-1]), fb.reshape(-1, fb.shape[-1])
        samples = np.concatenate([xa, xb])
        weights = np.concatenate([np.full(len(xa), 0.3 / len(xa)), np.full(len(xb), 0.7 / len(xb))])
        want_mu = weights @ samples
        centred = samples - want_mu
        want_cov = (centred * weights[:, None]).T @ centred
        np.testing.assert_allclose(np.asarray(mu), want_mu, rtol=1e-4, atol=1e-4 * np.abs(want_mu).max())
        np.testing.assert_allclose(np.asarray(cov), want_cov, rtol=1e-3, atol=1e-4 * np.abs(want_cov).max())
        # averaging the two covariances alone would miss the spread between the styles' means
        linear = 0.3 * np.cov(xa.T, bias=True) + 0.7 * np.cov(xb.T, bias=True)
        assert np.abs(linear - want_cov).max() > 0.05 * np.abs(want_cov).max()


def _w2_scipy(fx: np.ndarray, fs: np.ndarray) -> float:
    a, b = fx.reshape(-1, fx.shape[-1]).astype(np.float64), fs.reshape(-1, fs.shape[-1]).astype(np.float64)
    ca, cb = np.cov(a.T, bias=True), np.cov(b.T, bias=True)
    sb = scipy.linalg.sqrtm(cb).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
                 - 2 * np.trace(scipy.linalg.sqrtm(sb @ ca @ sb).real))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead ReLU channels: singular covariances
def test_wasserstein_style_loss_value_matches_scipy_and_falls(vgg19_params, images):
    content, style, _ = images
    cfg = StyleConfig(content_layers=("relu2_2",), content_layer_weights=(1.0,), style_layers=("relu1_1", "relu2_1"),
                      style_layer_weights=(1.0, 0.5), size=64, style_weight=3.0, tv_weight=0.0,
                      style_loss="wasserstein", optimizer="adam", learning_rate=0.02, iterations=8, init="noise")
    result = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, seed=4)
    start = initial_variable(jnp.asarray(content), None, cfg, vgg.CAFFE, jax.random.PRNGKey(4))
    start_rgb = np.asarray(vgg.CAFFE.from_network(start) if cfg.variable_space == "network" else start)
    layers = ["relu2_2", "relu1_1", "relu2_1"]
    f = {k: np.asarray(v, np.float64) for k, v in vgg.features(vgg19_params, vgg.CAFFE.to_network(start_rgb), layers).items()}
    fc = vgg.features(vgg19_params, vgg.CAFFE.to_network(content), ["relu2_2"])["relu2_2"]
    fs = vgg.features(vgg19_params, vgg.CAFFE.to_network(style), ["relu1_1", "relu2_1"])
    want = cfg.content_weight * np.mean((f["relu2_2"] - np.asarray(fc, np.float64)) ** 2)
    want += 3.0 * (_w2_scipy(f["relu1_1"], np.asarray(fs["relu1_1"])) + 0.5 * _w2_scipy(f["relu2_1"], np.asarray(fs["relu2_1"])))
    assert result.losses[0] == pytest.approx(want, rel=2e-3)  # the loss of the start image, the first one logged
    assert result.losses[-1] < 0.9 * result.losses[0]


def test_ema_of_iterates(vgg19_params, images):
    content, style, _ = images
    base = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1",), size=64, optimizer="sgd",
                       learning_rate=1e-5, variable_space="network", clamp=False)
    runs = [stylize(content, style, vgg19_params, base, iterations=n, convention=vgg.CAFFE)
            for n in (1, 2)]
    v0 = vgg.CAFFE.to_network(jnp.asarray(content))
    v1, v2 = (r.state.v for r in runs)
    ema = stylize(content, style, vgg19_params, base.replace(ema_decay=0.5), iterations=2,
                           convention=vgg.CAFFE)
    want = 0.5 * (0.5 * v0 + 0.5 * v1) + 0.5 * v2
    np.testing.assert_allclose(np.asarray(ema.state.ema_v), np.asarray(want), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ema.image, np.clip(np.asarray(vgg.CAFFE.from_network(want)), 0, 1), atol=1e-5)
