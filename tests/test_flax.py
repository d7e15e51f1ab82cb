"""The Flax modules over the same params: features equal the pure ones, the loss equals the objective's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import StyleConfig, make_loss_fn
from nst_jax.network import vgg
from nst_jax.objective.flax_modules import PerceptualLoss, VGGFeatures

from conftest import random_image


@pytest.mark.parametrize("arch, pooling", [("vgg19", "max"), ("vgg16", "avg")])
def test_flax_features_equal_the_pure_features(arch, pooling, vgg19_params, vgg16_params):
    params = vgg19_params if arch == "vgg19" else vgg16_params
    layers = vgg.layer_names(arch)  # every layer, pools included
    rgb = np.stack([random_image(32, 48, 1), random_image(32, 48, 2)])  # a batch: NHWC
    module = VGGFeatures(arch=arch, layers=layers, pooling=pooling, convention=vgg.CAFFE)
    got = jax.jit(module.apply)({"params": params}, rgb)
    want = jax.jit(lambda p, x: vgg.features(p, vgg.CAFFE.to_network(x), layers, pooling=pooling))(params, rgb)
    assert set(got) == set(layers)
    for name in layers:
        assert got[name].dtype == jnp.float32 and got[name].shape == want[name].shape
        scale = float(jnp.abs(want[name]).max()) or 1.0
        np.testing.assert_allclose(np.asarray(got[name]) / scale, np.asarray(want[name]) / scale, atol=1e-6)


def test_flax_params_are_the_network_params_unchanged(vgg19_params):
    module = VGGFeatures(layers=("relu5_1",))
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)))["params"]
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(lambda a: a.shape, {
        k: v for k, v in vgg19_params.items() if k in shapes})
    assert set(shapes) == {n for n in vgg.layer_names("vgg19")[:vgg.layer_names("vgg19").index("relu5_1")]
                           if n.startswith("conv")}


def test_perceptual_loss_equals_the_objective_and_trains(vgg19_params):
    content, style, image = random_image(32, 40, 1), random_image(32, 40, 2), random_image(32, 40, 3)
    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), content_weight=2.0,
                      style_weight=50.0, content_loss="mean", gram_norm="chw", style_reduce="mean")
    loss = PerceptualLoss(content_layers=cfg.content_layers, style_layers=cfg.style_layers,
                          content_weight=2.0, style_weight=50.0)
    variables = {"params": {"vgg": vgg19_params}}
    apply = jax.jit(loss.apply)  # one compilation, not one per primitive
    got = float(apply(variables, image, content, style))
    want = float(make_loss_fn(vgg19_params, content, style, cfg, convention=vgg.CAFFE)(jnp.asarray(image))[0])
    assert got == pytest.approx(want, rel=1e-5)
    # a Flax-style step on the generated image lowers it
    grad = jax.jit(jax.grad(lambda x: loss.apply(variables, x, content, style)))(jnp.asarray(image))
    step = jnp.asarray(image) - 1e-3 * grad / jnp.abs(grad).mean()
    assert float(apply(variables, step, content, style)) < got
