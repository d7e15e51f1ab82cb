"""ResNet50 as a pure function: the layer table and the feature function.

Like ``vgg.py`` this module is the one place that knows the network's structure; weight files
are ``weights.py``'s business. A network is a params pytree with one entry per convolution::

    {"conv1": {"kernel": (7, 7, 3, 64) float32 HWIO, "bias": (64,),
               "bn_scale": (64,), "bn_shift": (64,)},
     "res2a_branch2a": {...}, ..., "res5c_branch2c": {...}}

``kernel`` / ``bias`` are the convolution exactly as the source network has it (Keras' ResNet50
convolutions have biases; torchvision's have none, stored as zeros). ``bn_scale`` / ``bn_shift``
are the convolution's batch norm in inference mode, already reduced to a per-channel affine map
when the file was converted, with the *source's* epsilon::

    bn(y) = gamma * (y - mean) / sqrt(var + eps) + beta = y * bn_scale + bn_shift

(see ``bn_affine``). The statistics are therefore folded at conversion; the affine map is folded
into the convolution (``kernel * bn_scale``, ``bias * bn_scale + bn_shift``) by ``features`` at
trace time, so one convolution runs per layer.

Why the file keeps the convolution and the affine map apart (and does not store pre-folded
kernels): the blog (seed 002) takes ``outputs_dict['res5b_branch2a']`` from Keras, and in Keras'
ResNet50 the layer of that name is the ``Conv2D`` *before* its batch norm ``bn5b_branch2a`` and
before the ReLU. A folded kernel cannot give that activation exactly: undoing the affine map
divides by ``gamma / sqrt(var + eps)``, which loses precision (or fails) for channels whose gamma
is near zero. Storing the unfolded convolution plus the two per-channel vectors costs nothing
over storing folded kernels plus the vectors, and gives every Keras layer output exactly:
``features`` runs a requested pre-BN convolution unfolded and every other one folded.

Layer names (the blog's, i.e. old Keras / Caffe names)
------------------------------------------------------
=========================  =====================================  ===========================  ======================
ours                       what it is                             new Keras (tf.keras >= 2.0)  torchvision
=========================  =====================================  ===========================  ======================
``conv1``                  7x7/2 conv output, before BN           ``conv1_conv``               ``conv1``
``bn_conv1``               after BN                               ``conv1_bn``                 ``bn1``
``conv1_relu``             after BN + ReLU                        ``conv1_relu``               ``relu``
``pool1``                  3x3/2 max pool                         ``pool1_pool``               ``maxpool``
``res3a_branch2a``         1x1 conv output, before BN             ``conv3_block1_1_conv``      ``layer2.0.conv1``
``bn3a_branch2a``          after BN                               ``conv3_block1_1_bn``        ``layer2.0.bn1``
``res3a_branch2a_relu``    after BN + ReLU                        ``conv3_block1_1_relu``      (``layer2.0.relu``)
``res3a_branch2b[_relu]``  3x3 conv (same three forms)            ``conv3_block1_2_*``         ``layer2.0.conv2``
``res3a_branch2c``         1x1 expansion conv; ``bn3a_branch2c``  ``conv3_block1_3_*``         ``layer2.0.conv3``
``res3a_branch1``          shortcut conv (first block of a        ``conv3_block1_0_*``         ``layer2.0.downsample``
                           stage); ``bn3a_branch1``
``res3a``                  block output: add + ReLU               ``conv3_block1_out``         ``layer2.0``
=========================  =====================================  ===========================  ======================

Stages 2..5 have 3, 4, 6, 3 blocks lettered a, b, c, ... (``res2a`` .. ``res5c``). ``layer_names``
lists every name in network order; ``conv_specs`` holds the full map to the other namings.

Architecture variants (both in one table)
-----------------------------------------
* Stride placement. Keras' (Caffe's) ResNet50 puts the stride 2 of the first block of stages 3-5
  on the first 1x1 convolution (``branch2a``) and on ``branch1``; torchvision ("ResNet v1.5")
  puts it on the 3x3 convolution (``branch2b``) and on ``branch1``. The weights have the same
  shapes either way, so the placement is a property of the *file* (root attribute
  ``resnet_stride_on`` = ``"1x1"`` or ``"3x3"``) and a required argument of ``features``.
* The max pool after ``conv1``. Current Keras (keras-applications >= 1.0.7 and ``resnet.py``)
  and torchvision pad it by 1 (``pool1_pad=1``, the default here; 224 px -> 56x56). Keras 2.0-2.2
  ``resnet50.py``, the version the blog ran, used an unpadded 3x3/2 max pool (224 px -> 55x55):
  pass ``pool1_pad=0`` to reproduce those activations exactly. Keras pads with zeros and
  torchvision with -inf; the pool's input is a ReLU output (>= 0), so both give the same values.
* Batch-norm epsilon (folded into ``bn_scale`` at conversion): old-name Keras files 1e-3 (the
  Keras ``BatchNormalization`` default, which ``resnet50.py`` never overrode), new-name Keras files
  1.001e-5, torchvision 1e-5.

Input conventions: Keras' ResNet50 expects ``vgg.CAFFE`` (BGR, 0-255, ImageNet mean subtracted),
torchvision's ``vgg.TORCHVISION``; the weights file records which.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


ARCHS: tuple[str, ...] = ("resnet50",)
# (stage, blocks, bottleneck width, output width); stage numbers as in the Keras/Caffe names.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (2, 3, 64, 256),
    (3, 4, 128, 512),
    (4, 6, 256, 1024),
    (5, 3, 512, 2048),
)
STRIDE_PLACEMENTS: tuple[str, ...] = ("1x1", "3x3")  # Keras/Caffe, torchvision
PARTS: tuple[str, ...] = ("kernel", "bias", "bn_scale", "bn_shift")
# Batch-norm epsilon of each source (folded into bn_scale at conversion).
EPS_KERAS_OLD = 1e-3
EPS_KERAS_NEW = 1.001e-5
EPS_TORCHVISION = 1e-5


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution (with its batch norm) of the table, and the names other formats use."""

    name: str  # res3a_branch2a: our name = old Keras Conv2D name (pre-BN output)
    bn_name: str  # bn3a_branch2a: old Keras BatchNormalization name (post-BN output)
    relu_name: Optional[str]  # res3a_branch2a_relu, conv1_relu; None for branch2c / branch1
    keras_conv: str  # conv3_block1_1_conv (new Keras)
    keras_bn: str  # conv3_block1_1_bn
    torch_conv: str  # layer2.0.conv1 (torchvision state-dict prefix)
    torch_bn: str  # layer2.0.bn1
    size: int  # kernel size: 7, 3 or 1
    in_channels: int
    out_channels: int
    stride_1x1: int  # stride with resnet_stride_on == "1x1" (Keras / Caffe)
    stride_3x3: int  # stride with resnet_stride_on == "3x3" (torchvision)

    def stride(self, stride_on: str) -> int:
        return self.stride_1x1 if stride_on == "1x1" else self.stride_3x3

    @property
    def padding(self) -> int:
        return self.size // 2  # 7x7: 3 (Keras ZeroPadding2D(3)), 3x3: 1 ('same'), 1x1: 0

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        return (self.size, self.size, self.in_channels, self.out_channels)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """A bottleneck block: ``name`` (res3a) is its output after the add and the ReLU."""

    name: str
    branch2: tuple[ConvSpec, ConvSpec, ConvSpec]  # 2a (1x1), 2b (3x3), 2c (1x1)
    branch1: Optional[ConvSpec]  # projection shortcut (first block of a stage), else identity


def _letter(i: int) -> str:
    return chr(ord("a") + i)


@functools.lru_cache(maxsize=None)
def _table() -> tuple[ConvSpec, tuple[BlockSpec, ...]]:
    stem = ConvSpec("conv1", "bn_conv1", "conv1_relu", "conv1_conv", "conv1_bn", "conv1", "bn1", 7, 3, 64, 2, 2)
    blocks = []
    cin = 64
    for stage, n_blocks, mid, width in STAGES:
        for b in range(n_blocks):
            tag = f"{stage}{_letter(b)}"
            new = f"conv{stage}_block{b + 1}"
            tv = f"layer{stage - 1}.{b}"
            first_stride = 2 if (b == 0 and stage > 2) else 1

            def spec(branch, knew, tconv, tbn, size, ci, co, s1, s3, relu):
                return ConvSpec(
                    f"res{tag}_branch{branch}",
                    f"bn{tag}_branch{branch}",
                    f"res{tag}_branch{branch}_relu" if relu else None,
                    f"{new}_{knew}_conv",
                    f"{new}_{knew}_bn",
                    f"{tv}.{tconv}",
                    f"{tv}.{tbn}",
                    size, ci, co, s1, s3,
                )  # fmt: skip

            branch2 = (
                spec("2a", 1, "conv1", "bn1", 1, cin, mid, first_stride, 1, True),
                spec("2b", 2, "conv2", "bn2", 3, mid, mid, 1, first_stride, True),
                spec("2c", 3, "conv3", "bn3", 1, mid, width, 1, 1, False),
            )
            branch1 = None
            if b == 0:
                branch1 = spec("1", 0, "downsample.0", "downsample.1", 1, cin, width, first_stride, first_stride, False)
            blocks.append(BlockSpec(f"res{tag}", branch2, branch1))
            cin = width
    return stem, tuple(blocks)


def block_specs() -> tuple[BlockSpec, ...]:
    """The 16 bottleneck blocks in network order."""
    return _table()[1]


@functools.lru_cache(maxsize=None)
def conv_specs() -> tuple[ConvSpec, ...]:
    """All 53 convolutions in network order (the layer table): conv1, res2a_branch2a, ..."""
    stem, blocks = _table()
    specs = [stem]
    for block in blocks:
        specs += list(block.branch2) + ([block.branch1] if block.branch1 else [])
    return tuple(specs)


@functools.lru_cache(maxsize=None)
def layer_names() -> tuple[str, ...]:
    """Every named activation in network order: conv1, bn_conv1, conv1_relu, pool1, res2a_branch2a, ..."""

    def forms(s: ConvSpec) -> list[str]:
        return [s.name, s.bn_name] + ([s.relu_name] if s.relu_name else [])

    stem, blocks = _table()
    names = forms(stem) + ["pool1"]
    for block in blocks:
        for s in block.branch2:
            names += forms(s)
        if block.branch1:
            names += forms(block.branch1)
        names.append(block.name)
    return tuple(names)


def param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """{conv name: {"kernel": HWIO, "bias": (Cout,), "bn_scale": (Cout,), "bn_shift": (Cout,)}}."""
    return {
        s.name: {"kernel": s.kernel_shape, "bias": (s.out_channels,), "bn_scale": (s.out_channels,), "bn_shift": (s.out_channels,)}
        for s in conv_specs()
    }


def bn_affine(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode batch norm as ``y * scale + shift`` (computed in float64, returned float32)."""
    gamma, beta, mean, var = (np.asarray(a, np.float64) for a in (gamma, beta, mean, var))
    scale = gamma / np.sqrt(var + float(eps))
    shift = beta - mean * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def validate_layers(layers: Sequence[str]) -> None:
    """Raise ValueError naming every unknown layer and listing the valid ones."""
    valid = set(layer_names())
    bad = [name for name in layers if name not in valid]
    if bad:
        raise ValueError(
            f"unknown resnet50 layer(s) {', '.join(map(repr, bad))}; valid: {', '.join(layer_names())}"
        )


def check_params(params: Mapping[str, Mapping[str, object]]) -> None:
    """Raise ValueError unless ``params`` has exactly the table's convolutions, each with all parts."""
    expected = {s.name for s in conv_specs()}
    got = set(params)
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise ValueError(
            "params do not match the resnet50 layer table"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unexpected: {', '.join(map(str, extra))}" if extra else "")
        )
    for name in expected:
        absent = [p for p in PARTS if p not in params[name]]
        if absent:
            raise ValueError(f"resnet50 layer {name} lacks {', '.join(absent)} (needs {', '.join(PARTS)})")


def _conv(x: jax.Array, kernel, bias, stride: int, pad: int, precision) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x,
        kernel.astype(x.dtype),
        window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),  # symmetric, as Keras' ZeroPadding2D / 'same' at stride 1 and torch
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )
    return y + bias.astype(x.dtype)


def _max_pool(x: jax.Array, pad: int) -> jax.Array:
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0))
    )


class _Done(Exception):
    """Internal: every requested layer has been computed."""


def features(
    params: Mapping[str, Mapping[str, jax.Array]],
    x: jax.Array,
    layers: Sequence[str],
    *,
    stride_on: str,
    pool1_pad: int = 1,
    fold_bn: bool = True,
    precision=None,
) -> dict[str, jax.Array]:
    """Named ResNet50 activations of a preprocessed image.

    Only the layers up to the deepest requested one are computed. Pure and jit/vmap friendly
    (``layers``, ``stride_on``, ``pool1_pad`` and ``fold_bn`` are static).

    Args:
      params: params pytree (see the module docstring), e.g. ``weights.load_weights(p).params``.
      x: network input (already preprocessed, see ``vgg.Convention.to_network``), HWC or NHWC.
      layers: names from ``layer_names()``, e.g. the blog's ``res5b_branch2a`` (pre-BN conv
        output, as Keras defines that layer) or ``res4f`` (block output).
      stride_on: "1x1" (Keras / Caffe weights) or "3x3" (torchvision); the weights file's
        ``resnet_stride_on`` (``Network.stride_on``).
      pool1_pad: 1 (current Keras, torchvision) or 0 (Keras 2.0-2.2 ``resnet50.py``).
      fold_bn: fold each batch norm into its convolution (one conv per layer). Convolutions whose
        pre-BN output is requested always run unfolded. False runs every conv then its affine
        batch norm (the same values up to rounding; for checking).
      precision: passed to ``lax.conv_general_dilated`` (e.g. ``"highest"`` to avoid TF32).

    Returns:
      dict name -> activation, HWC or NHWC like ``x``.
    """
    if stride_on not in STRIDE_PLACEMENTS:
        raise ValueError(f"stride_on must be one of {STRIDE_PLACEMENTS}, got {stride_on!r}")
    if pool1_pad not in (0, 1):
        raise ValueError(f"pool1_pad must be 0 or 1, got {pool1_pad!r}")
    check_params(params)
    validate_layers(layers)
    wanted = set(layers)
    out: dict[str, jax.Array] = {}
    if not wanted:
        return out
    single = x.ndim == 3
    h = x[None] if single else x

    def emit(name: Optional[str], value: jax.Array) -> None:
        if name in wanted and name not in out:
            out[name] = value[0] if single else value
            if len(out) == len(wanted):
                raise _Done

    def conv_bn(h: jax.Array, spec: ConvSpec) -> jax.Array:
        p = params[spec.name]
        stride, scale, shift = spec.stride(stride_on), p["bn_scale"], p["bn_shift"]
        if fold_bn and spec.name not in wanted:
            scale = scale.astype(h.dtype)
            kernel = p["kernel"].astype(h.dtype) * scale  # scales the output channels (last axis)
            bias = p["bias"].astype(h.dtype) * scale + shift.astype(h.dtype)
            z = _conv(h, kernel, bias, stride, spec.padding, precision)
        else:
            y = _conv(h, p["kernel"], p["bias"], stride, spec.padding, precision)
            emit(spec.name, y)
            z = y * scale.astype(h.dtype) + shift.astype(h.dtype)
        emit(spec.bn_name, z)
        if spec.relu_name:
            z = jax.nn.relu(z)
            emit(spec.relu_name, z)
        return z

    stem, blocks = _table()
    try:
        h = conv_bn(h, stem)
        h = _max_pool(h, pool1_pad)
        emit("pool1", h)
        for block in blocks:
            z = h
            for spec in block.branch2:
                z = conv_bn(z, spec)
            shortcut = conv_bn(h, block.branch1) if block.branch1 else h
            h = jax.nn.relu(z + shortcut)
            emit(block.name, h)
    except _Done:
        pass
    return out
