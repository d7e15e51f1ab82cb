"""Gram, content, style and total-variation losses as pure functions, their normalisations chosen by name.

Every seed program's formula is one combination of the options below (see ``presets.py``):

============  ============  =============  ===================================  ==========
program       gram_norm     style_reduce   style_divisor                         content
============  ============  =============  ===================================  ==========
keras         none          sum            4·3²·(H_in·W_in)²  (quirk: C = 3)    sum
pytorch       chw           mean           1                                     mean
matlab        none          mean           (H·W·C)²                              half_mean
gatys         none          sum            4·C²·(H·W)²                           half_sum
jcjohnson     chw           mean           1                                     mean
============  ============  =============  ===================================  ==========

Features are HWC (one image); batch with ``jax.vmap``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

GRAM_NORMS = ("none", "chw", "hw")
STYLE_REDUCES = ("sum", "mean")
STYLE_DIVISORS = ("none", "4n2m2", "n2m2", "4n2m2_input")
CONTENT_LOSSES = ("sum", "mean", "half_mean", "half_sum")
TV_LOSSES = ("none", "pow1.25", "l2", "l1")


def gram(f: jax.Array, norm: str = "none", mask: jax.Array | None = None) -> jax.Array:
    """Gram matrix ``Fᵀ F`` of an H×W×C feature map, F reshaped to (H·W)×C.

    Args:
      f: features, H×W×C.
      norm: "none"; "chw" divides by C·H·W (the tutorial, neural-style); "hw" by H·W.
      mask: optional H×W weights (guided Gram, Gatys et al. 2017): the features are multiplied
        by the mask before the product.

    Returns:
      C×C matrix.
    """
    h, w, c = f.shape
    flat = f.reshape(h * w, c)
    area: Any = h * w
    if mask is not None:
        flat = flat * mask.reshape(h * w, 1)
        # A region's Gram is normalised by the region's area (its mask's sum), so regions of any
        # size compare with their style's Gram like whole images do.
        area = jnp.maximum(jnp.sum(mask), 1e-6)
    g = jnp.matmul(flat.T, flat, precision=jax.lax.Precision.HIGHEST)
    if norm == "chw":
        g = g / (c * area)
    elif norm == "hw":
        g = g / area
    elif norm != "none":
        raise ValueError(f"gram norm must be one of {GRAM_NORMS}, got {norm!r}")
    return g


def style_divisor(kind: str, c: int, h: int, w: int, input_hw: tuple[int, int]) -> float:
    """The constant a layer's squared Gram difference is divided by.

    Args:
      kind: named after the formula, with N = the layer's channels and M = its H·W (the paper's
        notation): "none" 1; "4n2m2" 4·N²·M² (Gatys et al.); "n2m2" (N·M)² = (H·W·C)² (the MATLAB
        code; its prose says (2HWC)²); "4n2m2_input" 4·N²·M² with N hard-coded to 3 and M the
        *input image's* H·W, for every layer (the Keras example's quirk, kept on purpose).
      c, h, w: the layer's channels, height, width.
      input_hw: the input image's (height, width).
    """
    if kind == "none":
        return 1.0
    if kind == "4n2m2_input":
        return 4.0 * (3**2) * float(input_hw[0] * input_hw[1]) ** 2
    if kind == "n2m2":
        return float(h * w * c) ** 2
    if kind == "4n2m2":
        return 4.0 * float(c) ** 2 * float(h * w) ** 2
    raise ValueError(f"style divisor must be one of {STYLE_DIVISORS}, got {kind!r}")


def style_layer_loss(g_x: jax.Array, g_s: jax.Array, reduce: str, divisor: float) -> jax.Array:
    """``reduce((G_x − G_s)²) / divisor`` for one layer."""
    sq = jnp.square(g_x - g_s)
    if reduce == "sum":
        out = jnp.sum(sq)
    elif reduce == "mean":
        out = jnp.mean(sq)
    else:
        raise ValueError(f"style reduce must be one of {STYLE_REDUCES}, got {reduce!r}")
    return out / divisor


def content_loss(f_x: jax.Array, f_c: jax.Array, kind: str) -> jax.Array:
    """Content loss between two feature maps.

    Args:
      kind: "sum" Σ(F−P)² (Keras); "mean" (tutorial, neural-style); "half_mean" ½·mean (MATLAB);
        "half_sum" ½·Σ (the paper).
    """
    sq = jnp.square(f_x - f_c)
    if kind == "sum":
        return jnp.sum(sq)
    if kind == "mean":
        return jnp.mean(sq)
    if kind == "half_mean":
        return 0.5 * jnp.mean(sq)
    if kind == "half_sum":
        return 0.5 * jnp.sum(sq)
    raise ValueError(f"content loss must be one of {CONTENT_LOSSES}, got {kind!r}")


def tv_loss(x: jax.Array, kind: str) -> jax.Array:
    """Total variation of an H×W×C image.

    Args:
      kind: "pow1.25": Σ (a + b)^1.25 with a, b the squared vertical / horizontal differences
        over the [:-1, :-1] crop, all channels (the Keras example); "l2": ½·Σ (dx² + dy²) over
        the same crop (neural-style's TVLoss gradient, whose loss is its half sum of squares);
        "l1": Σ|dx| + Σ|dy| over full differences (neural-style-pt); "none": 0.
    """
    if kind == "none":
        return jnp.zeros((), x.dtype)
    if kind in ("pow1.25", "l2"):
        a = jnp.square(x[:-1, :-1, :] - x[1:, :-1, :])
        b = jnp.square(x[:-1, :-1, :] - x[:-1, 1:, :])
        if kind == "pow1.25":
            return jnp.sum(jnp.power(a + b, 1.25))
        return 0.5 * jnp.sum(a + b)
    if kind == "l1":
        return jnp.sum(jnp.abs(x[1:, :, :] - x[:-1, :, :])) + jnp.sum(jnp.abs(x[:, 1:, :] - x[:, :-1, :]))
    raise ValueError(f"tv loss must be one of {TV_LOSSES}, got {kind!r}")


def mean_cov(f: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Channel mean (C,) and covariance (C×C) of an H×W×C feature map."""
    h, w, c = f.shape
    flat = f.reshape(h * w, c)
    mu = jnp.mean(flat, axis=0)
    centred = flat - mu
    cov = jnp.matmul(centred.T, centred, precision=jax.lax.Precision.HIGHEST) / (h * w)
    return mu, cov


def _sqrtm_psd(m: jax.Array) -> jax.Array:
    vals, vecs = jnp.linalg.eigh(m)
    return (vecs * jnp.sqrt(jnp.clip(vals, 0.0))) @ vecs.T


def wasserstein2(mu_x: jax.Array, cov_x: jax.Array, mu_s: jax.Array, cov_s: jax.Array) -> jax.Array:
    """Squared 2-Wasserstein distance between Gaussians N(mu_x, cov_x) and N(mu_s, cov_s).

    ``|mu_x − mu_s|² + tr(cov_x) + tr(cov_s) − 2·tr((cov_s^½ cov_x cov_s^½)^½)``, the style loss of
    crowsonkb/style-transfer-pytorch up to two departures kept on purpose: crowsonkb averages over
    the C channels where this sums (its ``mean`` of the squared mean difference and of the diagonal:
    this value / C, so its deeper layers weigh less), and adds 1e-4·I to both covariances. This is
    the squared W2 distance itself; per-layer weights (``style_layer_weights``) give crowsonkb's
    scaling (1/C each) if wanted. The inner square root is taken through the eigenvalues of the
    (symmetric) product. Several styles are blended as a mixture (``targets.blend_stats``).
    """
    s_half = _sqrtm_psd(cov_s)
    inner = s_half @ cov_x @ s_half
    vals = jnp.linalg.eigvalsh(0.5 * (inner + inner.T))
    cross = jnp.sum(jnp.sqrt(jnp.clip(vals, 1e-12)))
    return jnp.sum(jnp.square(mu_x - mu_s)) + jnp.trace(cov_x) + jnp.trace(cov_s) - 2.0 * cross


def normalized_gradient(fn):
    """``fn(f, *args)`` whose gradient w.r.t. ``f`` is divided by its L1 norm (+1e-8).

    neural-style's ``-normalize_gradients``: each loss module's gradient is L1-normalised before
    its weight is applied, so every layer pushes with the same strength. The value is unchanged.
    """

    @jax.custom_vjp
    def wrapped(f, *args):
        return fn(f, *args)

    def fwd(f, *args):
        value, vjp = jax.vjp(lambda ff: fn(ff, *args), f)
        (g,) = vjp(jnp.ones_like(value))
        return value, (g, args)

    def bwd(res, ct):
        g, args = res
        return (ct * g / (jnp.sum(jnp.abs(g)) + 1e-8),) + tuple(jax.tree.map(jnp.zeros_like, a) for a in args)

    wrapped.defvjp(fwd, bwd)
    return wrapped
