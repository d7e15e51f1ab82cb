"""The engine: every optimiser lowers the loss, chunks compile once, the loop's bookkeeping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import StyleConfig, preset
from nst_jax.network import vgg
from nst_jax.errors import ConfigError
from nst_jax.engine.single import stylize
from nst_jax import make_loss_fn
from nst_jax.program.optimizers import scale_by_matlab_adam
from nst_jax.objective.targets import compute_targets

from conftest import CompileCounter

SMALL = dict(content_layers=("relu3_2",), style_layers=("relu1_1", "relu2_1", "relu3_1"), size=64)


@pytest.mark.parametrize(
    "changes",
    [
        dict(optimizer="sgd", learning_rate=1e-5, variable_space="rgb"),
        dict(optimizer="adam", learning_rate=0.02),
        dict(optimizer="lbfgs", lbfgs_linesearch="none", learning_rate=1.0),
        dict(optimizer="lbfgs", lbfgs_linesearch="zoom"),
    ],
    ids=["sgd", "adam", "lbfgs", "lbfgs-zoom"],
)
def test_each_optimizer_lowers_the_loss(changes, vgg19_params, images):
    content, style, _ = images  # 48×64
    cfg = StyleConfig(**SMALL, **changes, iterations=12, chunk_size=5)
    result = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE)
    assert result.losses.shape == (12,)
    assert np.all(np.isfinite(result.losses))
    assert result.losses[-1] < 0.9 * result.losses[0]
    assert result.image.shape == (48, 64, 3) and result.image.min() >= 0 and result.image.max() <= 1
    if changes.get("lbfgs_linesearch") == "zoom":
        # every step's zoom search evaluates at least once more than a plain step: counted
        assert result.evaluations > result.iterations
    else:
        assert result.evaluations == result.iterations


@pytest.mark.parametrize("linesearch", ["zoom"])  # (without a line search: evaluations == iterations, above)
def test_reported_evaluations_are_the_objectives_counted_calls(linesearch, vgg19_params, images, monkeypatch):
    """``Result.evaluations`` equals the number of times the objective actually ran, counted from
    inside the compiled loop by a host callback around the engine's objective (a callback fires
    only for evaluations that run: not for a ``lax.cond`` branch not taken, nor for a trace)."""
    import nst_jax.engine.loop as engine_module

    calls = []
    real = engine_module.network_objective

    def counted(*args, **kwargs):
        out = real(*args, **kwargs)
        jax.debug.callback(lambda total: calls.append(1), out[0])
        return out

    monkeypatch.setattr(engine_module, "network_objective", counted)
    content, style, _ = images
    # a program (memory 7, chunk 9) no other test compiles, so the chunk is traced with the counter
    cfg = StyleConfig(**SMALL, optimizer="lbfgs", lbfgs_linesearch=linesearch, lbfgs_memory=7, chunk_size=9,
                      iterations=11, learning_rate=1.0)
    result = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE)
    jax.effects_barrier()
    assert result.iterations == 11
    assert result.evaluations == len(calls)
    if linesearch == "zoom":
        assert result.evaluations > result.iterations
    else:
        assert result.evaluations == result.iterations == len(calls)


def test_several_chunks_compile_once(vgg19_params, images):
    """The real chunk function (not a copy) is traced once for 5 chunks, the last partial; a second
    run with the same shapes and program compiles nothing at all."""
    content, style, _ = images
    # a chunk length no other test uses: this program's chunk cannot be in the cache already
    cfg = StyleConfig(**SMALL, optimizer="adam", learning_rate=0.0123, iterations=23, chunk_size=7)
    with CompileCounter() as count:
        result = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE)
        assert result.iterations == 23 and len(result.losses) == 23
        assert count.traces == 1
        assert "jit(chunk)" in count.compiles
        count.compiles.clear()
        stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, seed=1)
        assert count.traces == 1 and count.compiles == []  # everything reused


def test_chunking_does_not_change_the_result(vgg19_params, images):
    content, style, _ = images
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=10)
    a = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, chunk_size=10)
    b = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, chunk_size=3)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)


def test_best_image_is_the_lowest_loss_iterate(vgg19_params, images):
    content, style, _ = images
    # a learning rate so large that Adam overshoots: the best iterate is not the last one
    cfg = StyleConfig(**SMALL, optimizer="adam", learning_rate=0.5, iterations=8, select="best")
    result = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, chunk_size=8)
    best = int(np.argmin(result.losses))
    loss_fn = make_loss_fn(vgg19_params, content, style, cfg, convention=vgg.CAFFE)
    # clamp=True: the loss is evaluated at the clamped iterate, which best_image is
    np.testing.assert_allclose(float(loss_fn(jnp.asarray(result.best_image))[0]), result.losses[best], rtol=1e-4)
    np.testing.assert_array_equal(result.output, result.best_image)


def test_nonfinite_loss_stops_and_keeps_last_good_image(vgg19_params, images):
    content, style, _ = images
    cfg = StyleConfig(**SMALL, optimizer="sgd", learning_rate=1e30, variable_space="network", clamp=False,
                      iterations=10)
    result = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, chunk_size=10)
    assert result.status == "nonfinite"
    assert result.iterations < 10
    assert np.all(np.isfinite(result.image))


def test_callback_can_stop_the_run(vgg19_params, images):
    content, style, _ = images
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=20)
    seen = []

    def callback(p):
        seen.append((p.iteration, p.image().shape))
        return p.iteration >= 8

    result = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE, chunk_size=4, callback=callback)
    assert result.status == "stopped" and result.iterations == 8
    assert seen == [(4, (48, 64, 3)), (8, (48, 64, 3))]


def test_style_blending_equals_blended_gram_targets(vgg19_params, images):
    content, style, other = images
    cfg = StyleConfig(**SMALL)
    blended = compute_targets(vgg19_params, vgg.CAFFE, content, [(style, 0.7), (other, 0.3)], cfg)
    t1 = compute_targets(vgg19_params, vgg.CAFFE, content, style, cfg)
    t2 = compute_targets(vgg19_params, vgg.CAFFE, content, other, cfg)
    for g, a, b in zip(blended.style, t1.style, t2.style):
        np.testing.assert_allclose(g, 0.7 * a + 0.3 * b, rtol=1e-5, atol=1e-6)
    # blend weights from the config: the same thing
    cfg2 = cfg.replace(style_blend_weights=(7.0, 3.0))
    again = compute_targets(vgg19_params, vgg.CAFFE, content, [style, other], cfg2)
    for g, h in zip(blended.style, again.style):
        np.testing.assert_allclose(g, h, rtol=1e-6)


def test_matlab_adam_differs_from_optax_adam_only_in_eps():
    g = jnp.asarray([1e-3, -2.0, 5.0])
    ours = scale_by_matlab_adam(0.9, 0.999, 1e-8)
    st = ours.init(g)
    u1, st = ours.update(g, st)
    # MATLAB: sqrt(1-b2)/(1-b1) * m / (sqrt(v) + eps) with m = 0.1 g, v = 0.001 g^2
    m, v = 0.1 * np.asarray(g, np.float64), 0.001 * np.asarray(g, np.float64) ** 2
    want = np.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(u1, want, rtol=1e-6)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(content_layers=("relu9_9",)), "valid: conv1_1"),
        (dict(style_weight=-1.0), "style_weight"),
        (dict(style_weight=float("nan")), "style_weight"),
        (dict(optimizer="rmsprop"), "optimizer must be one of"),
        (dict(size=4), "at least 16"),
        (dict(style_layer_weights=(1.0, 2.0)), "style_layer_weights has 2 values for 5 layers"),
    ],
)
def test_invalid_config_fails_at_construction(changes, message):
    with pytest.raises(ConfigError, match=message):
        StyleConfig(**changes)
    with pytest.raises(ValueError):  # the API promises a ValueError
        preset("default").replace(**changes)


def test_unknown_preset_and_field():
    with pytest.raises(ConfigError, match="valid: keras"):
        preset("nope")
    with pytest.raises(ConfigError, match="unknown config field"):
        preset("default").replace(stlye_weight=1.0)


def test_remat_run_equals_plain_run(vgg19_params):
    from conftest import random_image

    from nst_jax import cli

    cfg = StyleConfig(shape=(32, 32), size=None, optimizer="adam", learning_rate=0.02, iterations=4, chunk_size=2)
    content, style = random_image(32, 32, 1), random_image(32, 32, 2)
    plain = stylize(content, style, vgg19_params, cfg, convention=vgg.CAFFE)
    remat = stylize(content, style, vgg19_params, cfg.replace(remat=True), convention=vgg.CAFFE)
    np.testing.assert_allclose(remat.losses, plain.losses, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(remat.image), np.asarray(plain.image), atol=1e-5)
    args = cli.build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", "--remat"])
    assert cli.config_from_args(args)[0].remat is True


def test_precision_bf16_and_highest(vgg19_params, images):
    """--precision bf16 runs the network in bfloat16 (losses in float32): the loss moves by less
    than 2 % but does move; `highest` is float32 everywhere, equal to the default on a CPU (no TF32)."""
    content, style, x = images
    cfg = StyleConfig(**SMALL)
    value = {p: float(make_loss_fn(vgg19_params, content, style, cfg.replace(precision=p),
                                            convention=vgg.CAFFE)(x)[0])
             for p in ("default", "highest", "bf16")}
    assert value["bf16"] == pytest.approx(value["default"], rel=2e-2)
    assert abs(value["bf16"] / value["default"] - 1) > 1e-5  # really computed in bfloat16
    if jax.default_backend() == "cpu":
        assert value["highest"] == pytest.approx(value["default"], rel=1e-6)
    run = stylize(content, style, vgg19_params, cfg.replace(precision="bf16", optimizer="adam",
                                                                     learning_rate=0.02, iterations=6),
                           convention=vgg.CAFFE)
    assert run.losses.dtype == np.float32 and run.losses[-1] < run.losses[0]
