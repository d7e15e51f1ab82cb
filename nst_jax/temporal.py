"""Temporal consistency for video (Ruder, Dosovitskiy & Brox 2016, "Artistic style transfer for
videos"): warping by optical flow, the forward-backward consistency masks, the temporal loss.

Pure, differentiable JAX functions; the flows themselves come from outside (OpenCV, or a clip whose
flow is known). Conventions:

* A flow is H×W×2, ``(dx, dy)`` in pixels, and a *backward* warp: ``warp(prev, flow)[y, x] =
  prev[y + dy, x + dx]``. With ``flow`` the flow from frame t to frame t−1, ``warp(frame[t−1],
  flow)`` lines frame t−1 up with frame t.
* Samples are bilinear (``jax.scipy.ndimage.map_coordinates``, order 1); a sample outside the
  image takes the nearest border pixel and is marked invalid in :func:`warp_valid`.

This module is the first step of video support (issue 15): the frame loop, flow estimation and
the CLI are still to come.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

__all__ = ["consistency_mask", "temporal_loss", "warp", "warp_valid"]


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
