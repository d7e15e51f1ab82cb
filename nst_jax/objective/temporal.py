"""Temporal consistency for video (Ruder, Dosovitskiy & Brox 2016, "Artistic style transfer for
videos"): warping by optical flow, the forward-backward consistency masks, the temporal loss and
the long-term loss's combined target.

Pure, differentiable JAX functions; the flows themselves come from outside (OpenCV, or a clip whose
flow is known). Conventions:

* A flow is H×W×2, ``(dx, dy)`` in pixels, and a *backward* warp: ``warp(prev, flow)[y, x] =
  prev[y + dy, x + dx]``. With ``flow`` the flow from frame t to frame t−1, ``warp(frame[t−1],
  flow)`` lines frame t−1 up with frame t.
* Samples are bilinear (``jax.scipy.ndimage.map_coordinates``, order 1); a sample outside the
  image takes the nearest border pixel and is marked invalid in :func:`warp_valid`.

The frame loops are in ``video``, flow estimation in ``flow``, the command in ``cli.video``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

__all__ = ["consistency_mask", "long_term_target", "temporal_loss", "warp", "warp_valid"]


def _coords(flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    h, w = flow.shape[:2]
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=flow.dtype), jnp.arange(w, dtype=flow.dtype), indexing="ij")
    return ys + flow[..., 1], xs + flow[..., 0]


def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
    """Backward-warp an H×W×C image by a flow (bilinear; borders extended).

    Args:
      image: H×W×C.
      flow: H×W×2, (dx, dy) in pixels: output pixel (y, x) samples ``image`` at (y + dy, x + dx).

    Returns:
      H×W×C, differentiable in both arguments.
    """
    y, x = _coords(flow.astype(jnp.float32))

    def one(channel: jax.Array) -> jax.Array:
        return map_coordinates(channel, [y, x], order=1, mode="nearest")

    return jax.vmap(one, in_axes=2, out_axes=2)(image)


def warp_valid(flow: jax.Array) -> jax.Array:
    """1 where a backward warp by ``flow`` samples inside the image, else 0 (H×W float32)."""
    h, w = flow.shape[:2]
    y, x = _coords(flow.astype(jnp.float32))
    inside = (y >= 0) & (y <= h - 1) & (x >= 0) & (x <= w - 1)
    return inside.astype(jnp.float32)


def consistency_mask(flow_back: jax.Array, flow_fwd: jax.Array) -> jax.Array:
    """Ruder et al.'s per-pixel weight c for frame t: 0 at disocclusions and motion boundaries.

    ``flow_back`` goes from frame t to t−1 (what :func:`warp` uses), ``flow_fwd`` from t−1 to t.
    With ŵ = ``flow_back`` and w̃(x) = ``flow_fwd`` sampled at x + ŵ(x), the paper's tests are:

    * disoccluded where |w̃ + ŵ|² > 0.01 (|w̃|² + |ŵ|²) + 0.5 (a consistent pair cancels);
    * a motion boundary where |∇û|² + |∇v̂|² > 0.01 |ŵ|² + 0.002 (û, v̂ the components of ŵ;
      forward differences here);
    * also 0 where the warp samples outside the frame (new content entering at a border).

    Args:
      flow_back, flow_fwd: H×W×2 flows.

    Returns:
      H×W float32 of 0 and 1.
    """
    fb = flow_back.astype(jnp.float32)
    ff = warp(flow_fwd.astype(jnp.float32), fb)
    total = jnp.sum(jnp.square(ff + fb), axis=-1)
    disoccluded = total > 0.01 * (jnp.sum(jnp.square(ff), axis=-1) + jnp.sum(jnp.square(fb), axis=-1)) + 0.5
    dy = jnp.concatenate([fb[1:] - fb[:-1], jnp.zeros_like(fb[:1])], axis=0)
    dx = jnp.concatenate([fb[:, 1:] - fb[:, :-1], jnp.zeros_like(fb[:, :1])], axis=1)
    grad_sq = jnp.sum(jnp.square(dx), axis=-1) + jnp.sum(jnp.square(dy), axis=-1)
    boundary = grad_sq > 0.01 * jnp.sum(jnp.square(fb), axis=-1) + 0.002
    return ((~disoccluded) & (~boundary)).astype(jnp.float32) * warp_valid(fb)


def temporal_loss(image: jax.Array, warped_prev: jax.Array, mask: jax.Array) -> jax.Array:
    """Ruder et al.'s short-term temporal loss: ``(1/D) Σ c · (x − ω)²``, D = H·W·C.

    Args:
      image: the frame being optimised, H×W×C.
      warped_prev: the previous stylised frame warped to this one (:func:`warp`), H×W×C.
      mask: H×W weights c (:func:`consistency_mask`).

    Returns:
      a scalar.
    """
    return jnp.sum(mask[..., None] * jnp.square(image - warped_prev)) / image.size


def long_term_target(warped: Sequence[Any], masks: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Ruder et al.'s long-term temporal loss over several earlier frames, as one (target, weights).

    The paper's long-term loss for frame i is ``Σ_j (1/D) Σ c_long_j · (x − ω_j)²`` over j ∈ J,
    with ω_j frame i − j stylised and warped to frame i, and
    ``c_long_j = max(c_j − Σ_{l ∈ J, l < j} c_l, 0)``: each pixel is held to the nearest earlier
    frame where it is visible. Its gradient is ``(2/D) W (x − T)`` with ``W = Σ_j c_long_j`` and
    ``T = Σ_j c_long_j ω_j / W``, so the objective's single temporal term with target T and weights
    W is the long-term loss: the same gradient, and the same value for 0/1 masks (the c_long are
    then disjoint); otherwise the value differs by a constant in x. One compiled program serves
    short- and long-term runs alike.

    Args:
      warped: ω_j, H×W×C, in the order of J ascending (nearest frame first).
      masks: c_j, H×W, the consistency weights of each pair (i, i − j) (:func:`consistency_mask`).

    Returns:
      (T H×W×C float32, W H×W float32).
    """
    if len(warped) != len(masks) or not warped:
        raise ValueError(f"{len(warped)} warped frames for {len(masks)} masks (at least one of each)")
    if len(warped) == 1:  # J = (j,): c_long = c, the term itself (exactly, not c·ω / c)
        return np.asarray(warped[0], np.float32), np.maximum(np.asarray(masks[0], np.float32), 0.0)
    earlier = np.zeros(np.shape(masks[0]), np.float32)
    weights = np.zeros_like(earlier)
    total = np.zeros(np.shape(warped[0]), np.float32)
    for w, c in zip(warped, masks):
        c = np.asarray(c, np.float32)
        c_long = np.maximum(c - earlier, 0.0)
        earlier += c
        weights += c_long
        total += c_long[..., None] * np.asarray(w, np.float32)
    # (where no frame sees the pixel, W = 0 and the target is irrelevant: the nearest frame's)
    target = np.where(weights[..., None] > 0, total / np.maximum(weights, 1e-30)[..., None],
                      np.asarray(warped[0], np.float32))
    return target.astype(np.float32), weights
