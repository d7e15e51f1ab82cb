"""Targets, computed once per run: content features and (blended) style statistics.

Each style's statistics are computed at that style's own size (Gram matrices are C×C whatever the
image size), then blended; with spatial control (guided Grams) each style keeps its own Gram and
the region masks are resized to every style layer.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ..program import losses
from ..network import vgg
from ..program.config import StyleConfig
from ..errors import ConfigError
from ..network.backbones import NetSpec, as_spec, features

Array = jax.Array
ImageLike = Union[np.ndarray, Array]


class Targets(NamedTuple):
    """Precomputed targets: content features per content layer, style statistics per style layer.

    ``style`` holds one Gram matrix per layer (``style_loss="gram"``) or a (mean, covariance) pair
    (``"wasserstein"``), already blended over the style images.
    """

    content: tuple[Array, ...]
    style: tuple[Any, ...]
    # Spatial control (guided Grams): per style layer, K region masks at that layer's resolution;
    # then ``style`` holds K Grams per layer (one per region's style), not one blend.
    masks: Optional[tuple[Array, ...]] = None
    # Video (Ruder et al. 2016): (the previous stylised frame warped to this one, RGB [0, 1]
    # H×W×3; its H×W consistency weights). Present or absent is program structure, like masks.
    temporal: Optional[tuple[Array, Array]] = None


def style_images(style: Any, blend_weights: Optional[Sequence[float]] = None) -> tuple[list[Array], np.ndarray]:
    """Styles as a list of H×W×3 arrays and their blend weights (summing to 1).

    Args:
      style: one H×W×3 array, a sequence of them, or a sequence of (array, weight) pairs.
      blend_weights: the weights of a plain sequence (default: equal).
    """
    if isinstance(style, (np.ndarray, jax.Array)) and np.ndim(style) == 3:
        images, weights = [style], [1.0]
    else:
        items = list(style)
        if items and all(isinstance(it, tuple) and len(it) == 2 for it in items):
            images = [it[0] for it in items]
            weights = [float(it[1]) for it in items]
        else:
            images = items
            weights = list(blend_weights or [1.0] * len(images))
    if not images:
        raise ConfigError("at least one style image is needed")
    if len(weights) != len(images):
        raise ConfigError(f"{len(weights)} style blend weights for {len(images)} style images")
    w = np.asarray(weights, np.float64)
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ConfigError("style blend weights must be finite, >= 0 and not all 0")
    return [jnp.asarray(im, jnp.float32) for im in images], w / w.sum()


def check_image(name: str, image: Array) -> None:
    """Refuse anything but an H×W×3 image with at least 16 pixels a side (VGG pools 4 times)."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ConfigError(f"{name} must be an H×W×3 RGB array; got shape {tuple(image.shape)}")
    if min(image.shape[:2]) < 16:
        raise ConfigError(f"{name} is {image.shape[0]}x{image.shape[1]}: VGG needs at least 16 pixels a side")


def blend_stats(stats: Sequence[Any], weights: np.ndarray, style_loss: str) -> Any:
    """One layer's style statistic blended over several styles.

    Gram matrices (raw second moments, up to their normalisation) blend linearly. For the Wasserstein
    loss the target is a Gaussian's (mean, covariance): the blend is the mixture's, so the first and
    second *raw* moments are averaged and the covariance is formed from them,
    ``Σ = Σ_k w_k (Σ_k + μ_k μ_kᵀ) − μ μᵀ`` with ``μ = Σ_k w_k μ_k`` (averaging covariances alone
    would drop the spread between the styles' means).
    """
    if style_loss == "wasserstein":
        mu = sum(float(w) * m for w, (m, _) in zip(weights, stats))
        second = sum(float(w) * (c + jnp.outer(m, m)) for w, (m, c) in zip(weights, stats))
        return mu, second - jnp.outer(mu, mu)
    return sum(float(w) * g for w, g in zip(weights, stats))


def compute_targets(
    params: Any,
    spec: Union[NetSpec, vgg.Convention],
    content: ImageLike,
    style: Any,
    program: Any,
    blend_weights: Optional[Sequence[float]] = None,
    masks: Optional[ImageLike] = None,
    style_masks: Optional[Sequence[Optional[ImageLike]]] = None,
) -> Targets:
    """Content features and blended style statistics, computed once.

    Args:
      params: the network's params.
      spec: the network's static facts (``network.net_spec``), pixel scale applied; a bare
        ``vgg.Convention`` stands for VGG with that convention.
      content: H×W×3 RGB in [0, 1].
      style: one H×W×3 array, a sequence of them (blended by ``blend_weights`` or equally), or a
        sequence of (array, weight) pairs. Styles may have any size: each one's statistics are
        computed at its own size, then blended (``blend_stats``).
      program: the run's ``Program`` (layers, formulas), or a ``StyleConfig`` (its program, and its
        ``style_blend_weights`` unless ``blend_weights`` is given).
      blend_weights: ``StyleConfig.style_blend_weights``.
      masks: spatial control (Gatys et al. 2017): K×H×W region weights over the content, one per
        style image (then the styles are not blended: style k paints region k). Each style's Gram
        is computed over its own region (``style_masks[k]``, H_k×W_k, default its whole image),
        and the masks are resized to every style layer's resolution (area-weighted).
      style_masks: optional per-style masks (None entries: the whole style image).

    Returns:
      ``Targets``.
    """
    if isinstance(program, StyleConfig):
        blend_weights = program.style_blend_weights if blend_weights is None else blend_weights
        program = program.program()
    spec = as_spec(spec, params)
    content = jnp.asarray(content, jnp.float32)
    check_image("content image", content)
    images, weights = style_images(style, blend_weights)
    for im in images:
        check_image("style image", im)
    to_net = spec.convention.to_network
    if masks is not None:
        return _guided_targets(params, spec, content, images, program, masks, style_masks)
    cfeats = features(params, to_net(content), program.content_layers, program, spec) if program.content_layers else {}
    content_t = tuple(cfeats[name] for name in program.content_layers)
    style_t: list[Any] = []
    if program.style_layers:
        per_image = [features(params, to_net(im), program.style_layers, program, spec) for im in images]
        for name in program.style_layers:
            stats = [style_stat(f[name], program) for f in per_image]
            style_t.append(blend_stats(stats, weights, program.style_loss))
    return Targets(content_t, tuple(style_t))


def style_stat(f: Array, program: Any) -> Any:
    """One style layer's statistic: its Gram matrix, or (mean, covariance) for the Wasserstein loss."""
    if program.style_loss == "wasserstein":
        return losses.mean_cov(f)
    return losses.gram(f, program.gram_norm)


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of an area-weighted 1-D resize: output cell i averages the input over
    [i·n_in/n_out, (i+1)·n_in/n_out), each input cell weighted by its overlap (VGG's 2x pooling of
    an even side is the plain 2-cell mean)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def layer_mask(mask: Array, shape: Sequence[int]) -> Array:
    """A region mask at a layer's resolution: an area-weighted resize (each layer cell gets the
    mask's mean over the pixels it covers), so the regions still partition every layer."""
    if tuple(mask.shape) == tuple(shape):
        return mask
    rows = jnp.asarray(area_matrix(mask.shape[0], shape[0]))
    cols = jnp.asarray(area_matrix(mask.shape[1], shape[1]))
    return jnp.einsum("ih,hw,jw->ij", rows, mask, cols, precision=jax.lax.Precision.HIGHEST)


def _guided_targets(params, spec: NetSpec, content, images, program, masks, style_masks) -> Targets:
    if program.style_loss != "gram":
        raise ConfigError("spatial masks work with the Gram style loss (style_loss='gram')")
    masks = jnp.asarray(masks, jnp.float32)
    if masks.ndim != 3 or masks.shape[1:] != content.shape[:2]:
        raise ConfigError(f"masks must be K×H×W at the content's size {content.shape[:2]}; got {tuple(masks.shape)}")
    if masks.shape[0] != len(images):
        raise ConfigError(f"{masks.shape[0]} masks for {len(images)} style images: one region per style")
    style_masks = list(style_masks) if style_masks is not None else [None] * len(images)
    to_net = spec.convention.to_network
    cfeats = features(params, to_net(content), program.content_layers, program, spec) if program.content_layers else {}
    shapes = jax.eval_shape(lambda x: features(params, x, program.style_layers, program, spec),
                            jax.ShapeDtypeStruct(content.shape, jnp.float32))
    per_image = [features(params, to_net(im), program.style_layers, program, spec) for im in images]
    style_t, mask_t = [], []
    for name in program.style_layers:
        hw = tuple(shapes[name].shape[:2])
        grams = []
        for feats, smask in zip(per_image, style_masks):
            f = feats[name]
            m = None if smask is None else layer_mask(jnp.asarray(smask, jnp.float32), tuple(f.shape[:2]))
            grams.append(losses.gram(f, program.gram_norm, m))
        style_t.append(jnp.stack(grams))
        mask_t.append(jnp.stack([layer_mask(m, hw) for m in masks]))
    return Targets(tuple(cfeats[n] for n in program.content_layers), tuple(style_t), tuple(mask_t))
