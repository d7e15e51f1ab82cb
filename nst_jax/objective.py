"""The objective: the total loss of one image against precomputed targets, and its weighted parts.

``objective(params, targets, image, values, program=..., spec=...)`` is pure: params, targets and
values are arguments (traced under ``jit``), only the program and the network's static facts are
static. ``make_loss_fn`` wraps it for a config, for users who want ``loss_fn(image)``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from . import losses, temporal
from .config import StyleConfig, Values
from .network import NetSpec, all_layers, direct_params, features, net_spec, with_pixel_scale
from .targets import ImageLike, Targets, compute_targets

Array = jax.Array


def network_objective(params: Any, targets: Targets, xn: Array, values: Values, program: Any,
                      spec: NetSpec) -> tuple[Array, dict[str, Array]]:
    """``objective`` of a preprocessed image (the network's input, H×W×3): what the engine calls."""
    feats = features(params, xn, all_layers(program), program, spec)
    parts: dict[str, Any] = {}
    content_total: Any = jnp.zeros((), jnp.float32)
    content_fn = functools.partial(losses.content_loss, kind=program.content_loss)
    if program.normalize_gradients:
        content_fn = losses.normalized_gradient(content_fn)
    for k, (name, target) in enumerate(zip(program.content_layers, targets.content)):
        term = values.content_weight * values.content_layer_weights[k] * content_fn(feats[name], target)
        parts[f"content/{name}"] = term
        content_total = content_total + term
    style_total: Any = jnp.zeros((), jnp.float32)
    input_hw = (xn.shape[0], xn.shape[1])
    masks = targets.masks if targets.masks is not None else (None,) * len(program.style_layers)
    for k, (name, target, layer_masks) in enumerate(zip(program.style_layers, targets.style, masks)):
        f = feats[name]
        h, wd, c = f.shape
        divisor = losses.style_divisor(program.style_divisor, c, h, wd, input_hw)

        def layer_loss(f, target, layer_masks=layer_masks, divisor=divisor):
            if program.style_loss == "wasserstein":
                mu, cov = losses.mean_cov(f)
                return losses.wasserstein2(mu, cov, target[0], target[1])
            if layer_masks is None:
                return losses.style_layer_loss(losses.gram(f, program.gram_norm), target, program.style_reduce, divisor)
            # guided Grams: region r's Gram against style r's, summed over the regions
            return sum(
                losses.style_layer_loss(losses.gram(f, program.gram_norm, layer_masks[r]), target[r],
                                        program.style_reduce, divisor)
                for r in range(layer_masks.shape[0])
            )

        fn = losses.normalized_gradient(layer_loss) if program.normalize_gradients else layer_loss
        term = values.style_weight * values.style_layer_weights[k] * fn(f, target)
        parts[f"style/{name}"] = term
        style_total = style_total + term
    if program.tv_loss != "none":
        tv_input = xn if program.tv_space == "network" else spec.convention.from_network(xn)
        tv: Any = values.tv_weight * losses.tv_loss(tv_input, program.tv_loss)
    else:
        tv = jnp.zeros((), jnp.float32)
    parts.update(content=content_total, style=style_total, tv=tv)
    total = content_total + style_total + tv
    if targets.temporal is not None:
        # video: Ruder et al.'s temporal loss, measured where content and style are, on the
        # network's input (artistic_video.lua preprocesses the warped frame before its MSE): one
        # unit of the weight is a masked mean squared difference of one pixel level² for Caffe
        # weights (0-255), so the weight keeps its meaning next to the preset's content and style
        warped, weights = targets.temporal
        term = values.temporal_weight * temporal.temporal_loss(xn, spec.convention.to_network(warped), weights)
        parts["temporal"] = term
        total = total + term
    return total, parts


def objective(params: Any, targets: Targets, image: Array, values: Values, *, program: Any,
              spec: NetSpec) -> tuple[Array, dict[str, Array]]:
    """The total loss of one RGB image and its weighted parts.

    Args:
      params: the network's params (``weights.Network.params``).
      targets: from ``compute_targets``.
      image: H×W×3 RGB in [0, 1] at the working size.
      values: ``StyleConfig.values()`` (traced: vary or ``vmap`` them freely).
      program: ``StyleConfig.program()`` (static).
      spec: the network's static facts (``network.net_spec``, pixel scale applied).

    Returns:
      (total, parts) with parts ``content``, ``style``, ``tv`` and ``content/<layer>``,
      ``style/<layer>``, all weighted as they enter the total.
    """
    return network_objective(params, targets, spec.convention.to_network(image), values, program, spec)


# Params, targets, values and the image are arguments: one compilation per (shapes, program, spec).
_objective_jit = jax.jit(objective, static_argnames=("program", "spec"))


def make_loss_fn(
    params: Any,
    content: ImageLike,
    style: Any,
    config: StyleConfig,
    *,
    convention: Any = None,
    masks: Optional[ImageLike] = None,
    style_masks: Optional[Sequence[Optional[ImageLike]]] = None,
) -> Callable[[Array], tuple[Array, dict[str, Array]]]:
    """``loss_fn(image) -> (total, parts)`` for one config, over targets computed here once.

    ``image`` is H×W×3 RGB in [0, 1] at the working size; the preset's preprocessing happens
    inside, so the value equals the original program's loss at the same pixels.

    Args:
      params: a ``weights.Network`` (params + convention) or a params dict with ``convention=``.
      content: H×W×3 RGB in [0, 1].
      style: one array, a sequence of arrays, or (array, weight) pairs (see ``compute_targets``).
      config: a ``StyleConfig``.
      convention: for a bare params dict: a ``vgg.Convention`` or a ``network.NetSpec``.
      masks, style_masks: spatial control, see ``compute_targets``.

    Returns:
      ``loss_fn``. It calls the jitted ``objective`` with the params, targets and values as
      *arguments* (not constants of its program); it uses the direct convolutions, whatever
      ``config.conv_algorithm`` says. Inside your own ``jit``, call ``objective`` instead, with the
      params as your function's argument.
    """
    p, spec = net_spec(params, convention)
    program = config.program()
    spec = with_pixel_scale(spec, program.pixel_scale)
    p = direct_params(p, spec)
    targets = compute_targets(p, spec, content, style, program, config.style_blend_weights, masks, style_masks)
    values = jax.tree.map(jnp.asarray, config.values())

    def loss_fn(image: Array) -> tuple[Array, dict[str, Array]]:
        return _objective_jit(p, targets, image, values, program=program, spec=spec)

    return loss_fn
