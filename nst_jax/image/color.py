"""Colour: YIQ conversions, chroma swaps and luminance or colour matching (colour preservation).

Pure functions on float RGB arrays in [0, 1] (numpy or jax in, jax out).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.errors import ConfigError

COLOR_METHODS = ("chol", "pca", "sym")

# --------------------------------------------------------------------------------------------
# colour

# NTSC YIQ (FCC 1953 coefficients, as in scikit-image's ``yiq_from_rgb``):
#   Y = 0.299 R + 0.587 G + 0.114 B
#   I = 0.59590059 R − 0.27455667 G − 0.32134392 B
#   Q = 0.21153661 R − 0.52273617 G + 0.31119955 B
# The I and Q rows sum to zero, so they span the same chroma plane as YUV's U, V: swapping chroma
# in YIQ gives the same image as neural-style's ``original_colors`` swap in YUV.
_YIQ_FROM_RGB = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.59590059, -0.27455667, -0.32134392],
        [0.21153661, -0.52273617, 0.31119955],
    ],
    dtype=np.float64,
)
_RGB_FROM_YIQ = np.linalg.inv(_YIQ_FROM_RGB)
_HI = jax.lax.Precision.HIGHEST


def _apply_matrix(m: np.ndarray, x: Any) -> jax.Array:
    x = jnp.asarray(x, dtype=jnp.float32)
    return jnp.matmul(x, jnp.asarray(m.T, dtype=jnp.float32), precision=_HI)


def rgb_to_yiq(rgb: Any) -> jax.Array:
    """RGB → YIQ with the NTSC matrix above.

    Args:
      rgb: ...×3 array (numpy or jax).

    Returns:
      ...×3 jax array (Y, I, Q).
    """
    return _apply_matrix(_YIQ_FROM_RGB, rgb)


def yiq_to_rgb(yiq: Any) -> jax.Array:
    """YIQ → RGB (the inverse of :func:`rgb_to_yiq`; not clipped).

    Args:
      yiq: ...×3 array.

    Returns:
      ...×3 jax array.
    """
    return _apply_matrix(_RGB_FROM_YIQ, yiq)


def luminance(rgb: Any) -> jax.Array:
    """The Y of YIQ (Rec. 601 luma): ``0.299 R + 0.587 G + 0.114 B``.

    Args:
      rgb: H×W×3 array.

    Returns:
      H×W jax array.
    """
    rgb = jnp.asarray(rgb, dtype=jnp.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def transfer_chroma(luma_source: Any, chroma_source: Any, *, clip: bool = False) -> jax.Array:
    """Y from ``luma_source``, I and Q from ``chroma_source`` (neural-style's ``original_colors``).

    Typically ``transfer_chroma(result, content)``: the stylised result recoloured with the
    content's colours.

    Args:
      luma_source: H×W×3 RGB supplying the luminance.
      chroma_source: H×W×3 RGB (same H×W) supplying the colour.
      clip: clip the result to ``[0, 1]`` (changes Y where it clips).

    Returns:
      H×W×3 jax array.
    """
    a = jnp.asarray(luma_source, dtype=jnp.float32)
    b = jnp.asarray(chroma_source, dtype=jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"transfer_chroma needs equal shapes, got {a.shape} and {b.shape}")
    y = rgb_to_yiq(a)[..., :1]
    iq = rgb_to_yiq(b)[..., 1:]
    out = yiq_to_rgb(jnp.concatenate([y, iq], axis=-1))
    return jnp.clip(out, 0.0, 1.0) if clip else out


def match_luminance(style_y: Any, content_y: Any, eps: float = 1e-6) -> jax.Array:
    """Luminance-only transfer (Gatys et al. 2016): ``σ_C/σ_S · (L_S − μ_S) + μ_C``.

    Args:
      style_y: the style image's luminance (any shape).
      content_y: the content image's luminance (any shape).
      eps: a style luminance with ``σ_S <= eps`` counts as flat and becomes flat at ``μ_C``.

    Returns:
      jax array shaped like ``style_y`` with the content's mean and standard deviation.
    """
    s = jnp.asarray(style_y, dtype=jnp.float32)
    c = jnp.asarray(content_y, dtype=jnp.float32)
    std_s = s.std()
    scale = jnp.where(std_s > eps, c.std() / jnp.maximum(std_s, eps), 0.0)
    return (s - s.mean()) * scale + c.mean()


def _mean_cov(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    flat = x.reshape(-1, 3)
    mu = flat.mean(axis=0)
    d = flat - mu
    cov = jnp.matmul(d.T, d, precision=_HI) / flat.shape[0] + eps * jnp.eye(3, dtype=flat.dtype)
    return mu, cov


def _sym_pow(cov: jax.Array, p: float) -> jax.Array:
    lam, q = jnp.linalg.eigh(cov)
    lam = jnp.maximum(lam, 1e-12)
    return jnp.matmul(q * lam**p, q.T, precision=_HI)


def match_color(
    source: Any,
    target: Any,
    method: str = "chol",
    *,
    eps: float = 1e-5,
    clip: bool = False,
) -> jax.Array:
    """Linear colour transfer (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer").

    ``source`` is the image that is recoloured; ``target`` supplies the colours. Each pixel becomes
    ``x' = A (x − μ_S) + μ_T`` with ``A Σ_S Aᵀ = Σ_T``, so the result has the target's RGB mean
    and covariance. (In the paper's colour-histogram-matching variant the *style* image is the
    source and the *content* image the target.) Covariances get ``eps·I`` added.

    Methods:
      "chol": ``A = L_T L_S⁻¹`` with Cholesky factors ``Σ = L Lᵀ``.
      "pca": ``A = Q_T Λ_T^½ Λ_S^-½ Q_Sᵀ`` with eigendecompositions ``Σ = Q Λ Qᵀ`` (eigenvalues
        ascending; the sign of each source eigenvector is chosen to agree with the target's).
      "sym": ``A = Σ_T^½ Σ_S^-½`` with symmetric matrix square roots (the paper's "image analogies").

    Args:
      source: H×W×3 RGB to recolour (numpy or jax).
      target: H'×W'×3 RGB whose colour statistics are imposed (any size).
      method: "chol", "pca" or "sym".
      eps: covariance regulariser.
      clip: clip the result to ``[0, 1]`` (then the statistics match only approximately).

    Returns:
      jax float32 array shaped like ``source``.
    """
    if method not in COLOR_METHODS:
        raise ConfigError(f"colour match method must be one of {COLOR_METHODS}, got {method!r}")
    s = jnp.asarray(source, dtype=jnp.float32)
    t = jnp.asarray(target, dtype=jnp.float32)
    mu_s, cov_s = _mean_cov(s, eps)
    mu_t, cov_t = _mean_cov(t, eps)
    if method == "chol":
        l_s = jnp.linalg.cholesky(cov_s)
        l_t = jnp.linalg.cholesky(cov_t)
        # A = L_T L_S⁻¹  ⇔  Aᵀ = L_S⁻ᵀ L_Tᵀ: solve L_Sᵀ Aᵀ = L_Tᵀ
        a = jax.scipy.linalg.solve_triangular(l_s.T, l_t.T, lower=False).T
    elif method == "pca":
        lam_s, q_s = jnp.linalg.eigh(cov_s)
        lam_t, q_t = jnp.linalg.eigh(cov_t)
        sign = jnp.where(jnp.sum(q_s * q_t, axis=0) < 0, -1.0, 1.0)
        q_s = q_s * sign
        scale = jnp.sqrt(jnp.maximum(lam_t, 0.0) / jnp.maximum(lam_s, 1e-12))
        a = jnp.matmul(q_t * scale, q_s.T, precision=_HI)
    else:
        a = jnp.matmul(_sym_pow(cov_t, 0.5), _sym_pow(cov_s, -0.5), precision=_HI)
    out = jnp.matmul(s - mu_s, a.T, precision=_HI) + mu_t
    return jnp.clip(out, 0.0, 1.0) if clip else out
