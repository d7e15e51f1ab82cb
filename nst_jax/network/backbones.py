"""The network as the engine runs it: named features of a preprocessed image, for VGG or ResNet50.

Networks are chosen by name from ``NETWORKS`` (``StyleConfig.arch``): each entry is a ``Backbone``,
the one interface the engine uses (its layer table, layer validation, features, and whether its
3×3 convolutions may run as Winograd). The networks themselves are one module each (``vgg``,
``resnet``); a new one is a module and one entry here.

A loaded network (``weights.Network``) carries its params (pytree leaves) and its static facts:
architecture, input convention, and for ResNet50 where its stride sits. The engine passes the params
as arguments of its compiled functions and the static facts as one hashable ``NetSpec``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from . import resnet, vgg
from ..errors import ConfigError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """The static facts of a network the engine needs (hashable: a static argument under ``jit``).

    ``arch``: "vgg19", "vgg16" or "resnet50"; ``convention``: how RGB [0, 1] becomes its input (with
    a program's ``pixel_scale`` applied); ``stride_on`` and ``pool1_pad``: ResNet50 only.
    """

    arch: str
    convention: vgg.Convention
    stride_on: str = "1x1"
    pool1_pad: int = 1


def _vgg_features(params: Any, xn: Array, layers: Sequence[str], program: Any, spec: NetSpec,
                  precision: Any) -> dict[str, Array]:
    # custom_vjp: hand-written VJPs for the convolutions and max/avg poolings, which XLA's CPU
    # backend runs several times faster than JAX's own rules, most of all inside the chunk's
    # while loop (see convolutions.conv3x3_custom_vjp, vgg._max_pool_vjp; BENCHMARKS.md "Performance log").
    return vgg.features(params, xn, layers, pooling=program.pooling, custom_vjp=True, remat=program.remat,
                        precision=precision)


def _resnet_features(params: Any, xn: Array, layers: Sequence[str], program: Any, spec: NetSpec,
                     precision: Any) -> dict[str, Array]:
    return resnet.features(params, xn, layers, stride_on=spec.stride_on, pool1_pad=spec.pool1_pad,
                           precision=precision)


class Backbone(NamedTuple):
    """One feature network's interface.

    ``layer_names(arch)``: its layers in order; ``validate_layers(arch, layers)`` raises
    ``ValueError`` naming an unknown one; ``features(params, xn, layers, program, spec, precision)``
    its named activations; ``winograd``: whether its 3×3 convolutions may run as Winograd
    F(4×4, 3×3) (``engine_params`` adds the transformed kernels).
    """

    layer_names: Callable[[str], tuple[str, ...]]
    validate_layers: Callable[[str, Sequence[str]], None]
    features: Callable[..., dict[str, Array]]
    winograd: bool


VGG = Backbone(vgg.layer_names, vgg.validate_layers, _vgg_features, True)
RESNET = Backbone(lambda arch: resnet.layer_names(), lambda arch, layers: resnet.validate_layers(layers),
                  _resnet_features, False)
# Networks by name (``StyleConfig.arch``).
NETWORKS: dict[str, Backbone] = {**{arch: VGG for arch in vgg.ARCHS}, **{arch: RESNET for arch in resnet.ARCHS}}


def net_spec(network: Any, convention: Union[None, vgg.Convention, NetSpec] = None) -> tuple[dict, NetSpec]:
    """(params, spec) of a ``weights.Network``, or of a bare params dict plus ``convention``.

    Args:
      network: a ``weights.Network`` or a params dict (VGG's architecture is read from its layer
        names; a bare ResNet50 dict, recognised by its ``conv1`` layer, is taken as Keras' 1x1 stride).
      convention: overrides the network's convention (needed for a bare dict); a whole ``NetSpec``
        (e.g. ResNet50 with ``pool1_pad=0``, Keras 2.0-2.2) is taken as it is.
    """
    if isinstance(convention, NetSpec):
        return getattr(network, "params", network), convention
    if hasattr(network, "params") and hasattr(network, "convention"):
        return network.params, NetSpec(network.arch, convention or network.convention, network.stride_on or "1x1")
    if convention is None:
        raise ConfigError("a bare params dict needs convention= (e.g. nst_jax.network.vgg.CAFFE)")
    arch = "resnet50" if "conv1" in network else vgg.arch_of(network)
    return network, NetSpec(arch, convention)


def as_spec(spec: Union[NetSpec, vgg.Convention], params: Any = None) -> NetSpec:
    """A ``NetSpec`` as it is, or a VGG one from a bare convention (the architecture from ``params``'
    layer names; vgg19 without params: only the convention is used then)."""
    if isinstance(spec, NetSpec):
        return spec
    return NetSpec(vgg.arch_of(params) if params is not None else "vgg19", spec)


def with_pixel_scale(spec: NetSpec, pixel_scale: Optional[float]) -> NetSpec:
    """The spec with a program's pixel-scale override applied to its convention (neural-style's x256)."""
    if pixel_scale is None:
        return spec
    if spec.convention.scale == 1.0:
        raise ConfigError("pixel_scale overrides a 0-255 (Caffe) convention; these weights expect [0, 1] input")
    return dataclasses.replace(spec, convention=spec.convention.with_scale(pixel_scale))


def all_layers(program: Any) -> tuple[str, ...]:
    """The program's content then style layers, each once, in that order."""
    seen: dict[str, None] = {}
    for name in program.content_layers + program.style_layers:
        seen.setdefault(name, None)
    return tuple(seen)


def features(params: Any, xn: Array, layers: Sequence[str], program: Any, spec: NetSpec) -> dict[str, Array]:
    """The network's named activations of one preprocessed image (HWC; ``vmap`` for batches).

    Args:
      params: the network's params (VGG's may hold Winograd kernels, see ``engine_params``).
      xn: the network input (``spec.convention.to_network(rgb)``).
      layers: names such as ``relu4_2``.
      program: supplies ``pooling``, ``precision`` and ``remat``.
      spec: the network's static facts.

    Returns:
      dict name -> activation.
    """
    fn = functools.partial(NETWORKS[spec.arch].features, program=program, spec=spec)
    if program.precision == "bf16":
        # bfloat16 convolutions (AMX on recent Xeons, tensor cores on GPUs); losses stay float32.
        p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        out = fn(p16, xn.astype(jnp.bfloat16), layers, precision=None)
        return {k: v.astype(jnp.float32) for k, v in out.items()}
    precision = jax.lax.Precision.HIGHEST if program.precision == "highest" else None
    return fn(params, xn, layers, precision=precision)


# "auto" uses Winograd from this many pixels on: below it the extra compilation (about 1 s per
# convolution and direction) outweighs what a few hundred faster steps save.
WINOGRAD_AUTO_MIN_PIXELS = 160 * 160


def uses_winograd(program: Any, spec: Union[NetSpec, vgg.Convention], shape: Optional[Sequence[int]] = None) -> bool:
    """Whether the engine computes VGG's wide convolutions as Winograd F(4x4, 3x3).

    Args:
      program: its ``conv_algorithm`` ("direct", "winograd", "auto") and ``precision`` (a
        ``StyleConfig`` does too).
      spec: the network (ResNet never uses it); a bare ``vgg.Convention`` means VGG.
      shape: the working image's (H, W, ...), for "auto".
    """
    spec = as_spec(spec)
    if not NETWORKS[spec.arch].winograd or program.conv_algorithm == "direct":
        return False
    if program.conv_algorithm == "auto":
        big = shape is None or shape[0] * shape[1] >= WINOGRAD_AUTO_MIN_PIXELS
        return big and program.precision != "bf16" and jax.default_backend() == "cpu"
    return True


def engine_params(params: Any, program: Any, spec: Union[NetSpec, vgg.Convention], shape: Optional[Sequence[int]] = None) -> Any:
    """The params the loop runs: with the Winograd-transformed kernels added (once per run, not per
    step) when ``uses_winograd``, else without them. Params that already hold them (from
    ``vgg.with_winograd``: do that once when calling ``stylize`` many times) are not transformed again."""
    spec = as_spec(spec, params)
    if not NETWORKS[spec.arch].winograd:
        return params
    if uses_winograd(program, spec, shape):
        return vgg.with_winograd(params, all_layers(program))
    return vgg.without_winograd(params)


def direct_params(params: Any, spec: NetSpec) -> Any:
    """Params for one-off passes (the targets): direct convolutions only, so no Winograd compilation."""
    return vgg.without_winograd(params) if NETWORKS[spec.arch].winograd else params
