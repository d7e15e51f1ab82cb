"""VGG19 / VGG16 as pure functions: the layer table, input conventions and the feature function.

This module is the one place that knows the networks' structure. Weight *files* are
``weights.py``'s business; here a network is only a params pytree::

    {"conv1_1": {"kernel": (3, 3, Cin, Cout) float32 HWIO, "bias": (Cout,)}, ...}

Layer names (the index map, written down once)
----------------------------------------------
``convB_N`` is the N-th convolution of block B *before* its ReLU, ``reluB_N`` the same after
the ReLU, ``poolB`` the 2x2/2 pooling that ends block B. Other programs name them:

=========  ===============================  =====================  ======================
ours       torchvision ``features.N``       Keras                  the tutorial (seed 003)
=========  ===============================  =====================  ======================
conv1_1    ``features.0``                   (none: Keras fuses     ``conv_1``
relu1_1    ``features.1``                   ReLU) block1_conv1     ``relu_1``
pool1      ``features.4``                   block1_pool            ``pool_2``
conv5_4    ``features.34`` (VGG19 only)     (relu) block5_conv4    ``conv_16``
=========  ===============================  =====================  ======================

``TORCH_INDEX`` and ``KERAS_NAME`` below hold the full maps; they are derived from the block
table so VGG16 and VGG19 share one definition.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import convolutions

# Convolutions per block. Block widths are shared by both architectures.
BLOCKS: dict[str, tuple[int, ...]] = {
    "vgg19": (2, 2, 4, 4, 4),
    "vgg16": (2, 2, 3, 3, 3),
}
WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)
ARCHS: tuple[str, ...] = tuple(BLOCKS)
POOLINGS: tuple[str, ...] = ("max", "avg")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution of the table: our name, shapes and the names other formats use."""

    name: str  # conv1_1
    in_channels: int
    out_channels: int
    torch_index: int  # N in torchvision's ``features.N``
    keras_name: str  # block1_conv1


def conv_specs(arch: str) -> tuple[ConvSpec, ...]:
    """The convolutions of ``arch`` in network order (the layer table)."""
    if arch not in BLOCKS:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    specs = []
    index, cin = 0, 3
    for b, (n_convs, width) in enumerate(zip(BLOCKS[arch], WIDTHS), start=1):
        for n in range(1, n_convs + 1):
            specs.append(ConvSpec(f"conv{b}_{n}", cin, width, index, f"block{b}_conv{n}"))
            cin = width
            index += 2  # conv, relu
        index += 1  # pool
    return tuple(specs)


def layer_names(arch: str) -> tuple[str, ...]:
    """Every named activation of ``arch`` in network order: conv1_1, relu1_1, ..., pool5."""
    names = []
    for b, n_convs in enumerate(BLOCKS[arch], start=1):
        for n in range(1, n_convs + 1):
            names += [f"conv{b}_{n}", f"relu{b}_{n}"]
        names.append(f"pool{b}")
    return tuple(names)


def arch_of(params: Mapping[str, object]) -> str:
    """Infer the architecture from a params pytree's layer names (static under jit)."""
    for arch in ARCHS:
        if set(params) == {s.name for s in conv_specs(arch)}:
            return arch
    raise ValueError(
        "params do not match any VGG layer table (layers: " + ", ".join(sorted(params)) + ")"
    )


def validate_layers(arch: str, layers: Sequence[str]) -> None:
    """Raise ValueError naming every unknown layer and listing the valid ones."""
    valid = layer_names(arch)
    bad = [name for name in layers if name not in valid]
    if bad:
        raise ValueError(
            f"unknown {arch} layer(s) {', '.join(map(repr, bad))}; valid: {', '.join(valid)}"
        )


@dataclasses.dataclass(frozen=True)
class Convention:
    """How an RGB image in [0, 1] becomes the network's input.

    ``x = (order(rgb * scale) - mean) / std`` with ``mean`` and ``std`` in the network's channel
    order and in scaled units.
    """

    channel_order: str  # "RGB" or "BGR"
    scale: float  # 1.0 or 255.0
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be positive, got {self.scale}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values, std positive")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()):
            raise ValueError(f"mean and std must be finite, got mean {self.mean}, std {self.std}")

    def with_scale(self, scale: float) -> "Convention":
        """The same convention at another pixel scale (neural-style's x256 quirk)."""
        return dataclasses.replace(self, scale=float(scale))

    def to_network(self, rgb: jax.Array) -> jax.Array:
        """RGB in [0, 1] (..., 3) -> network input."""
        x = rgb * self.scale
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        return (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)

    def from_network(self, x: jax.Array) -> jax.Array:
        """Network input -> RGB in [0, 1] (unclipped)."""
        y = x * jnp.asarray(self.std, x.dtype) + jnp.asarray(self.mean, x.dtype)
        if self.channel_order == "BGR":
            y = y[..., ::-1]
        return y / self.scale

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Caffe VGG (Keras' files, neural-style, MATLAB): BGR, 0-255, minus the ImageNet mean (BGR order).
CAFFE = Convention("BGR", 255.0, (103.939, 116.779, 123.68))
# torchvision: RGB in [0, 1], normalised by the ImageNet mean and std.
TORCHVISION = Convention("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CONVENTIONS: dict[str, Convention] = {"caffe": CAFFE, "torchvision": TORCHVISION}


def with_winograd(params: Mapping[str, Mapping[str, jax.Array]], layers: Sequence[str] = ()) -> dict:
    """Params with each wide convolution's transformed kernels added (``winograd``, and
    ``winograd_t`` for the input gradient), so that ``features`` computes those convolutions as
    Winograd F(4x4, 3x3) where ``winograd_wanted`` says it pays. Transform once, use for every
    step: the transformed kernels are 4x the size of the originals (about 0.4 GB for VGG19).

    Args:
      params: VGG params pytree.
      layers: the layers ``features`` will be asked for: convolutions after the deepest of them
        are left alone (they would never run). Empty: every convolution.

    Returns:
      A new pytree; layers too narrow for Winograd are unchanged.
    """
    order = layer_names(arch_of(params))
    last = max((order.index(name) for name in layers), default=len(order) - 1)
    out = {}
    for name, p in params.items():
        kernel = p["kernel"]
        wide = min(kernel.shape[2:]) >= convolutions.WINOGRAD_MIN_CHANNELS
        if wide and order.index(name) <= last and "winograd" not in p:
            flipped = jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))
            p = dict(p, winograd=convolutions.winograd_kernel(kernel), winograd_t=convolutions.winograd_kernel(flipped))
        out[name] = p
    return out


def without_winograd(params: Mapping[str, Mapping[str, jax.Array]]) -> dict:
    """Params with any ``with_winograd`` additions removed (direct convolutions everywhere)."""
    return {name: {k: v for k, v in p.items() if k not in ("winograd", "winograd_t")} for name, p in params.items()}


def _conv(x: jax.Array, p: Mapping[str, jax.Array], precision, custom_vjp: bool = False) -> jax.Array:
    kernel = p["kernel"].astype(x.dtype)
    if "winograd" in p and convolutions.winograd_wanted(x.shape[1], x.shape[2], *kernel.shape[2:]):
        y = convolutions.winograd_custom_vjp(x, p["winograd"].astype(x.dtype), p["winograd_t"].astype(x.dtype),
                                             precision)
    elif custom_vjp:
        y = convolutions.conv3x3_custom_vjp(x, kernel, precision)
    else:
        y = convolutions.conv3x3(x, kernel, precision)
    return y + p["bias"].astype(x.dtype)


def _pool(x: jax.Array, pooling: str, custom_vjp: bool = False) -> jax.Array:
    # 2x2 window, stride 2, no padding: odd sizes are floored, as in torchvision, Keras
    # ('valid') and MATLAB. (Caffe itself rounds up; no seed program depends on that.)
    if custom_vjp:
        return _max_pool_vjp(x) if pooling == "max" else _avg_pool_vjp(x)
    return _max_pool(x) if pooling == "max" else _avg_pool(x)


_WINDOW, _STRIDES = (1, 2, 2, 1), (1, 2, 2, 1)


def _max_pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, _WINDOW, _STRIDES, "VALID")


def _avg_pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, _WINDOW, _STRIDES, "VALID") / 4.0


def _unpool(parts: Sequence[jax.Array], shape: tuple[int, ...]) -> jax.Array:
    """Four N×Ho×Wo×C arrays (window positions 00, 01, 10, 11) -> N×H×W×C, zeros where VALID dropped."""
    p00, p01, p10, p11 = parts
    n, ho, wo, c = p00.shape
    top = jnp.stack([p00, p01], 3)  # n, ho, wo, 2, c
    bottom = jnp.stack([p10, p11], 3)
    dx = jnp.stack([top, bottom], 2).reshape(n, 2 * ho, 2 * wo, c)
    return jnp.pad(dx, ((0, 0), (0, shape[1] - 2 * ho), (0, shape[2] - 2 * wo), (0, 0)))


@jax.custom_vjp
def _max_pool_vjp(x: jax.Array) -> jax.Array:
    """``_max_pool`` with its gradient as masks (the same values as XLA's ``select_and_scatter``).

    JAX differentiates max pooling with ``select_and_scatter``, which XLA's CPU backend runs as a
    naive loop: ~6x slower than the mask below (BENCHMARKS.md, "Performance log"). The gradient
    of each 2x2 window goes to its first maximum in row-major order, exactly as
    ``select_and_scatter`` with JAX's ``ge`` selector picks it, ties included.
    """
    return _max_pool(x)


def _max_pool_fwd(x):
    y = _max_pool(x)
    return y, (x, y)


def _max_pool_bwd(residuals, g):
    x, y = residuals
    n, ho, wo, c = y.shape
    win = x[:, : 2 * ho, : 2 * wo].reshape(n, ho, 2, wo, 2, c) == y[:, :, None, :, None, :]
    m00 = win[:, :, 0, :, 0]
    m01 = win[:, :, 0, :, 1] & ~m00
    m10 = win[:, :, 1, :, 0] & ~(m00 | m01)
    m11 = win[:, :, 1, :, 1] & ~(m00 | m01 | m10)
    zero = jnp.zeros_like(g)
    return (_unpool([jnp.where(m, g, zero) for m in (m00, m01, m10, m11)], x.shape),)


_max_pool_vjp.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.custom_vjp
def _avg_pool_vjp(x: jax.Array) -> jax.Array:
    """``_avg_pool`` with its gradient as a broadcast (the same values as JAX's own rule)."""
    return _avg_pool(x)


def _avg_pool_fwd(x):
    return _avg_pool(x), x.shape


def _avg_pool_bwd(shape, g):
    q = g / 4.0
    return (_unpool([q, q, q, q], shape),)


_avg_pool_vjp.defvjp(_avg_pool_fwd, _avg_pool_bwd)


def features(
    params: Mapping[str, Mapping[str, jax.Array]],
    x: jax.Array,
    layers: Sequence[str],
    *,
    pooling: str = "max",
    precision=None,
    custom_vjp: bool = False,
    remat: bool = False,
) -> dict[str, jax.Array]:
    """Named VGG activations of a preprocessed image.

    Only the layers up to the deepest requested one are computed. Pure and jit/vmap friendly:
    the architecture comes from the params' layer names, which are static.

    Args:
      params: params pytree (``conv1_1`` ... with ``kernel`` HWIO and ``bias``).
      x: network input (already preprocessed, see ``Convention.to_network``), HWC or NHWC.
      layers: names such as ``conv4_2``, ``relu4_2``, ``pool4``.
      pooling: "max" or "avg" (Gatys / MATLAB replace every max pooling by average pooling).
      precision: passed to ``lax.conv_general_dilated`` (e.g. ``"highest"`` to avoid TF32).
      custom_vjp: differentiate the convolutions and poolings with hand-written VJPs that XLA's
        CPU backend runs fast (see ``convolutions.conv3x3_custom_vjp``, ``_max_pool_vjp``): the same values
        (the poolings' bit for bit), several times faster gradients, most of all inside
        ``lax.scan`` / ``while`` loops; forward-mode AD (``jax.jvp``) is then unavailable. The
        engine (``transfer``) turns it on.
      remat: rematerialise per block (``jax.checkpoint``): the backward pass keeps each block's
        output and the requested layers and recomputes the rest, for large images on GPUs. The
        same values. On XLA's CPU backend it measured slower and no smaller (BENCHMARKS.md).

    Returns:
      dict name -> activation, HWC or NHWC like ``x``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    arch = arch_of(params)
    validate_layers(arch, layers)
    wanted = set(layers)
    order = layer_names(arch)
    deepest = max(order.index(name) for name in layers) if layers else -1
    single = x.ndim == 3
    h = x[None] if single else x
    out: dict[str, jax.Array] = {}
    # Blocks: the layers from one pooling to the next (block B's convs, ReLUs and poolB).
    blocks: list[list[str]] = [[]]
    for name in order[: deepest + 1]:
        blocks[-1].append(name)
        if name.startswith("pool"):
            blocks.append([])

    def run_block(block_params, h, names):
        acts = {}
        for name in names:
            if name.startswith("conv"):
                h = _conv(h, block_params[name], precision, custom_vjp)
            elif name.startswith("relu"):
                h = jax.nn.relu(h)
            else:
                h = _pool(h, pooling, custom_vjp)
            if name in wanted:
                acts[name] = h
        return h, acts

    for names in blocks:
        if not names:
            continue
        block_params = {n: params[n] for n in names if n.startswith("conv")}
        fn: Callable[..., Any] = functools.partial(run_block, names=tuple(names))
        if remat:
            # Keep only the block's output and the requested layers for the backward pass; the
            # block's other activations are recomputed (one more forward per block).
            fn = jax.checkpoint(fn)
        h, acts = fn(block_params, h)
        for name, a in acts.items():
            out[name] = a[0] if single else a
    return out
