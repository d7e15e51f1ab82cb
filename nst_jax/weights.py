"""Network weight files: the converted format, the converters, synthetic weights and the download.

This is the only module that knows file formats. Everything else works on a params pytree::

    {"conv1_1": {"kernel": (3, 3, Cin, Cout) float32 HWIO, "bias": (Cout,) float32}, ...}

plus the input ``vgg.Convention`` the weights expect, bundled in a ``Network``.

The converted format (HDF5, written by ``save_weights``)
--------------------------------------------------------
Root attributes ``format="nst-jax-weights"``, ``format_version=1``, ``arch`` ("vgg19"/"vgg16"),
``channel_order`` ("RGB"/"BGR"), ``pixel_scale`` (1.0 or 255.0), ``mean`` and ``std`` (3 floats
each, network channel order, scaled units), ``pretrained`` (bool), ``source_name`` and
``source_sha256`` (the file the weights were converted from). One group per convolution named
``convB_N`` holding the datasets ``kernel`` (HWIO float32) and ``bias`` (float32). Another
architecture can be added later by giving ``arch`` a new value and a layer table.

Converters (the format is detected from the file's content, never its extension)
---------------------------------------------------------------------------------
* Keras legacy HDF5 (``layer_names`` / ``weight_names`` attributes; also under ``model_weights``
  in full-model files), both weight-naming generations. Caffe convention.
* Keras 3 ``.weights.h5`` (``layers/<snake_case class>[_N]/vars/0`` kernel, ``vars/1`` bias),
  and the ``model.weights.h5`` inside a ``.keras`` zip. Caffe convention.
* torchvision state dicts written by ``torch.save``, zip (torch >= 1.6) or legacy format, read by
  a restricted unpickler that only rebuilds tensors (torch is never imported). torchvision
  convention unless told otherwise (neural-style-pt's Caffe weights use the same key layout).
* nst-jax converted files (re-written, e.g. to change the recorded input convention).

ResNet50 (``arch="resnet50"``, see ``resnet.py``)
-------------------------------------------------
Same root attributes plus ``resnet_stride_on`` ("1x1": Keras / Caffe, stride 2 on the first 1x1
convolution of a stage; "3x3": torchvision v1.5, stride 2 on the 3x3) and ``bn_epsilon`` (the
source's batch-norm epsilon, already folded in; informational). One group per convolution named
as in ``resnet.conv_specs()`` (``conv1``, ``res2a_branch2a``, ...) holding ``kernel`` (HWIO),
``bias`` (zeros for torchvision), ``bn_scale`` and ``bn_shift`` (the inference batch norm as a
per-channel affine map, ``resnet.bn_affine``). Sources: Keras legacy HDF5 in both naming
generations (``res2a_branch2a`` / ``bn2a_branch2a``, eps 1e-3; ``conv2_block1_1_conv`` /
``conv2_block1_1_bn``, eps 1.001e-5), Caffe convention; torchvision ``resnet50`` state dicts
(``layer1.0.conv1.weight``, ...; eps 1e-5), torchvision convention. There is no download source.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.client
import io
import math
import os
import pathlib
import pickle
import re
import secrets
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Any, Callable, Mapping, Optional, Union

import h5py
import numpy as np

from . import resnet, vgg
from .errors import WeightsError

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "nst-jax-weights"
FORMAT_VERSION = 1

_UNDERSTOOD = (
    "understood formats: Keras HDF5 (legacy .h5 or Keras 3 .weights.h5), "
    "torchvision .pth (zip or legacy), nst-jax converted .h5"
)
_GET_WEIGHTS = (
    "get weights with `nst-jax weights download`, convert a file you have with "
    "`nst-jax weights convert FILE`, or make random test weights with `nst-jax weights synthetic -o PATH`"
)

# (source, arch) -> (url, hash kind, hash). Keras publishes MD5s (keras/src/applications/vgg19.py,
# vgg16.py, ``file_hash=`` of the notop files); torchvision only names the first 8 hex digits of
# the file's SHA-256 in the file name, and that prefix is all torch.hub checks.
SOURCES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("keras", "vgg19"): (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "md5",
        "253f8cb515780f3b799900260a226db6",
    ),
    ("keras", "vgg16"): (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "md5",
        "6d6bbae143d832006294945121d1f1fc",
    ),
    ("torchvision", "vgg19"): ("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "sha256-prefix", "dcbb9e9d"),
    ("torchvision", "vgg16"): ("https://download.pytorch.org/models/vgg16-397923af.pth", "sha256-prefix", "397923af"),
}
SOURCE_NAMES: tuple[str, ...] = ("keras", "torchvision")
# Every architecture a converted file can hold.
ALL_ARCHS: tuple[str, ...] = vgg.ARCHS + resnet.ARCHS
# The input convention each source's weights were trained with.
_SOURCE_CONVENTION = {"keras": vgg.CAFFE, "torchvision": vgg.TORCHVISION}


@dataclasses.dataclass(frozen=True)
class Network:
    """A loaded network: params pytree plus where it came from and what input it expects."""

    arch: str  # "vgg19" | "vgg16"
    params: dict  # {"conv1_1": {"kernel": float32 HWIO, "bias": float32 (Cout,)}, ...}
    convention: vgg.Convention  # input convention of these weights
    pretrained: bool
    source_name: str  # file the weights were converted from ("" for synthetic)
    source_sha256: str
    fingerprint: str  # SHA-256 hex of the converted .h5 file's bytes
    path: str
    stride_on: Optional[str] = None  # resnet50 only: "1x1" (Keras/Caffe) or "3x3" (torchvision)
    bn_epsilon: Optional[float] = None  # resnet50 only: the source's BN eps (already folded in)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _fail(message: object) -> WeightsError:
    """A WeightsError whose message is guaranteed to be one line."""
    return WeightsError(" ".join(str(message).split()))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _layer_table(arch: str) -> tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]:
    """(name, kernel shape HWIO, bias shape) per layer: the one place a new arch would plug in."""
    if arch not in vgg.ARCHS:
        raise _fail(f"unknown architecture {arch!r}; this version supports {', '.join(vgg.ARCHS)}")
    return tuple(
        (s.name, (3, 3, s.in_channels, s.out_channels), (s.out_channels,)) for s in vgg.conv_specs(arch)
    )


def _check_arch(arch: str) -> None:
    if arch not in ALL_ARCHS:
        raise _fail(f"unknown architecture {arch!r}; this version supports {', '.join(ALL_ARCHS)}")


def _param_table(arch: str) -> tuple[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]], ...]:
    """(layer name, ((part, shape), ...)) per layer, for every architecture."""
    if arch in resnet.ARCHS:
        return tuple((name, tuple(parts.items())) for name, parts in resnet.param_shapes().items())
    return tuple((name, (("kernel", kshape), ("bias", bshape))) for name, kshape, bshape in _layer_table(arch))


def _arch_by_count(n: int) -> Optional[str]:
    for arch in vgg.ARCHS:
        if len(vgg.conv_specs(arch)) == n:
            return arch
    return None


def _sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _as_str(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _as_str(value[()])
    return str(value)


def _convention_of(value: Union[None, str, vgg.Convention], default: vgg.Convention) -> vgg.Convention:
    if value is None:
        return default
    if isinstance(value, vgg.Convention):
        return value
    if isinstance(value, str) and value.lower() in vgg.CONVENTIONS:
        return vgg.CONVENTIONS[value.lower()]
    raise _fail(f"unknown input convention {value!r}; valid: {', '.join(vgg.CONVENTIONS)}")


def convention_name(convention: vgg.Convention) -> str:
    """'caffe' / 'torchvision' for the two standard conventions, else 'custom'."""
    for name, conv in vgg.CONVENTIONS.items():
        if conv == convention:
            return name
    return "custom"


def _check_params(params: Mapping[str, Any], arch: str, where: str, *, strict: bool) -> dict:
    """Validate ``params`` against the layer table; return float32 copies.

    ``where`` is appended to messages (" in FILE"); ``strict`` also rejects unknown layers.
    """
    table = _param_table(arch)
    if not isinstance(params, Mapping):
        raise _fail(f"params must be a dict of layers, got {type(params).__name__}{where}")
    if strict:
        extra = sorted(set(params) - {name for name, _ in table})
        if extra:
            raise _fail(f"unexpected layer(s) {', '.join(map(str, extra))} for {arch}{where}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, parts in table:
        if name not in params:
            raise _fail(f"layer {name} is missing{where}")
        layer = params[name]
        out[name] = {}
        for part, expected in parts:
            if not isinstance(layer, Mapping) or part not in layer:
                raise _fail(f"layer {name}: {part} is missing{where}")
            arr = np.asarray(layer[part])
            if tuple(arr.shape) != expected:
                raise _fail(f"layer {name}: {part} has shape {tuple(arr.shape)}, expected {expected}{where}")
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise _fail(f"layer {name}: {part} has dtype {arr.dtype}, expected float32{where}")
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.isfinite(arr).all():
                raise _fail(f"layer {name}: {part} has non-finite values (NaN or Inf){where}")
            out[name][part] = arr
    return out


# --------------------------------------------------------------------------------------------
# Where weights live
# --------------------------------------------------------------------------------------------


def default_weights_dir() -> pathlib.Path:
    """The directory converted weights go to and are looked up in.

    Returns:
      ``$NST_JAX_WEIGHTS`` if set; else the repository's ``weights/`` when running from a checkout
      (the directory holding ``nst_jax/`` also holds ``pyproject.toml`` and ``weights/``); else
      ``$XDG_CACHE_HOME/nst-jax`` or ``~/.cache/nst-jax``.
    """
    env = os.environ.get("NST_JAX_WEIGHTS")
    if env:
        return pathlib.Path(env).expanduser()
    root = pathlib.Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "weights").is_dir():
        return root / "weights"
    cache = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(cache).expanduser() if cache and os.path.isabs(cache) else pathlib.Path.home() / ".cache"
    return base / "nst-jax"


def resolve_weights(arch: str = "vgg19", explicit: Optional[PathLike] = None) -> pathlib.Path:
    """The weights file to use.

    Args:
      arch: architecture looked up in the default directory when ``explicit`` is not given.
      explicit: a path the user named (``--weights``); it must exist.

    Returns:
      ``explicit``, or ``default_weights_dir() / f"{arch}.h5"``.

    Raises:
      WeightsError: the file does not exist; the message names the command that makes it.
    """
    if explicit is not None and str(explicit) != "":
        path = pathlib.Path(explicit).expanduser()
        if not path.is_file():
            what = "is a directory, not a weights file" if path.is_dir() else "not found"
            raise _fail(f"weights file {path} {what}; check --weights, or {_GET_WEIGHTS}")
        return path
    _check_arch(arch)  # unknown arch -> WeightsError
    path = default_weights_dir() / f"{arch}.h5"
    if not path.is_file() and arch not in vgg.ARCHS:
        # No official download for these: only a file the user has can be converted.
        raise _fail(
            f"no {arch} weights at {path}; convert a file you have with `nst-jax weights convert FILE -o {path}` "
            f"(or pass --weights PATH; set NST_JAX_WEIGHTS to use another directory)"
        )
    if not path.is_file():
        raise _fail(
            f"no {arch} weights at {path}; run `nst-jax weights download --arch {arch}` "
            f"(or `nst-jax weights convert FILE` for a file you have, or pass --weights PATH; "
            f"set NST_JAX_WEIGHTS to use another directory)"
        )
    return path


# --------------------------------------------------------------------------------------------
# The converted format
# --------------------------------------------------------------------------------------------


def save_weights(
    path: PathLike,
    params: Mapping[str, Any],
    *,
    arch: str,
    convention: vgg.Convention,
    pretrained: bool,
    source_name: str = "",
    source_sha256: str = "",
    extra_attrs: Optional[Mapping[str, Any]] = None,
    stride_on: Optional[str] = None,
    bn_epsilon: Optional[float] = None,
) -> None:
    """Write ``params`` in the converted format, atomically.

    The file is written to a temporary name in the same directory and moved into place with
    ``os.replace``, so a reader never sees a partial file and a failure leaves nothing behind.

    Args:
      path: destination ``.h5`` (parent directories are created).
      params: params pytree; checked against the layer table of ``arch``.
      arch: "vgg19", "vgg16" or "resnet50".
      convention: the input convention the weights expect.
      pretrained: False for synthetic (random) weights.
      source_name: file the weights were converted from.
      source_sha256: that file's SHA-256.
      extra_attrs: additional root attributes (e.g. ``synthetic_seed``).
      stride_on: resnet50 only, required there: "1x1" (Keras / Caffe) or "3x3" (torchvision).
      bn_epsilon: resnet50 only: the batch-norm epsilon folded into ``bn_scale`` (recorded).

    Raises:
      WeightsError: bad params (message names the layer) or the file cannot be written.
    """
    _check_arch(arch)
    checked = _check_params(params, arch, "", strict=True)
    _save_checked(
        pathlib.Path(path).expanduser(),
        checked,
        arch=arch,
        convention=convention,
        pretrained=pretrained,
        source_name=source_name,
        source_sha256=source_sha256,
        extra_attrs={**_arch_attrs(arch, stride_on, bn_epsilon), **dict(extra_attrs or {})},
    )


def _arch_attrs(arch: str, stride_on: Optional[str], bn_epsilon: Optional[float]) -> dict:
    """The architecture-specific root attributes (resnet50: resnet_stride_on, bn_epsilon)."""
    if arch not in resnet.ARCHS:
        if stride_on is not None or bn_epsilon is not None:
            raise _fail(f"stride_on / bn_epsilon are resnet50 attributes, not {arch}'s")
        return {}
    if stride_on not in resnet.STRIDE_PLACEMENTS:
        raise _fail(f"resnet50 weights need stride_on = {' or '.join(map(repr, resnet.STRIDE_PLACEMENTS))}, got {stride_on!r}")
    attrs: dict[str, Any] = {"resnet_stride_on": stride_on}
    if bn_epsilon is not None:
        attrs["bn_epsilon"] = np.float64(bn_epsilon)
    return attrs


def _save_checked(
    path: pathlib.Path,
    checked: dict,
    *,
    arch: str,
    convention: vgg.Convention,
    pretrained: bool,
    source_name: str,
    source_sha256: str,
    extra_attrs: Optional[Mapping[str, Any]],
) -> None:
    """``save_weights`` for params already validated by ``_check_params``."""
    if not isinstance(convention, vgg.Convention):
        raise _fail(f"convention must be a vgg.Convention, got {type(convention).__name__}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _fail(f"cannot create directory {path.parent}: {_short(e)}") from None
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # "w-" fails if the name exists; the file gets the usual umask-based permissions.
        with h5py.File(tmp, "w-") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = np.int64(FORMAT_VERSION)
            f.attrs["arch"] = arch
            f.attrs["channel_order"] = convention.channel_order
            f.attrs["pixel_scale"] = np.float64(convention.scale)
            f.attrs["mean"] = np.asarray(convention.mean, np.float64)
            f.attrs["std"] = np.asarray(convention.std, np.float64)
            f.attrs["pretrained"] = np.bool_(pretrained)
            f.attrs["source_name"] = str(source_name)
            f.attrs["source_sha256"] = str(source_sha256)
            for key, value in (extra_attrs or {}).items():
                f.attrs[key] = value
            for name, layer in checked.items():
                g = f.create_group(name)
                for part, value in layer.items():  # kernel, bias (+ bn_scale, bn_shift: resnet50)
                    g.create_dataset(part, data=value)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _fail(f"cannot write weights file {path}: {_short(e)}") from None
        raise


def load_weights(path: PathLike) -> Network:
    """Read a converted weights file.

    Args:
      path: an ``.h5`` written by ``save_weights`` / ``convert`` / ``write_synthetic``.

    Returns:
      The ``Network`` (params as float32 numpy arrays, HWIO kernels).

    Raises:
      WeightsError: missing file, not HDF5, truncated or corrupt, wrong format, unknown arch,
        missing layer, wrong shape (naming the layer) or non-finite values.
    """
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise _fail(f"weights file {path} not found; {_GET_WEIGHTS}")
    if path.is_dir():
        raise _fail(f"{path} is a directory, not a weights file; {_GET_WEIGHTS}")
    kind = _sniff(path)
    if kind == "empty":
        raise _fail(f"weights file {path} is empty; delete it and {_GET_WEIGHTS}")
    if kind in ("zip", "pickle"):
        raise _fail(
            f"{path} is not an nst-jax weights file (it looks like a PyTorch/Keras archive); "
            f"convert it first with `nst-jax weights convert {path}`"
        )
    if kind != "hdf5":
        raise _fail(f"{path} is not an nst-jax weights file (not HDF5); {_GET_WEIGHTS}")
    fingerprint = _sha256_file(path)
    where = f" in {path}"
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise _fail(f"cannot open {path}: truncated or corrupt HDF5 ({_short(e)}); delete it and re-create it") from None
    with f:
        try:
            fmt = _as_str(f.attrs["format"]) if "format" in f.attrs else None
            if fmt != FORMAT:
                if _keras_legacy_root(f) is not None or _looks_keras3(f):
                    raise _fail(
                        f"{path} is a Keras weights file, not a converted nst-jax file; "
                        f"convert it with `nst-jax weights convert {path}`"
                    )
                got = "no format attribute" if fmt is None else f"format {fmt!r}"
                raise _fail(
                    f"{path} is not an nst-jax weights file ({got}); convert the original with "
                    f"`nst-jax weights convert FILE`"
                )
            version = int(np.asarray(f.attrs.get("format_version", -1)))
            if version != FORMAT_VERSION:
                newer = " (written by a newer nst-jax: upgrade)" if version > FORMAT_VERSION else ""
                raise _fail(f"{path} has format_version {version}, this nst-jax reads {FORMAT_VERSION}{newer}")
            arch = _as_str(f.attrs.get("arch", ""))
            if arch not in ALL_ARCHS:
                raise _fail(f"unknown architecture {arch!r}{where}; this version supports {', '.join(ALL_ARCHS)}")
            try:
                convention = vgg.Convention(
                    _as_str(f.attrs["channel_order"]),
                    float(np.asarray(f.attrs["pixel_scale"])),
                    tuple(float(v) for v in np.asarray(f.attrs["mean"]).reshape(-1)),
                    tuple(float(v) for v in np.asarray(f.attrs["std"]).reshape(-1)),
                )
            except (KeyError, ValueError, TypeError) as e:
                raise _fail(f"bad input-convention attributes{where}: {_short(e)}; re-create the file") from None
            pretrained = bool(np.asarray(f.attrs.get("pretrained", False)))
            source_name = _as_str(f.attrs.get("source_name", ""))
            source_sha256 = _as_str(f.attrs.get("source_sha256", ""))
            stride_on, bn_epsilon = None, None
            if arch in resnet.ARCHS:
                stride_on = _as_str(f.attrs["resnet_stride_on"]) if "resnet_stride_on" in f.attrs else None
                if stride_on not in resnet.STRIDE_PLACEMENTS:
                    got = "is missing" if stride_on is None else f"is {stride_on!r}"
                    raise _fail(
                        f"attribute resnet_stride_on {got}{where} (a {arch} file needs "
                        f"{' or '.join(map(repr, resnet.STRIDE_PLACEMENTS))}); the file is damaged: re-create it"
                    )
                if "bn_epsilon" in f.attrs:
                    bn_epsilon = float(np.asarray(f.attrs["bn_epsilon"]))
            raw: dict[str, dict[str, np.ndarray]] = {}
            for name, parts in _param_table(arch):
                if name not in f or not isinstance(f[name], h5py.Group):
                    raise _fail(f"layer {name} is missing{where}; the file is damaged: re-create it")
                g = f[name]
                raw[name] = {}
                for part, _ in parts:
                    if part not in g or not isinstance(g[part], h5py.Dataset):
                        raise _fail(f"layer {name}: {part} is missing{where}; the file is damaged: re-create it")
                    raw[name][part] = g[part][()]
        except WeightsError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
            raise _fail(f"cannot read {path}: truncated or corrupt HDF5 ({_short(e)}); delete it and re-create it") from None
    params = _check_params(raw, arch, where, strict=False)
    return Network(
        arch=arch,
        params=params,
        convention=convention,
        pretrained=pretrained,
        source_name=source_name,
        source_sha256=source_sha256,
        fingerprint=fingerprint,
        path=str(path),
        stride_on=stride_on,
        bn_epsilon=bn_epsilon,
    )


def describe(path: PathLike) -> str:
    """Human-readable summary of a converted weights file (``nst-jax weights info``).

    Args:
      path: a converted ``.h5``.

    Returns:
      Multi-line text: arch, convention, pretrained, source, fingerprint, the layer table and
      the total parameter count.
    """
    net = load_weights(path)
    conv = net.convention
    name = convention_name(conv)
    width = max([10] + [len(lname) for lname in net.params])
    fmt = lambda xs: "(" + ", ".join(f"{x:g}" for x in xs) + ")"  # noqa: E731
    seed = None
    with h5py.File(net.path, "r") as f:
        if "synthetic_seed" in f.attrs:
            seed = int(np.asarray(f.attrs["synthetic_seed"]))
    if net.pretrained:
        pretrained = "yes"
    else:
        pretrained = "no: random weights, for tests only" + (f" (synthetic, seed {seed})" if seed is not None else "")
    lines = [
        f"file:          {net.path}",
        f"format:        {FORMAT} v{FORMAT_VERSION}",
        f"arch:          {net.arch} ({len(net.params)} conv layers)"
        + (f", stride on the {net.stride_on} conv, batch norm folded" if net.stride_on else "")
        + (f" (eps {net.bn_epsilon:g})" if net.bn_epsilon is not None else ""),
        f"convention:    {name}: {conv.channel_order}, pixel scale {conv.scale:g}, mean {fmt(conv.mean)}, std {fmt(conv.std)}",
        f"pretrained:    {pretrained}",
        f"source:        {net.source_name or '(none)'}",
        f"source sha256: {net.source_sha256 or '(none)'}",
        f"fingerprint:   {net.fingerprint}",
        "",
        f"{'layer':<{width}} {'kernel (HWIO)':<20} {'params':>12}",
    ]
    total = 0
    for lname, layer in net.params.items():
        count = int(sum(part.size for part in layer.values()))
        total += count
        lines.append(f"{lname:<{width}} {str(layer['kernel'].shape):<20} {count:>12,}")
    lines.append(f"{'total':<{width + 21}} {total:>12,}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Synthetic weights
# --------------------------------------------------------------------------------------------


def synthetic_params(arch: str = "vgg19", seed: int = 0) -> dict:
    """Deterministic random weights with the real shapes (He initialisation).

    Args:
      arch: "vgg19", "vgg16" or "resnet50".
      seed: numpy ``default_rng`` seed.

    Returns:
      params pytree: kernels normal with std ``sqrt(2 / (9 * Cin))``, biases ``0.01 * normal``,
      float32. resnet50: std ``sqrt(2 / (k * k * Cin))``, and a random batch-norm affine map
      (``bn_scale`` uniform in [0.5, 1], [0.2, 0.4] on ``branch2c`` so the residual stream grows
      slowly; ``bn_shift`` ``0.05 * normal``).
    """
    rng = np.random.default_rng(seed)
    params = {}
    if arch in resnet.ARCHS:
        for spec in resnet.conv_specs():
            k, cin, cout = spec.size, spec.in_channels, spec.out_channels
            low, high = (0.2, 0.4) if spec.name.endswith("branch2c") else (0.5, 1.0)
            params[spec.name] = {
                "kernel": rng.standard_normal(spec.kernel_shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / (k * k * cin))),
                "bias": rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01),
                "bn_scale": rng.uniform(low, high, cout).astype(np.float32),
                "bn_shift": rng.standard_normal(cout, dtype=np.float32) * np.float32(0.05),
            }
        return params
    for name, kshape, bshape in _layer_table(arch):
        std = math.sqrt(2.0 / (9 * kshape[2]))
        kernel = rng.standard_normal(kshape, dtype=np.float32) * np.float32(std)
        bias = rng.standard_normal(bshape, dtype=np.float32) * np.float32(0.01)
        params[name] = {"kernel": kernel, "bias": bias}
    return params


def write_synthetic(
    path: PathLike,
    *,
    arch: str = "vgg19",
    seed: int = 0,
    convention: vgg.Convention = vgg.CAFFE,
    stride_on: Optional[str] = None,
) -> Network:
    """Write synthetic weights in the converted format (``pretrained=False``) and load them.

    Args:
      path: destination ``.h5`` (replaced if it exists).
      arch: "vgg19", "vgg16" or "resnet50".
      seed: random seed.
      convention: input convention recorded in the file.
      stride_on: resnet50 only: "1x1" (default) or "3x3".

    Returns:
      The loaded ``Network``.
    """
    convention = _convention_of(convention, vgg.CAFFE)
    _check_arch(arch)
    if arch in resnet.ARCHS and stride_on is None:
        stride_on = "1x1"
    save_weights(
        path,
        synthetic_params(arch, seed),
        arch=arch,
        convention=convention,
        pretrained=False,
        extra_attrs={"synthetic_seed": np.int64(seed)},
        stride_on=stride_on,
    )
    return load_weights(path)


# --------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# torch's legacy format starts with pickle.dump(MAGIC_NUMBER, protocol 2).
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _sniff(path: pathlib.Path) -> str:
    """'empty', 'hdf5', 'zip', 'pickle' or 'unknown', from the first bytes."""
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with open(path, "rb") as f:
        head = f.read(8)
        if head == _HDF5_SIGNATURE:
            return "hdf5"
        # An HDF5 file with a user block has its signature at 512, 1024, 2048, ...
        offset = 512
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == _HDF5_SIGNATURE:
                return "hdf5"
            offset *= 2
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


@dataclasses.dataclass
class _Parsed:
    """What a converter found: the conv params and defaults for the converted file."""

    arch: str
    params: dict
    convention: vgg.Convention
    fmt: str  # human-readable source format
    pretrained: bool = True
    source_name: Optional[str] = None  # None: the converted file itself
    source_sha256: Optional[str] = None
    stride_on: Optional[str] = None  # resnet50: "1x1" / "3x3"
    bn_epsilon: Optional[float] = None  # resnet50: the source's batch-norm eps (folded in)


# --------------------------------------------------------------------------------------------
# Keras converters
# --------------------------------------------------------------------------------------------


def _attr_list(group: h5py.Group, name: str) -> Optional[list[str]]:
    """A list-of-strings attribute; Keras splits long ones into name0, name1, ... chunks."""
    if name in group.attrs:
        values = np.atleast_1d(np.asarray(group.attrs[name])).tolist()
    elif f"{name}0" in group.attrs:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += np.atleast_1d(np.asarray(group.attrs[f"{name}{i}"])).tolist()
            i += 1
    else:
        return None
    return [_as_str(v) for v in values]


def _keras_legacy_root(f: h5py.File) -> Optional[h5py.Group]:
    """The group holding ``layer_names``: the root, or ``model_weights`` in full-model files."""
    if _attr_list(f, "layer_names") is not None:
        return f
    mw = f.get("model_weights")
    if isinstance(mw, h5py.Group) and _attr_list(mw, "layer_names") is not None:
        return mw
    return None


def _looks_keras3(f: h5py.File) -> bool:
    return any(isinstance(f.get(k), h5py.Group) for k in ("layers", "_layer_checkpoint_dependencies"))


def _map_convs(
    convs: list[tuple[str, np.ndarray, np.ndarray]], names: list[Optional[str]], label: str, what: str
) -> tuple[str, dict]:
    """Assign found (label, kernel, bias) convolutions to our layer names.

    By Keras layer name (``blockB_convN``) when every conv carries one, else by network order.
    """
    arch = _arch_by_count(len(convs))
    if arch is None:
        counts = ", ".join(f"{len(vgg.conv_specs(a))} ({a.upper()})" for a in vgg.ARCHS)
        raise _fail(f"{label}: found {len(convs)} convolution layers in {what}; expected {counts}")
    specs = vgg.conv_specs(arch)
    by_keras = {s.keras_name: s.name for s in specs}
    params = {}
    if all(n in by_keras for n in names) and len(set(names)) == len(names):
        for n, (_, kernel, bias) in zip(names, convs):
            params[by_keras[n]] = {"kernel": kernel, "bias": bias}
    else:
        for spec, (_, kernel, bias) in zip(specs, convs):
            params[spec.name] = {"kernel": kernel, "bias": bias}
    return arch, params


def _parse_keras_legacy(root: h5py.Group, label: str) -> _Parsed:
    generation = _keras_resnet_generation(_attr_list(root, "layer_names") or [])
    if generation is not None:
        return _parse_keras_resnet(root, generation, label)
    convs: list[tuple[str, np.ndarray, np.ndarray]] = []
    names: list[Optional[str]] = []
    for lname in _attr_list(root, "layer_names") or []:
        g = root.get(lname)
        if not isinstance(g, h5py.Group):
            continue
        wnames = _attr_list(g, "weight_names") or []
        # Follow weight_names: "block1_conv1_W_1:0" (old Keras) or "block1_conv1/kernel:0"
        # (newer; h5py resolves the "/" as nested groups). Look at shapes before reading so
        # the 400 MB dense layers of with-top files are never loaded.
        dsets = []
        for w in wnames:
            d = g.get(w)
            if not isinstance(d, h5py.Dataset):
                raise _fail(f"{label}: Keras layer {lname} lists weight {w!r} but the file has no such dataset (truncated or corrupt?)")
            dsets.append(d)
        if not any(d.ndim == 4 for d in dsets):
            continue  # pooling, flatten, dense (fc1, fc2, predictions): ignored
        kernels = [d for d in dsets if d.ndim == 4]
        biases = [d for d in dsets if d.ndim == 1]
        if len(dsets) != 2 or len(kernels) != 1 or len(biases) != 1:
            shapes = ", ".join(str(d.shape) for d in dsets)
            raise _fail(f"{label}: Keras layer {lname} has weights of shapes {shapes}; expected a 4-D kernel and a bias")
        convs.append((lname, kernels[0][()], biases[0][()]))
        names.append(lname)
    arch, params = _map_convs(convs, names, label, "the Keras layers")
    return _Parsed(arch, params, vgg.CAFFE, "Keras legacy HDF5")


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


def _parse_keras_resnet(root: h5py.Group, generation: str, label: str) -> _Parsed:
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
    for lname in _attr_list(root, "layer_names") or []:
        is_conv, is_bn = conv_re.fullmatch(lname) is not None, bn_re.fullmatch(lname) is not None
        if not (is_conv or is_bn):
            continue  # input, padding, activation, add, pooling, fc1000 / probs: ignored
        spec = (conv_of if is_conv else bn_of).get(lname)
        if spec is None:
            raise _fail(f"{label}: Keras layer {lname} is not part of ResNet50 (a deeper ResNet?); nst-jax supports {', '.join(ALL_ARCHS)}")
        g = root.get(lname)
        wnames = (_attr_list(g, "weight_names") or []) if isinstance(g, h5py.Group) else []
        dsets = []
        for w in wnames:
            d = g.get(w)
            if not isinstance(d, h5py.Dataset):
                raise _fail(f"{label}: Keras layer {lname} lists weight {w!r} but the file has no such dataset (truncated or corrupt?)")
            dsets.append(d)
        cout = spec.out_channels
        if is_conv:
            kernels = [d for d in dsets if d.ndim == 4]
            biases = [d for d in dsets if d.ndim == 1]
            if len(kernels) != 1 or len(biases) > 1 or len(dsets) != len(kernels) + len(biases):
                shapes = ", ".join(str(d.shape) for d in dsets) or "none"
                raise _fail(f"{label}: Keras layer {lname} has weights of shapes {shapes}; expected a 4-D kernel and a bias")
            if kernels[0].shape != spec.kernel_shape:
                raise _fail(f"layer {spec.name}: Keras layer {lname} has a kernel of shape {kernels[0].shape}, expected {spec.kernel_shape} (HWIO) in {label}")
            if biases and biases[0].shape != (cout,):
                raise _fail(f"layer {spec.name}: Keras layer {lname} has a bias of shape {biases[0].shape}, expected {(cout,)} in {label}")
            convs[spec.name] = (kernels[0][()], biases[0][()] if biases else None)
        else:
            if len(dsets) != 4 or any(d.shape != (cout,) for d in dsets):
                shapes = ", ".join(str(d.shape) for d in dsets) or "none"
                raise _fail(
                    f"layer {spec.name}: Keras batch norm {lname} has weights of shapes {shapes}; expected four of "
                    f"shape {(cout,)} (gamma, beta, moving mean, moving variance) in {label}"
                )
            gamma, beta, mean, var = (dsets[i][()] for i in _bn_weight_order(wnames))
            bns[spec.name] = resnet.bn_affine(gamma, beta, mean, var, eps)
    params = {}
    for spec in specs:
        conv_name, bn_name = (spec.name, spec.bn_name) if generation == "old" else (spec.keras_conv, spec.keras_bn)
        if spec.name not in convs:
            raise _fail(f"layer {spec.name} (Keras {conv_name}) is missing from {label}")
        if spec.name not in bns:
            raise _fail(f"layer {spec.name}: its batch norm (Keras {bn_name}) is missing from {label}")
        kernel, bias = convs[spec.name]
        scale, shift = bns[spec.name]
        bias = np.zeros(spec.out_channels, np.float32) if bias is None else bias
        params[spec.name] = {"kernel": kernel, "bias": bias, "bn_scale": scale, "bn_shift": shift}
    return _Parsed(
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


def _parse_keras3(f: h5py.File, label: str) -> _Parsed:
    # Keras 3 saving_lib / H5IOStore: every layer's variables sit in "<inner path>/vars/<i>",
    # e.g. "layers/conv2d_3/vars/0" (kernel HWIO) and ".../vars/1" (bias). The inner path uses
    # the snake_case class name plus a counter, not the layer name; newer versions store the
    # layer name ("block1_conv1") as the attribute "name" of the vars group.
    found: list[tuple[str, h5py.Group]] = []

    def visit(name: str, obj: Any) -> None:
        parts = name.split("/")
        if parts[-1] != "vars" or not isinstance(obj, h5py.Group):
            return
        if any(p in ("optimizer", "metrics") for p in parts):
            return  # optimizer slots have kernel-shaped arrays too
        d0, d1 = obj.get("0"), obj.get("1")
        if isinstance(d0, h5py.Dataset) and isinstance(d1, h5py.Dataset) and d0.ndim == 4 and d1.ndim == 1:
            found.append(("/".join(parts[:-1]), obj))

    f.visititems(visit)
    if not found:
        raise _fail(f"{label} is an HDF5 file in Keras 3 layout but holds no convolution weights (layers/*/vars); {_UNDERSTOOD}")
    found.sort(key=lambda item: _natural_key(item[0]))
    names = [(_as_str(g.attrs["name"]) if "name" in g.attrs else None) for _, g in found]
    convs = [(p, g["0"][()], g["1"][()]) for p, g in found]
    arch, params = _map_convs(convs, names, label, "the Keras 3 layers")
    return _Parsed(arch, params, vgg.CAFFE, "Keras 3 .weights.h5")


def _parse_hdf5_file(f: h5py.File, label: str) -> _Parsed:
    if "format" in f.attrs and _as_str(f.attrs["format"]) == FORMAT:
        raise _ConvertedSource()
    root = _keras_legacy_root(f)
    if root is not None:
        return _parse_keras_legacy(root, label)
    if _looks_keras3(f):
        return _parse_keras3(f, label)
    raise _fail(f"{label} is an HDF5 file with an unknown layout (no Keras layer_names, no Keras 3 layers/*/vars, not nst-jax); {_UNDERSTOOD}")


class _ConvertedSource(Exception):
    """Internal signal: the source is already an nst-jax file."""


def _parse_hdf5(path: pathlib.Path, label: str, fileobj: Optional[io.BytesIO] = None) -> _Parsed:
    try:
        f = h5py.File(fileobj if fileobj is not None else path, "r")
    except OSError as e:
        raise _fail(f"{label} looks like HDF5 but cannot be opened: truncated or corrupt ({_short(e)}); re-download or re-export it") from None
    try:
        with f:
            return _parse_hdf5_file(f, label)
    except _ConvertedSource:
        if fileobj is not None:
            raise _fail(f"{label}: an nst-jax file inside a zip archive; extract it first") from None
        net = load_weights(path)
        return _Parsed(
            net.arch, net.params, net.convention, "nst-jax converted .h5", net.pretrained, net.source_name, net.source_sha256,
            net.stride_on, net.bn_epsilon,
        )  # fmt: skip
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise _fail(f"cannot read {label}: truncated or corrupt HDF5 ({_short(e)}); re-download or re-export it") from None


# --------------------------------------------------------------------------------------------
# torch state dicts without torch: a restricted unpickler
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _TorchDType:
    """A torch element type: a numpy dtype name, or 'bfloat16' (no numpy equivalent)."""

    name: str

    @property
    def itemsize(self) -> int:
        return 2 if self.name == "bfloat16" else np.dtype(self.name).itemsize


# torch.<Name>Storage classes (what torch.save writes for a tensor's storage type).
_STORAGE_TYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
# torch dtype objects pickle as GLOBAL "torch float32" etc. (used by _rebuild_tensor_v3).
_TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32", "int16": "int16",
    "short": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are read only if a needed tensor uses it."""

    key: str
    dtype: _TorchDType
    numel: int  # elements of this (view of the) storage
    base: int = 0  # element offset into the root storage (legacy storage views)


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Optional[_TorchDType] = None  # _rebuild_tensor_v3: dtype given apart from storage


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(f"bad tensor {what}: {value!r}")
    if any(v < 0 for v in value):
        raise TypeError(f"negative tensor {what}: {value!r}")
    return tuple(value)


def _tensor_ref(storage: Any, offset: Any, size: Any, stride: Any, dtype: Any = None) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise TypeError("tensor storage is not a storage reference")
    if not isinstance(offset, int) or offset < 0:
        raise TypeError(f"bad storage offset {offset!r}")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise TypeError("tensor size and stride differ in length")
    if dtype is not None and not isinstance(dtype, _TorchDType):
        raise TypeError("bad tensor dtype")
    return _TensorRef(storage, offset, size, stride, dtype)


def _rebuild_tensor(storage, storage_offset, size, stride):  # old torch (< 0.4)
    return _tensor_ref(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _tensor_ref(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    return _tensor_ref(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise TypeError("parameter data is not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return _rebuild_parameter(data)


_REBUILDERS: dict[str, Callable[..., Any]] = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only state dicts: OrderedDict, tensors and storage/dtype names.

    ``find_class`` is the only way a pickle can reach a callable, so refusing every other global
    means nothing in the file is ever executed (a ``__reduce__`` payload such as ``os.system``
    or a pickled ``nn.Module`` is refused before anything runs).
    """

    def __init__(self, file: Any, label: str) -> None:
        # latin1: Python-2 era pickles carry byte strings; the keys we need are ASCII anyway.
        super().__init__(file, encoding="latin1")
        self.label = label
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in _REBUILDERS:
            return _REBUILDERS[name]
        if module in ("torch", "torch.cuda") and name in _STORAGE_TYPES:
            # very old files name the CUDA storage classes (torch.cuda.FloatStorage)
            return _TorchDType(_STORAGE_TYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDType(_TORCH_DTYPES[name])
        if module in ("torch", "torch.storage") and name == "UntypedStorage":
            return _TorchDType("uint8")
        raise _fail(
            f"{self.label}: refusing to unpickle {module}.{name}: only a state dict of tensors is allowed "
            f"(the file may run code when loaded); load it in PyTorch yourself and save model.state_dict() instead"
        )

    def persistent_load(self, pid: Any) -> Any:
        # zip format: ("storage", storage_type, key, location, numel)
        # legacy:     ("storage", storage_type, root_key, location, numel, view_metadata)
        if not isinstance(pid, tuple) or len(pid) < 5:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        typename = pid[0].decode("latin1") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage":
            raise _fail(f"{self.label}: refusing to load a persistent object of type {typename!r:.40}: only tensors are allowed")
        dtype, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(dtype, _TorchDType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("malformed storage reference")
        root = self.storages.setdefault(key, _StorageRef(key, dtype, numel))
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            # Old torch saved storage views as (view_key, offset, size) of a root storage.
            _, offset, size = view
            if not (isinstance(offset, int) and isinstance(size, int) and 0 <= offset and offset + size <= numel):
                raise pickle.UnpicklingError("malformed storage view")
            return _StorageRef(key, dtype, size, offset)
        return root


class _TorchFile:
    """A torch.save file opened without torch: the (lazy) object plus storage access."""

    def __init__(self, path: pathlib.Path, label: str, kind: str) -> None:
        self.path, self.label, self.kind = path, label, kind
        self.little = True
        if kind == "zip":
            self._open_zip()
        else:
            self._open_legacy()

    # zip format (torch >= 1.6): <prefix>/data.pkl, <prefix>/data/<key>, <prefix>/byteorder
    def _open_zip(self) -> None:
        with zipfile.ZipFile(self.path) as zf:
            names = zf.namelist()
            pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
            if len(pkls) != 1:
                raise _NotTorch()
            self.prefix = pkls[0][: -len("data.pkl")]
            if self.prefix + "byteorder" in names:
                self.little = zf.read(self.prefix + "byteorder").strip() != b"big"
            self.obj, self.storages = self._unpickle_main(io.BytesIO(zf.read(pkls[0])))
            self._names = set(names)

    # legacy format: pickles of magic, protocol version, sys_info, the object, the storage
    # keys; then every storage as an 8-byte element count followed by its raw bytes.
    def _open_legacy(self) -> None:
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            magic = _RestrictedUnpickler(f, self.label).load()
            if magic != _TORCH_LEGACY_MAGIC:
                raise _NotTorch()
            _RestrictedUnpickler(f, self.label).load()  # protocol version
            sys_info = _RestrictedUnpickler(f, self.label).load()
            if isinstance(sys_info, dict):
                self.little = bool(sys_info.get("little_endian", True))
            self.obj, self.storages = self._unpickle_main(f)
            keys = _RestrictedUnpickler(f, self.label).load()
            if not isinstance(keys, list):
                raise pickle.UnpicklingError("bad storage key list")
            # The pickle module leaves the file right after each STOP opcode.
            pos = f.tell()
            self._offsets: dict[str, int] = {}
            order = "<" if self.little else ">"
            for key in keys:
                key = str(key)
                ref = self.storages.get(key)
                if ref is None:
                    raise pickle.UnpicklingError(f"storage {key} listed but never referenced")
                f.seek(pos)
                header = f.read(8)
                if len(header) != 8:
                    raise _Truncated()
                (numel,) = np.frombuffer(header, dtype=f"{order}i8")
                if int(numel) != ref.numel:
                    raise pickle.UnpicklingError(f"storage {key} has {int(numel)} elements, expected {ref.numel}")
                self._offsets[key] = pos + 8
                pos += 8 + int(numel) * ref.dtype.itemsize
                if pos > size:
                    raise _Truncated()

    def _unpickle_main(self, file: Any) -> tuple[Any, dict[str, _StorageRef]]:
        up = _RestrictedUnpickler(file, self.label)
        obj = up.load()
        return obj, up.storages

    def _storage_bytes(self, ref: _StorageRef) -> bytes:
        root = self.storages[ref.key]
        nbytes = root.numel * root.dtype.itemsize
        if self.kind == "zip":
            name = f"{self.prefix}data/{ref.key}"
            if name not in self._names:
                raise pickle.UnpicklingError(f"storage {ref.key} missing from the archive")
            with zipfile.ZipFile(self.path) as zf:
                data = zf.read(name)
        else:
            with open(self.path, "rb") as f:
                f.seek(self._offsets[ref.key])
                data = f.read(nbytes)
        if len(data) < nbytes:
            raise _Truncated()
        return data

    def array(self, t: _TensorRef, axes: Optional[tuple[int, ...]] = None) -> np.ndarray:
        """Materialise a tensor as a C-contiguous numpy array honouring size/stride/offset.

        ``axes`` permutes the dimensions on the way (OIHW -> HWIO) within the one copy.
        """
        dtype = t.dtype or t.storage.dtype
        data = self._storage_bytes(t.storage)
        byte_base = t.storage.base * t.storage.dtype.itemsize
        count = (t.storage.numel * t.storage.dtype.itemsize) // dtype.itemsize
        order = "<" if self.little else ">"
        np_dtype = np.dtype(f"{order}u2") if dtype.name == "bfloat16" else np.dtype(dtype.name).newbyteorder(order)
        flat = np.frombuffer(data, dtype=np_dtype, count=count, offset=byte_base)
        if math.prod(t.size) == 0:
            view = np.zeros(t.size, np_dtype)
        else:
            last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
            if last >= count:
                raise pickle.UnpicklingError("tensor reaches past the end of its storage")
            view = np.lib.stride_tricks.as_strided(
                flat[t.offset :], shape=t.size, strides=tuple(s * np_dtype.itemsize for s in t.stride), writeable=False
            )
        if axes is not None:
            view = view.transpose(axes)
        if dtype.name == "bfloat16":
            # bfloat16 is the upper half of a float32.
            wide = np.array(view, dtype=np.uint32, order="C")
            wide <<= 16
            return wide.view(np.float32)
        # One C-ordered copy in native byte order: never keep a view into the file buffer.
        return np.array(view, dtype=np_dtype.newbyteorder("="), order="C")


class _NotTorch(Exception):
    pass


class _Truncated(Exception):
    pass


def _unwrap_state_dict(obj: Any) -> Any:
    """{"state_dict": sd} / {"model": sd} checkpoints hold the state dict one level down."""
    for _ in range(2):
        if isinstance(obj, dict) and not any(isinstance(k, str) and k.startswith(("features.", "module.features.")) for k in obj):
            for key in ("state_dict", "model", "model_state_dict"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
    return obj


def _parse_torch(path: pathlib.Path, label: str, kind: str, input_convention: Optional[vgg.Convention]) -> _Parsed:
    try:
        tf = _TorchFile(path, label, kind)
        sd = _unwrap_state_dict(tf.obj)
        if not isinstance(sd, dict):
            raise _fail(f"{label} holds a {type(sd).__name__}, not a state dict; save model.state_dict() instead")
        # DataParallel checkpoints prefix every key with "module.".
        sd = {(k[7:] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in sd.items()}
        keys = [k for k in sd if isinstance(k, str)]
        if "conv1.weight" in sd and any(k.startswith("layer1.") for k in keys):
            return _parse_torch_resnet(tf, sd, keys, label, kind, input_convention)
        if any(k.startswith("features.") and k.endswith("running_mean") for k in keys):
            raise _fail(f"{label} is a batch-norm VGG (vgg19_bn / vgg16_bn), which nst-jax does not support; use the plain VGG weights")
        indices = set()
        for k in keys:
            m = re.fullmatch(r"features\.(\d+)\.weight", k)
            if m:
                indices.add(int(m.group(1)))
        arch = next((a for a in vgg.ARCHS if indices == {s.torch_index for s in vgg.conv_specs(a)}), None)
        if arch is None:
            if not indices:
                sample = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
                raise _fail(f"{label} is a torch file without torchvision VGG keys features.N.weight (keys: {sample or 'none'}); {_UNDERSTOOD}")
            raise _fail(
                f"{label}: conv indices features.{{{','.join(map(str, sorted(indices)))}}} match neither "
                f"torchvision VGG19 nor VGG16"
            )
        params = {}
        for spec in vgg.conv_specs(arch):
            wkey, bkey = f"features.{spec.torch_index}.weight", f"features.{spec.torch_index}.bias"
            w, b = sd.get(wkey), sd.get(bkey)
            for key, ref, expected in (
                (wkey, w, (spec.out_channels, spec.in_channels, 3, 3)),
                (bkey, b, (spec.out_channels,)),
            ):
                if not isinstance(ref, _TensorRef):
                    raise _fail(f"layer {spec.name}: {key} is missing from {label}")
                if ref.size != expected:
                    raise _fail(f"layer {spec.name}: {key} has shape {ref.size}, expected {expected} (OIHW) in {label}")
            # torch kernels are OIHW; ours are HWIO.
            kernel = tf.array(w, axes=(2, 3, 1, 0))
            params[spec.name] = {"kernel": kernel, "bias": tf.array(b)}
    except WeightsError:
        raise
    except _NotTorch:
        what = "a zip archive" if kind == "zip" else "a pickle"
        raise _fail(f"{label} is {what} but not a torch.save file; {_UNDERSTOOD}") from None
    except (_Truncated, EOFError, zipfile.BadZipFile) as e:
        raise _fail(f"{label} is a truncated or corrupt torch file ({_short(e) if str(e) else 'unexpected end of file'}); re-download it") from None
    except Exception as e:  # anything else a malformed pickle/zip can raise
        raise _fail(f"{label} is a corrupt torch file ({type(e).__name__}: {_short(e)}); re-download it") from None
    convention = input_convention or vgg.TORCHVISION
    return _Parsed(arch, params, convention, f"torchvision .pth ({'zip' if kind == 'zip' else 'legacy'})")


def _parse_torch_resnet(
    tf: _TorchFile, sd: dict, keys: list[str], label: str, kind: str, input_convention: Optional[vgg.Convention]
) -> _Parsed:
    """A torchvision ``resnet50`` state dict (called inside ``_parse_torch``'s error handling)."""
    blocks: dict[int, int] = {}
    for k in keys:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    expected = {i: n for i, (_, n, _, _) in enumerate(resnet.STAGES, start=1)}
    bottleneck = "layer1.0.conv3.weight" in sd
    if blocks != expected or not bottleneck:
        got = ", ".join(str(blocks.get(i, 0)) for i in sorted(set(blocks) | set(expected)))
        what = "bottleneck" if bottleneck else "basic (two-conv)"
        raise _fail(
            f"{label} is a torchvision ResNet with {got} {what} blocks per stage, not ResNet50 "
            f"(3, 4, 6, 3 bottleneck blocks); nst-jax supports {', '.join(ALL_ARCHS)}"
        )
    params = {}
    for spec in resnet.conv_specs():
        cout, k = spec.out_channels, spec.size
        wanted = {f"{spec.torch_conv}.weight": (cout, spec.in_channels, k, k)}
        wanted.update({f"{spec.torch_bn}.{part}": (cout,) for part in ("weight", "bias", "running_mean", "running_var")})
        for key, shape in wanted.items():
            ref = sd.get(key)
            if not isinstance(ref, _TensorRef):
                raise _fail(f"layer {spec.name}: {key} is missing from {label}")
            if ref.size != shape:
                raise _fail(f"layer {spec.name}: {key} has shape {ref.size}, expected {shape}{' (OIHW)' if len(shape) == 4 else ''} in {label}")
        bias_ref = sd.get(f"{spec.torch_conv}.bias")  # torchvision's convs have none
        if bias_ref is not None and (not isinstance(bias_ref, _TensorRef) or bias_ref.size != (cout,)):
            raise _fail(f"layer {spec.name}: {spec.torch_conv}.bias is not a tensor of shape {(cout,)} in {label}")
        bn = {part: tf.array(sd[f"{spec.torch_bn}.{part}"]) for part in ("weight", "bias", "running_mean", "running_var")}
        scale, shift = resnet.bn_affine(bn["weight"], bn["bias"], bn["running_mean"], bn["running_var"], resnet.EPS_TORCHVISION)
        params[spec.name] = {
            "kernel": tf.array(sd[f"{spec.torch_conv}.weight"], axes=(2, 3, 1, 0)),  # OIHW -> HWIO
            "bias": tf.array(bias_ref) if bias_ref is not None else np.zeros(cout, np.float32),
            "bn_scale": scale,
            "bn_shift": shift,
        }
    return _Parsed(
        "resnet50", params, input_convention or vgg.TORCHVISION,
        f"torchvision ResNet50 .pth ({'zip' if kind == 'zip' else 'legacy'})",
        stride_on="3x3", bn_epsilon=resnet.EPS_TORCHVISION,
    )  # fmt: skip


def _parse_zip(path: pathlib.Path, label: str, input_convention: Optional[vgg.Convention]) -> _Parsed:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            keras_weights = "model.weights.h5" in names
            data = zf.read("model.weights.h5") if keras_weights else None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _fail(f"{label} is a truncated or corrupt zip archive ({_short(e)}); re-download it") from None
    except Exception as e:
        raise _fail(f"{label} is a corrupt zip archive ({type(e).__name__}: {_short(e)}); re-download it") from None
    if data is not None:
        # A Keras 3 ".keras" archive: the weights are an H5IOStore file inside the zip.
        parsed = _parse_hdf5(path, f"{label} (model.weights.h5)", fileobj=io.BytesIO(data))
        parsed.fmt = "Keras 3 .keras archive"
        if input_convention is not None:
            parsed.convention = input_convention
        return parsed
    return _parse_torch(path, label, "zip", input_convention)


def _parse_source(path: pathlib.Path, input_convention: Optional[vgg.Convention]) -> _Parsed:
    label = str(path)
    kind = _sniff(path)
    if kind == "empty":
        raise _fail(f"{label} is empty; {_UNDERSTOOD}")
    if kind == "hdf5":
        parsed = _parse_hdf5(path, label)
        if input_convention is not None:
            parsed.convention = input_convention
        return parsed
    if kind == "zip":
        return _parse_zip(path, label, input_convention)
    if kind == "pickle":
        return _parse_torch(path, label, "legacy", input_convention)
    raise _fail(f"{label} is not a weights file nst-jax can read; {_UNDERSTOOD}")


# --------------------------------------------------------------------------------------------
# Convert and download
# --------------------------------------------------------------------------------------------


def _convert(
    src: pathlib.Path,
    dst: Optional[PathLike],
    *,
    input_convention: Union[None, str, vgg.Convention],
    arch: Optional[str],
    overwrite: bool,
    source_name: Optional[str] = None,
    source_sha256: Optional[str] = None,
) -> Network:
    conv = _convention_of(input_convention, vgg.CAFFE) if input_convention is not None else None
    if arch is not None:
        _check_arch(arch)
    if not src.exists():
        raise _fail(f"{src} not found; give the path of a downloaded weights file ({_UNDERSTOOD})")
    if src.is_dir():
        raise _fail(f"{src} is a directory; give the path of a weights file")
    if dst is not None:
        _refuse_overwrite(pathlib.Path(dst).expanduser(), src, overwrite)
    parsed = _parse_source(src, conv)
    if arch is not None and parsed.arch != arch:
        raise _fail(f"{src} holds {parsed.arch} weights, not {arch}")
    out = pathlib.Path(dst).expanduser() if dst is not None else default_weights_dir() / f"{parsed.arch}.h5"
    if dst is None:
        _refuse_overwrite(out, src, overwrite)
    params = _check_params(parsed.params, parsed.arch, f" in {src}", strict=True)
    if parsed.source_name is not None and source_name is None:
        # Re-writing an nst-jax file keeps the provenance of the original download.
        source_name, source_sha256 = parsed.source_name, parsed.source_sha256
    source_name = source_name if source_name is not None else src.name
    source_sha256 = source_sha256 if source_sha256 is not None else _sha256_file(src)
    _save_checked(
        out,
        params,
        arch=parsed.arch,
        convention=parsed.convention,
        pretrained=parsed.pretrained,
        source_name=source_name,
        source_sha256=source_sha256,
        extra_attrs=_arch_attrs(parsed.arch, parsed.stride_on, parsed.bn_epsilon),
    )
    # The arrays just written are the ones returned (no second read of a large file); the
    # fingerprint is taken from the file's bytes, as load_weights does.
    return Network(
        arch=parsed.arch,
        params=params,
        convention=parsed.convention,
        pretrained=parsed.pretrained,
        source_name=source_name,
        source_sha256=source_sha256,
        fingerprint=_sha256_file(out),
        path=str(out),
        stride_on=parsed.stride_on,
        bn_epsilon=parsed.bn_epsilon,
    )


def _refuse_overwrite(out: pathlib.Path, src: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and src.exists() and os.path.samefile(out, src):
        raise _fail(f"output {out} is the source file; choose another output path with -o")
    if out.exists() and not overwrite:
        raise _fail(f"{out} already exists; pass --overwrite (overwrite=True) to replace it, or choose another path with -o")


def convert(
    src: PathLike,
    dst: Optional[PathLike] = None,
    *,
    input_convention: Union[None, str, vgg.Convention] = None,
    arch: Optional[str] = None,
    overwrite: bool = False,
) -> Network:
    """Convert a downloaded weights file into the nst-jax format.

    The source format is detected from the file's content (not its extension): Keras legacy
    HDF5, Keras 3 ``.weights.h5`` (or ``.keras``), torchvision ``.pth`` (zip or legacy), or an
    nst-jax file (re-written). The source's file name and SHA-256 are recorded.

    Args:
      src: the downloaded file.
      dst: output path; default ``default_weights_dir() / f"{arch}.h5"``.
      input_convention: "caffe", "torchvision" or a ``vgg.Convention``; default: the format's
        own (Keras: Caffe; torchvision: torchvision; nst-jax: as recorded). neural-style-pt's
        ``vgg19-d01eb7cb.pth`` needs "caffe".
      arch: if given, the file must hold this architecture.
      overwrite: replace an existing ``dst``.

    Returns:
      The converted ``Network`` (the same as ``load_weights(dst)``).

    Raises:
      WeightsError: unreadable or unknown source, wrong architecture or shapes, existing ``dst``.
    """
    return _convert(
        pathlib.Path(src).expanduser(), dst, input_convention=input_convention, arch=arch, overwrite=overwrite
    )


def _parse_expected_hash(expected: str) -> tuple[str, str]:
    """"md5:HEX", "sha256:HEX" or bare hex (SHA-256, whole or a prefix of >= 8 digits)."""
    text = expected.strip().lower()
    kind = "sha256"
    if ":" in text:
        kind, text = text.split(":", 1)
    if kind not in ("md5", "sha256") or not re.fullmatch(r"[0-9a-f]+", text):
        raise _fail(f"bad expected hash {expected!r}; give hex digits of the SHA-256 (or md5:HEX)")
    full = 32 if kind == "md5" else 64
    if len(text) == full:
        return kind, text
    if kind == "sha256" and 8 <= len(text) < full:
        return "sha256-prefix", text
    raise _fail(f"bad expected hash {expected!r}: need {full} hex digits" + (" or a prefix of at least 8" if kind == "sha256" else ""))


def download(
    source: str = "keras",
    arch: str = "vgg19",
    *,
    dest_dir: Optional[PathLike] = None,
    url: Optional[str] = None,
    expected_hash: Optional[str] = None,
    progress: bool = True,
    overwrite: bool = False,
    timeout: float = 60.0,
) -> Network:
    """Download official weights, verify them and convert them into ``dest_dir/<arch>.h5``.

    The raw file is streamed to a temporary file in ``dest_dir``, checked (length against
    Content-Length, then the published hash), converted, and deleted; on any failure nothing
    is left behind.

    Args:
      source: "keras" (Caffe weights, ~80 MB) or "torchvision" (~550 MB).
      arch: "vgg19" or "vgg16".
      dest_dir: where the converted file goes; default ``default_weights_dir()``.
      url: a mirror of the same file (default: the official URL in ``SOURCES``).
      expected_hash: overrides the official hash: "md5:HEX", "sha256:HEX" or bare SHA-256 hex
        (whole, or a prefix of at least 8 digits).
      progress: show a tqdm progress bar on stderr.
      overwrite: replace an existing converted file.
      timeout: socket timeout in seconds.

    Returns:
      The converted ``Network``.

    Raises:
      WeightsError: network failure, HTTP error, truncated transfer, checksum mismatch,
        unreadable file, or an existing output without ``overwrite``.
    """
    if source not in SOURCE_NAMES:
        raise _fail(f"unknown weights source {source!r}; valid: {', '.join(SOURCE_NAMES)}")
    _check_arch(arch)
    if (source, arch) not in SOURCES:
        raise _fail(
            f"nst-jax has no official {source} download for {arch}; download the file yourself and "
            f"run `nst-jax weights convert FILE`"
        )
    official_url, kind, digest = SOURCES[(source, arch)]
    if expected_hash:
        kind, digest = _parse_expected_hash(expected_hash)
    url = url or official_url
    dest = pathlib.Path(dest_dir).expanduser() if dest_dir is not None else default_weights_dir()
    out = dest / f"{arch}.h5"
    if out.exists() and not overwrite:
        raise _fail(f"{out} already exists; pass --overwrite (overwrite=True) to download again")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _fail(f"cannot create {dest}: {_short(e)}") from None
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path)) or f"{source}-{arch}"
    # The raw download is only ever a temporary file: it is deleted after conversion.
    tmp = dest / f".{name}.{secrets.token_hex(4)}.part"
    hint = f"download {url} another way and run `nst-jax weights convert FILE`"
    try:
        sha256 = _fetch(url, tmp, kind, digest, name=name, progress=progress, timeout=timeout, hint=hint)
        return _convert(
            tmp,
            out,
            input_convention=_SOURCE_CONVENTION[source],
            arch=arch,
            overwrite=overwrite,
            source_name=name,
            source_sha256=sha256,
        )
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def _fetch(url: str, tmp: pathlib.Path, kind: str, digest: str, *, name: str, progress: bool, timeout: float, hint: str) -> str:
    """Stream ``url`` into ``tmp``; verify length and hash; return the SHA-256 hex."""
    from tqdm import tqdm

    sha, md5 = hashlib.sha256(), hashlib.md5()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            length_header = resp.headers.get("Content-Length")
            total = int(length_header) if length_header and length_header.isdigit() else None
            with open(tmp, "xb") as out, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                disable=not progress, leave=False,
            ) as bar:  # fmt: skip
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise _fail(f"download of {url} failed: HTTP {e.code} {e.reason}; check the URL or {hint}") from None
    except urllib.error.URLError as e:
        raise _fail(f"cannot reach {url}: {_short(e.reason)}; check the network or {hint}") from None
    except http.client.IncompleteRead as e:
        received += len(e.partial)
        raise _fail(f"download of {url} was cut off after {received} bytes (truncated transfer); try again or {hint}") from None
    except (http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError) as e:
        raise _fail(f"download of {url} failed: {type(e).__name__}: {_short(e)}; try again or {hint}") from None
    except OSError as e:
        raise _fail(f"download of {url} failed writing {tmp}: {_short(e)}") from None
    if total is not None and received != total:
        raise _fail(
            f"download of {url} was cut off: received {received} of {total} bytes (truncated transfer); try again or {hint}"
        )
    got = md5.hexdigest() if kind == "md5" else sha.hexdigest()
    ok = got.startswith(digest) if kind == "sha256-prefix" else got == digest
    if not ok:
        shown = "MD5" if kind == "md5" else "SHA-256"
        raise _fail(
            f"checksum mismatch for {url}: {shown} {got} does not match the expected {digest}; "
            f"the download is corrupt or not the official file (try again, or pass --sha256 for a mirror you trust)"
        )
    return sha.hexdigest()


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Network",
    "SOURCES",
    "convention_name",
    "convert",
    "default_weights_dir",
    "describe",
    "download",
    "load_weights",
    "resolve_weights",
    "save_weights",
    "synthetic_params",
    "write_synthetic",
]
