"""3x3 convolutions as the engine runs them: XLA's direct convolution with a plain-HWIO input
gradient, and Winograd F(4x4, 3x3) for wide layers (``winograd_wanted`` holds the measured rule).

Pure functions over NHWC inputs and HWIO kernels; ``vgg`` chooses between them per layer, and
``vgg.with_winograd`` adds the transformed kernels to a network's params once per run.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["WINOGRAD_MAX_ELEMENTS", "WINOGRAD_MAX_PIXELS_WIDE", "WINOGRAD_MIN_CHANNELS", "conv3x3",
           "conv3x3_custom_vjp", "winograd_conv", "winograd_custom_vjp", "winograd_kernel", "winograd_wanted"]


def conv3x3(x: jax.Array, kernel: jax.Array, precision) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1, 1),
        padding="SAME",  # 3x3, pad 1: the same as Caffe / torchvision / Keras
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3_custom_vjp(x: jax.Array, kernel: jax.Array, precision) -> jax.Array:
    """``conv3x3`` whose input gradient is a plain HWIO convolution with an explicitly flipped,
    transposed kernel.

    JAX's own transpose rule expresses the input gradient as a convolution with the kernel's I/O
    dimensions swapped (``dim_labels=b01f_01oi->b01f``). Outside loops XLA's CPU backend lays that
    kernel out for its fast convolution (YNNPACK) anyway; inside a ``while`` loop (``lax.scan``:
    the engine's chunks) it does not, and falls back to a naive loop nest, which made every
    optimisation step 3-4x slower than the same step under a plain ``jax.jit`` (BENCHMARKS.md,
    "Performance log"). Here the kernel is flipped and transposed by an explicit op, so the
    gradient convolution is a standard HWIO one in every context. Same arithmetic; the sums
    differ only in order. No forward-mode AD (``jax.jvp``) through this function.
    """
    return conv3x3(x, kernel, precision)


def _conv3x3_fwd(x, kernel, precision):
    return conv3x3(x, kernel, precision), (x, kernel)


def _conv3x3_bwd(precision, residuals, g):
    x, kernel = residuals
    flipped = jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))  # HWIO of the transposed conv
    dx = conv3x3(g, flipped, precision)
    _, kernel_vjp = jax.vjp(lambda k: conv3x3(x, k, precision), kernel)  # dead code unless asked for
    return dx, kernel_vjp(g)[0]


conv3x3_custom_vjp.defvjp(_conv3x3_fwd, _conv3x3_bwd)


# ----------------------------------------------------------------------------------------------
# Winograd F(4x4, 3x3) convolutions (Lavin & Gray 2016), an optional departure from the direct
# convolution every original program uses: each 6x6 input tile and the 3x3 kernel are transformed
# so that a 4x4 output tile costs 36 multiplications per channel pair instead of 144, and the
# work becomes 36 batched matmuls. Same results up to float32 rounding (about 1e-5 of the layer's
# largest value, against about 1e-7 for the direct convolution). On this project's CPU it is
# 1.1-2.5x faster than XLA's direct convolution for layers with >= 256 channels, and for 128-channel
# layers at small sizes; slower for narrow layers at large sizes (the transforms are memory-bound):
# ``winograd_wanted`` holds the measured rule (BENCHMARKS.md, "Performance log").

_WINO_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
_WINO_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                    [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
_WINO_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]], np.float32)
WINOGRAD_MIN_CHANNELS = 128  # both sides of the convolution
WINOGRAD_MAX_ELEMENTS = 2**20  # H * W * max(channels), for layers with fewer than 256 channels on a side
WINOGRAD_MAX_PIXELS_WIDE = 128 * 128  # H * W, for layers with >= 256 channels on both sides (larger: unmeasured)


def _combine(parts: Sequence[jax.Array], matrix: np.ndarray) -> list[jax.Array]:
    """``[sum_j matrix[i, j] * parts[j] for i]`` as elementwise ops (the transform matrices are
    small and sparse: XLA fuses these; an einsum over a 6-long axis lowers to a slow dot)."""
    out = []
    for row in matrix:
        acc: Optional[jax.Array] = None
        for c, part in zip(row.tolist(), parts):
            if c == 0:
                continue
            term = part if c == 1 else (-part if c == -1 else part * np.asarray(c, part.dtype))
            acc = term if acc is None else acc + term
        assert acc is not None  # every row of the transform has a nonzero entry
        out.append(acc)
    return out


def winograd_kernel(kernel: jax.Array) -> jax.Array:
    """The F(4x4, 3x3) transform ``G k G^T`` of an HWIO 3x3 kernel.

    Concrete kernels are transformed on the host with numpy (once per run: XLA's CPU backend ran
    this small contraction ~50x slower), traced ones with ``jnp`` (differentiable).

    Args:
      kernel: (3, 3, C, K).

    Returns:
      (36, C, K): one C×K matrix per point of the 6x6 transformed tile, the kernel's dtype.
    """
    c, k = kernel.shape[2:]
    if isinstance(kernel, jax.core.Tracer):
        g = jnp.asarray(_WINO_G, kernel.dtype)
        u = jnp.einsum("ij,jkco,lk->ilco", g, kernel, g, precision=jax.lax.Precision.HIGHEST)
        return u.reshape(36, c, k)
    host = np.asarray(kernel)
    g_host = _WINO_G.astype(host.dtype)
    rows = (g_host @ host.reshape(3, -1)).reshape(6, 3, -1)  # G k over the kernel's rows
    u_host = np.einsum("lk,ikx->ilx", g_host, rows, optimize=True)  # ... then G^T over its columns
    return jnp.asarray(u_host.reshape(36, c, k))


def winograd_conv(x: jax.Array, u: jax.Array, precision) -> jax.Array:
    """3x3, stride 1, pad 1 convolution of NHWC ``x`` with a transformed kernel ``u`` (36, C, K)."""
    m, a = 4, 6
    n, h, w, c = x.shape
    k = u.shape[-1]
    th, tw = -(-h // m), -(-w // m)
    bt, at = _WINO_BT.astype(x.dtype), _WINO_AT.astype(x.dtype)
    # Tile (i, j) reads padded rows 4i..4i+5 and columns 4j..4j+5 (pad 1, plus enough to fill
    # the last tile; the extra outputs are cropped).
    xp = jnp.pad(x, ((0, 0), (1, m * th + 1 - h), (1, m * tw + 1 - w), (0, 0)))
    rows = _combine([xp[:, r : r + m * th : m] for r in range(a)], bt)
    tiles: list[jax.Array] = []
    for row in rows:
        tiles.extend(_combine([row[:, :, s : s + m * tw : m] for s in range(a)], bt))
    v = jnp.stack(tiles, 0).reshape(a * a, n * th * tw, c)
    prod = jax.lax.dot_general(v, u.astype(x.dtype), (((2,), (1,)), ((0,), (0,))), precision=precision)
    prod = prod.reshape(a, a, n, th, tw, k)
    out_rows = _combine([prod[i] for i in range(a)], at)
    y = jnp.stack([jnp.stack(_combine([r[j] for j in range(a)], at), 0) for r in out_rows], 0)
    y = jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(n, th * m, tw * m, k)
    return y[:, :h, :w]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def winograd_custom_vjp(x: jax.Array, u: jax.Array, u_t: jax.Array, precision) -> jax.Array:
    """``winograd_conv`` whose input gradient is another Winograd convolution: with the
    transformed flipped, transposed kernel ``u_t`` (as ``conv3x3_custom_vjp``). Autodiff of the
    transforms (overlap-add of the tiles) measured 25 % slower."""
    return winograd_conv(x, u, precision)


def _winograd_fwd(x, u, u_t, precision):
    return winograd_conv(x, u, precision), (x, u, u_t)


def _winograd_bwd(precision, residuals, g):
    x, u, u_t = residuals
    dx = winograd_conv(g, u_t, precision)
    _, u_vjp = jax.vjp(lambda uu: winograd_conv(x, uu, precision), u)  # dead code unless asked for
    # u_t only shapes the backward pass: the forward value does not depend on it.
    return dx, u_vjp(g)[0], jnp.zeros_like(u_t)


winograd_custom_vjp.defvjp(_winograd_fwd, _winograd_bwd)


def winograd_wanted(height: int, width: int, in_channels: int, out_channels: int) -> bool:
    """Whether a 3x3 convolution of this shape runs faster as Winograd F(4x4, 3x3).

    Measured on XLA's CPU backend (2-core AVX-512 Xeon, forward, ms direct -> Winograd):
    64², 256->256: 17.7 -> 10.5; 32², 512->512: 24 -> 9.4; 64², 512->512: 70 -> 48;
    96², 512->512: 187 -> 101; 128², 256->256: 70 -> 65; 32², 128->128: 2.3 -> 1.5; but
    128², 128->128: 21.7 -> 27; 128², 128->256: 34.5 -> 45.9; 256², 64->64: 17.6 -> 50.6
    (the transforms are memory-bound: narrow layers at large sizes lose).
    """
    lo, hi = min(in_channels, out_channels), max(in_channels, out_channels)
    if lo >= 256:
        return height * width <= WINOGRAD_MAX_PIXELS_WIDE
    if lo >= WINOGRAD_MIN_CHANNELS:
        return height * width * hi <= WINOGRAD_MAX_ELEMENTS
    return False
