"""Flax modules over nst-jax's params: VGG features and a perceptual / style loss for a Flax training loop.

The converted params already have ``flax.linen.Conv``'s layout (``{"conv1_1": {"kernel": HWIO,
"bias": (C,)}, ...}``), so a loaded network's params are these modules' ``"params"`` collection as
they are::

    net = nst_jax.load_weights("weights/vgg19.h5")
    feats = VGGFeatures(layers=("relu2_1", "relu4_2")).apply({"params": net.params}, rgb)
    loss = PerceptualLoss().apply({"params": net.params}, generated, content, style)

In a training loop keep the VGG params out of the optimiser (``jax.lax.stop_gradient`` or a
separate collection): they are a fixed feature extractor. The pure ``vgg.features`` and this
module compute the same values (tests/test_flax.py: to 1e-6).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..program import losses
from ..network import vgg

Array = jax.Array


class VGGFeatures(nn.Module):
    """Named VGG activations of RGB [0, 1] images (H×W×3 or N×H×W×3).

    Attributes:
      arch: "vgg19" or "vgg16".
      layers: the activations to return (e.g. ``relu4_2``); the network stops at the deepest.
      pooling: "max" or "avg".
      convention: how RGB becomes the input (the weights' ``Network.convention``).
    """

    arch: str = "vgg19"
    layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    pooling: str = "max"
    convention: vgg.Convention = vgg.CAFFE

    @nn.compact
    def __call__(self, rgb: Array) -> dict[str, Array]:
        vgg.validate_layers(self.arch, self.layers)
        if self.pooling not in vgg.POOLINGS:
            raise ValueError(f"pooling must be one of {vgg.POOLINGS}, got {self.pooling!r}")
        order = vgg.layer_names(self.arch)
        deepest = max(order.index(name) for name in self.layers)
        specs = {s.name: s for s in vgg.conv_specs(self.arch)}
        h = self.convention.to_network(jnp.asarray(rgb, jnp.float32))
        out: dict[str, Array] = {}
        for name in order[: deepest + 1]:
            if name.startswith("conv"):
                h = nn.Conv(specs[name].out_channels, (3, 3), padding=((1, 1), (1, 1)), name=name)(h)
            elif name.startswith("relu"):
                h = nn.relu(h)
            elif self.pooling == "max":
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            else:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
            if name in self.layers:
                out[name] = h
        return out


class PerceptualLoss(nn.Module):
    """Content + style loss of a generated image against a content and a style image (Gatys et al.).

    The formulas are the tutorial's and neural-style's (``preset("pytorch")``): mean squared
    feature difference for content; Gram matrices divided by C·H·W, mean squared difference, for
    style. Works on one image (H×W×3); ``jax.vmap`` the apply for batches.

    Attributes:
      arch, pooling, convention: as ``VGGFeatures``.
      content_layers, style_layers: the layers of each term.
      content_weight, style_weight: the terms' weights.
    """

    arch: str = "vgg19"
    content_layers: Sequence[str] = ("relu4_2",)
    style_layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_weight: float = 1.0
    style_weight: float = 1e3
    pooling: str = "max"
    convention: vgg.Convention = vgg.CAFFE

    @nn.compact
    def __call__(self, generated: Array, content: Array, style: Array) -> Array:
        layers = tuple(dict.fromkeys(tuple(self.content_layers) + tuple(self.style_layers)))
        extractor = VGGFeatures(self.arch, layers, self.pooling, self.convention, name="vgg")
        fx = extractor(generated)
        fc = jax.tree.map(jax.lax.stop_gradient, extractor(content))
        fs = jax.tree.map(jax.lax.stop_gradient, extractor(style))
        total = jnp.zeros((), jnp.float32)
        for name in self.content_layers:
            total = total + self.content_weight * losses.content_loss(fx[name], fc[name], "mean")
        for name in self.style_layers:
            gx, gs = losses.gram(fx[name], "chw"), losses.gram(fs[name], "chw")
            total = total + self.style_weight * losses.style_layer_loss(gx, gs, "mean", 1.0)
        return total
