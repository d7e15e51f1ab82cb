"""Keras weight files: legacy HDF5 (both naming generations, VGG and ResNet50) and Keras 3 ``.weights.h5``.

Every dataset is reached through ``h5safe``: only datasets stored in the file itself are read,
and each one's shape and dtype are checked before its bytes are.
"""

from __future__ import annotations

import re
from typing import Optional

import h5py
import numpy as np

from ..network import resnet, vgg
from . import h5safe
from .common import FORMAT, ALL_ARCHS, UNDERSTOOD, ConvertedSource, Parsed, arch_by_count, as_str, fail

# --------------------------------------------------------------------------------------------
# Keras converters
# --------------------------------------------------------------------------------------------


# Keras splits a long attribute into name0, name1, ...; no real model needs more than this many.
_MAX_ATTR_CHUNKS = 1000


def _attr_list(group: h5py.Group, name: str, label: str = "") -> Optional[list[str]]:
    """A list-of-strings attribute; Keras splits long ones into name0, name1, ... chunks."""
    if name in group.attrs:
        values = np.atleast_1d(np.asarray(h5safe.attr(group, name, label))).tolist()
    elif f"{name}0" in group.attrs:
        values, i = [], 0
        while f"{name}{i}" in group.attrs and i < _MAX_ATTR_CHUNKS:
            values += np.atleast_1d(np.asarray(h5safe.attr(group, f"{name}{i}", label))).tolist()
            i += 1
    else:
        return None
    return [as_str(v) for v in values]


def keras_legacy_root(f: h5py.File, label: str = "") -> Optional[h5py.Group]:
    """The group holding ``layer_names``: the root, or ``model_weights`` in full-model files."""
    if _attr_list(f, "layer_names", label) is not None:
        return f
    mw = h5safe.child(f, "model_weights", label)
    if isinstance(mw, h5py.Group) and _attr_list(mw, "layer_names", label) is not None:
        return mw
    return None


def looks_keras3(f: h5py.File) -> bool:
    # getlink: only the name is looked at, never what a link points to.
    return any(f.get(k, getlink=True) is not None for k in ("layers", "_layer_checkpoint_dependencies"))


def _layer_datasets(g: h5py.Group, wnames: list[str], lname: str, label: str) -> list[h5py.Dataset]:
    """The datasets a Keras layer's ``weight_names`` list, reached through hard links only (unread)."""
    dsets = []
    for w in wnames:
        d = h5safe.child(g, w, label)
        if not isinstance(d, h5py.Dataset):
            raise fail(f"{label}: Keras layer {lname} lists weight {w!r} but the file has no such dataset (truncated or corrupt?)")
        dsets.append(d)
    return dsets


def _map_convs(
    convs: list[tuple[str, h5py.Dataset, h5py.Dataset]], names: list[Optional[str]], label: str, what: str
) -> tuple[str, dict]:
    """Assign found (label, kernel, bias) convolution datasets to our layer names, and read them.

    By Keras layer name (``blockB_convN``) when every conv carries one, else by network order.
    Each dataset's shape is checked against the layer table before its bytes are read.
    """
    arch = arch_by_count(len(convs))
    if arch is None:
        counts = ", ".join(f"{len(vgg.conv_specs(a))} ({a.upper()})" for a in vgg.ARCHS)
        raise fail(f"{label}: found {len(convs)} convolution layers in {what}; expected {counts}")
    specs = vgg.conv_specs(arch)
    by_keras = {s.keras_name: s.name for s in specs}
    params = {}
    if all(n is not None and n in by_keras for n in names) and len(set(names)) == len(names):
        order = [by_keras[str(n)] for n in names]
    else:
        order = [spec.name for spec in specs]
    spec_of = {spec.name: spec for spec in specs}
    for ours, (_, kernel, bias) in zip(order, convs):
        spec = spec_of[ours]
        shape = (3, 3, spec.in_channels, spec.out_channels)
        params[ours] = {
            "kernel": h5safe.read(kernel, shape, label, f"layer {ours}: kernel"),
            "bias": h5safe.read(bias, (spec.out_channels,), label, f"layer {ours}: bias"),
        }
    return arch, params


def _parse_keras_legacy(root: h5py.Group, label: str) -> Parsed:
    layer_names = _attr_list(root, "layer_names", label) or []
    generation = _keras_resnet_generation(layer_names)
    if generation is not None:
        return _parse_keras_resnet(root, generation, label)
    convs: list[tuple[str, h5py.Dataset, h5py.Dataset]] = []
    names: list[Optional[str]] = []
    for lname in layer_names:
        g = h5safe.child(root, lname, label)
        if not isinstance(g, h5py.Group):
            continue
        wnames = _attr_list(g, "weight_names", label) or []
        # Follow weight_names: "block1_conv1_W_1:0" (old Keras) or "block1_conv1/kernel:0"
        # (newer; h5py resolves the "/" as nested groups). Look at shapes before reading so
        # the 400 MB dense layers of with-top files are never loaded.
        dsets = _layer_datasets(g, wnames, lname, label)
        if not any(d.ndim == 4 for d in dsets):
            continue  # pooling, flatten, dense (fc1, fc2, predictions): ignored
        kernels = [d for d in dsets if d.ndim == 4]
        biases = [d for d in dsets if d.ndim == 1]
        if len(dsets) != 2 or len(kernels) != 1 or len(biases) != 1:
            shapes = ", ".join(str(d.shape) for d in dsets)
            raise fail(f"{label}: Keras layer {lname} has weights of shapes {shapes}; expected a 4-D kernel and a bias")
        convs.append((lname, kernels[0], biases[0]))
        names.append(lname)
    arch, params = _map_convs(convs, names, label, "the Keras layers")
    return Parsed(arch, params, vgg.CAFFE, "Keras legacy HDF5")


# Keras ResNet layer names: (conv, batch norm) per naming generation. Old: keras.applications
# resnet50.py (Keras 2.0-2.2, keras-applications <= 1.0.8) and the published
# resnet50_weights_tf_dim_ordering_tf_kernels*.h5; new: resnet.py / resnet_common.py (tf.keras, Keras 3).
_KERAS_RESNET_NAMES = {
    "old": (re.compile(r"conv1|res\d[a-z]_branch(?:2[abc]|1)"), re.compile(r"bn_conv1|bn\d[a-z]_branch(?:2[abc]|1)")),
    "new": (re.compile(r"conv1_conv|conv\d_block\d+_\d_conv"), re.compile(r"conv1_bn|conv\d_block\d+_\d_bn")),
}
_KERAS_RESNET_EPS = {"old": resnet.EPS_KERAS_OLD, "new": resnet.EPS_KERAS_NEW}


def _keras_resnet_generation(layer_names: list[str]) -> Optional[str]:
    """'old' / 'new' if the Keras layers include ResNet batch norms of that naming, else None."""
    for generation, (_, bn) in _KERAS_RESNET_NAMES.items():
        if any(bn.fullmatch(n) for n in layer_names):
            return generation
    return None


def _bn_weight_order(wnames: list[str]) -> list[int]:
    """Indices of gamma, beta, moving mean, moving variance among a Keras BN layer's weights.

    By name (``gamma``, ``beta``, ``moving_mean`` / ``running_mean``, ``moving_variance`` /
    ``running_std`` -- Keras 1 called the variance "running_std"); Keras always writes them in
    that order, which is the fallback when the names do not say.
    """
    last = [w.rsplit("/", 1)[-1].lower() for w in wnames]
    order = []
    for keys in (("gamma",), ("beta",), ("mean",), ("var", "std")):
        hits = [i for i, n in enumerate(last) if any(k in n for k in keys)]
        order.append(hits[0] if len(hits) == 1 else -1)
    return order if -1 not in order and len(set(order)) == 4 else [0, 1, 2, 3]


def _parse_keras_resnet(root: h5py.Group, generation: str, label: str) -> Parsed:
    """A Keras ResNet50 (legacy HDF5, either naming generation): convs plus their batch norms."""
    conv_re, bn_re = _KERAS_RESNET_NAMES[generation]
    specs = resnet.conv_specs()
    if generation == "old":
        conv_of, bn_of = {s.name: s for s in specs}, {s.bn_name: s for s in specs}
    else:
        conv_of, bn_of = {s.keras_conv: s for s in specs}, {s.keras_bn: s for s in specs}
    eps = _KERAS_RESNET_EPS[generation]
    convs: dict[str, tuple[np.ndarray, Optional[np.ndarray]]] = {}
    bns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for lname in _attr_list(root, "layer_names", label) or []:
        is_conv, is_bn = conv_re.fullmatch(lname) is not None, bn_re.fullmatch(lname) is not None
        if not (is_conv or is_bn):
            continue  # input, padding, activation, add, pooling, fc1000 / probs: ignored
        spec = (conv_of if is_conv else bn_of).get(lname)
        if spec is None:
            raise fail(f"{label}: Keras layer {lname} is not part of ResNet50 (a deeper ResNet?); nst-jax supports {', '.join(ALL_ARCHS)}")
        g = h5safe.child(root, lname, label)
        wnames = (_attr_list(g, "weight_names", label) or []) if isinstance(g, h5py.Group) else []
        dsets = _layer_datasets(g, wnames, lname, label)
        cout = spec.out_channels
        if is_conv:
            kernels = [d for d in dsets if d.ndim == 4]
            biases = [d for d in dsets if d.ndim == 1]
            if len(kernels) != 1 or len(biases) > 1 or len(dsets) != len(kernels) + len(biases):
                shapes = ", ".join(str(d.shape) for d in dsets) or "none"
                raise fail(f"{label}: Keras layer {lname} has weights of shapes {shapes}; expected a 4-D kernel and a bias")
            if kernels[0].shape != spec.kernel_shape:
                raise fail(f"layer {spec.name}: Keras layer {lname} has a kernel of shape {kernels[0].shape}, expected {spec.kernel_shape} (HWIO) in {label}")
            if biases and biases[0].shape != (cout,):
                raise fail(f"layer {spec.name}: Keras layer {lname} has a bias of shape {biases[0].shape}, expected {(cout,)} in {label}")
            what = f"layer {spec.name}: Keras layer {lname}"
            convs[spec.name] = (
                h5safe.read(kernels[0], spec.kernel_shape, label, f"{what} kernel"),
                h5safe.read(biases[0], (cout,), label, f"{what} bias") if biases else None,
            )
        else:
            if len(dsets) != 4 or any(d.shape != (cout,) for d in dsets):
                shapes = ", ".join(str(d.shape) for d in dsets) or "none"
                raise fail(
                    f"layer {spec.name}: Keras batch norm {lname} has weights of shapes {shapes}; expected four of "
                    f"shape {(cout,)} (gamma, beta, moving mean, moving variance) in {label}"
                )
            gamma, beta, mean, var = (
                h5safe.read(dsets[i], (cout,), label, f"layer {spec.name}: Keras batch norm {lname}")
                for i in _bn_weight_order(wnames)
            )
            bns[spec.name] = resnet.bn_affine(gamma, beta, mean, var, eps)
    params = {}
    for spec in specs:
        conv_name, bn_name = (spec.name, spec.bn_name) if generation == "old" else (spec.keras_conv, spec.keras_bn)
        if spec.name not in convs:
            raise fail(f"layer {spec.name} (Keras {conv_name}) is missing from {label}")
        if spec.name not in bns:
            raise fail(f"layer {spec.name}: its batch norm (Keras {bn_name}) is missing from {label}")
        kernel, bias = convs[spec.name]
        scale, shift = bns[spec.name]
        bias = np.zeros(spec.out_channels, np.float32) if bias is None else bias
        params[spec.name] = {"kernel": kernel, "bias": bias, "bn_scale": scale, "bn_shift": shift}
    return Parsed(
        "resnet50", params, vgg.CAFFE, f"Keras legacy HDF5 (ResNet50, {generation} layer names)",
        stride_on="1x1", bn_epsilon=eps,
    )  # fmt: skip


_NATURAL = re.compile(r"(.*?)(?:_(\d+))?")


def _natural_key(path: str) -> tuple:
    """Keras 3 names container entries conv2d, conv2d_1, ..., conv2d_15: sort by the counter."""
    key = []
    for part in path.split("/"):
        m = _NATURAL.fullmatch(part)
        key.append((m.group(1), int(m.group(2) or 0)) if m else (part, 0))
    return tuple(key)


def _parse_keras3(f: h5py.File, label: str) -> Parsed:
    # Keras 3 saving_lib / H5IOStore: every layer's variables sit in "<inner path>/vars/<i>",
    # e.g. "layers/conv2d_3/vars/0" (kernel HWIO) and ".../vars/1" (bias). The inner path uses
    # the snake_case class name plus a counter, not the layer name; newer versions store the
    # layer name ("block1_conv1") as the attribute "name" of the vars group.
    found: list[tuple[str, h5py.Group]] = []
    for name, obj in h5safe.walk(f, label):  # hard links only; bounded depth and count
        parts = name.split("/")
        if parts[-1] != "vars" or not isinstance(obj, h5py.Group):
            continue
        if any(p in ("optimizer", "metrics") for p in parts):
            continue  # optimizer slots have kernel-shaped arrays too
        d0, d1 = h5safe.child(obj, "0", label), h5safe.child(obj, "1", label)
        if isinstance(d0, h5py.Dataset) and isinstance(d1, h5py.Dataset) and d0.ndim == 4 and d1.ndim == 1:
            found.append(("/".join(parts[:-1]), obj))
    if not found:
        raise fail(f"{label} is an HDF5 file in Keras 3 layout but holds no convolution weights (layers/*/vars); {UNDERSTOOD}")
    found.sort(key=lambda item: _natural_key(item[0]))
    names = [(as_str(h5safe.attr(g, "name", label)) if "name" in g.attrs else None) for _, g in found]
    convs = [(p, g["0"], g["1"]) for p, g in found]
    arch, params = _map_convs(convs, names, label, "the Keras 3 layers")
    return Parsed(arch, params, vgg.CAFFE, "Keras 3 .weights.h5")


def parse_hdf5_file(f: h5py.File, label: str) -> Parsed:
    if "format" in f.attrs and as_str(h5safe.attr(f, "format", label)) == FORMAT:
        raise ConvertedSource()
    root = keras_legacy_root(f, label)
    if root is not None:
        return _parse_keras_legacy(root, label)
    if looks_keras3(f):
        return _parse_keras3(f, label)
    raise fail(f"{label} is an HDF5 file with an unknown layout (no Keras layer_names, no Keras 3 layers/*/vars, not nst-jax); {UNDERSTOOD}")

