"""The converted format: nst-jax's own HDF5 file (``save_weights``, ``load_weights``, ``describe``)."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Mapping, Optional

import h5py
import numpy as np

from .. import files
from ..network import resnet, vgg
from ..errors import WeightsError
from . import h5safe
from .common import ALL_ARCHS, FORMAT, FORMAT_VERSION, Network, PathLike, GET_WEIGHTS, as_str, convention_name, check_arch, check_params, fail, param_table, sha256_file, error_text, sniff
from .keras import keras_legacy_root, looks_keras3

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
    root = pathlib.Path(__file__).resolve().parents[2]  # nst_jax/weights/native.py -> the checkout
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
            raise fail(f"weights file {path} {what}; check --weights, or {GET_WEIGHTS}")
        return path
    check_arch(arch)  # unknown arch -> WeightsError
    path = default_weights_dir() / f"{arch}.h5"
    if not path.is_file() and arch not in vgg.ARCHS:
        # No official download for these: only a file the user has can be converted.
        raise fail(
            f"no {arch} weights at {path}; convert a file you have with `nst-jax weights convert FILE -o {path}` "
            f"(or pass --weights PATH; set NST_JAX_WEIGHTS to use another directory)"
        )
    if not path.is_file():
        raise fail(
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
    check_arch(arch)
    checked = check_params(params, arch, "", strict=True)
    save_checked(
        pathlib.Path(path).expanduser(),
        checked,
        arch=arch,
        convention=convention,
        pretrained=pretrained,
        source_name=source_name,
        source_sha256=source_sha256,
        extra_attrs={**arch_attrs(arch, stride_on, bn_epsilon), **dict(extra_attrs or {})},
    )


def arch_attrs(arch: str, stride_on: Optional[str], bn_epsilon: Optional[float]) -> dict:
    """The architecture-specific root attributes (resnet50: resnet_stride_on, bn_epsilon)."""
    if arch not in resnet.ARCHS:
        if stride_on is not None or bn_epsilon is not None:
            raise fail(f"stride_on / bn_epsilon are resnet50 attributes, not {arch}'s")
        return {}
    if stride_on not in resnet.STRIDE_PLACEMENTS:
        raise fail(f"resnet50 weights need stride_on = {' or '.join(map(repr, resnet.STRIDE_PLACEMENTS))}, got {stride_on!r}")
    attrs: dict[str, Any] = {"resnet_stride_on": stride_on}
    if bn_epsilon is not None:
        attrs["bn_epsilon"] = np.float64(bn_epsilon)
    return attrs


def save_checked(
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
    """``save_weights`` for params already validated by ``check_params``."""
    if not isinstance(convention, vgg.Convention):
        raise fail(f"convention must be a vgg.Convention, got {type(convention).__name__}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"cannot create directory {path.parent}: {error_text(e)}") from None
    files.clean_stale(path, ".tmp")  # an earlier, killed run's temp file
    tmp = files.temp_path(path, ".tmp")
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
            raise fail(f"cannot write weights file {path}: {error_text(e)}") from None
        raise


def _finite_attr(value: Any, name: str, count: int, where: str) -> tuple[float, ...]:
    """``count`` finite floats from an attribute, or a WeightsError naming the attribute."""
    try:
        values = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise fail(f"attribute {name}{where} is not numeric ({_short_repr(value)}); the file is damaged: re-create it") from None
    if values.size != count:
        raise fail(f"attribute {name}{where} has {values.size} values, expected {count}; the file is damaged: re-create it")
    if not np.isfinite(values).all():
        raise fail(f"attribute {name}{where} has non-finite values {tuple(values.tolist())}; the file is damaged: re-create it")
    return tuple(float(v) for v in values)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convention_from_attrs(attr: Callable[..., Any], where: str) -> vgg.Convention:
    """The input convention recorded in a converted file, each attribute checked (finite, positive std)."""
    for name in ("channel_order", "pixel_scale", "mean", "std"):
        if attr(name) is None:
            raise fail(f"attribute {name} is missing{where}; the file is damaged: re-create it")
    order = as_str(attr("channel_order"))
    if order not in ("RGB", "BGR"):
        raise fail(f"attribute channel_order{where} is {order!r:.40}, expected 'RGB' or 'BGR'; the file is damaged: re-create it")
    (scale,) = _finite_attr(attr("pixel_scale"), "pixel_scale", 1, where)
    mean = _finite_attr(attr("mean"), "mean", 3, where)
    std = _finite_attr(attr("std"), "std", 3, where)
    if scale <= 0:
        raise fail(f"attribute pixel_scale{where} is {scale:g}, expected a positive number; the file is damaged: re-create it")
    if min(std) <= 0:
        raise fail(f"attribute std{where} is {std}, expected positive values; the file is damaged: re-create it")
    return vgg.Convention(order, scale, mean, std)  # type: ignore[arg-type]


def _check_kind(path: pathlib.Path) -> None:
    """Refuse a path that is missing, a directory, empty, or not HDF5, before it is opened."""
    if not path.exists():
        raise fail(f"weights file {path} not found; {GET_WEIGHTS}")
    if path.is_dir():
        raise fail(f"{path} is a directory, not a weights file; {GET_WEIGHTS}")
    kind = sniff(path)
    if kind == "empty":
        raise fail(f"weights file {path} is empty; delete it and {GET_WEIGHTS}")
    if kind in ("zip", "pickle"):
        raise fail(
            f"{path} is not an nst-jax weights file (it looks like a PyTorch/Keras archive); "
            f"convert it first with `nst-jax weights convert {path}`"
        )
    if kind != "hdf5":
        raise fail(f"{path} is not an nst-jax weights file (not HDF5); {GET_WEIGHTS}")


def _read_header(f: Any, path: pathlib.Path, attr: Callable[..., Any]) -> dict[str, Any]:
    """The root attributes of a converted file, checked: format, version, arch, convention, provenance."""
    where = f" in {path}"
    fmt = as_str(attr("format")) if "format" in f.attrs else None
    if fmt != FORMAT:
        if keras_legacy_root(f, str(path)) is not None or looks_keras3(f):
            raise fail(f"{path} is a Keras weights file, not a converted nst-jax file; "
                       f"convert it with `nst-jax weights convert {path}`")
        got = "no format attribute" if fmt is None else f"format {fmt!r}"
        raise fail(f"{path} is not an nst-jax weights file ({got}); convert the original with "
                   f"`nst-jax weights convert FILE`")
    version = int(np.asarray(attr("format_version", -1)))
    if version != FORMAT_VERSION:
        newer = " (written by a newer nst-jax: upgrade)" if version > FORMAT_VERSION else ""
        raise fail(f"{path} has format_version {version}, this nst-jax reads {FORMAT_VERSION}{newer}")
    arch = as_str(attr("arch", ""))
    if arch not in ALL_ARCHS:
        raise fail(f"unknown architecture {arch!r}{where}; this version supports {', '.join(ALL_ARCHS)}")
    header = dict(arch=arch, convention=_convention_from_attrs(attr, where),
                  pretrained=bool(np.asarray(attr("pretrained", False))),
                  source_name=as_str(attr("source_name", "")), source_sha256=as_str(attr("source_sha256", "")),
                  quantization=as_str(attr("quantization", "")) if "quantization" in f.attrs else "",
                  stride_on=None, bn_epsilon=None)
    if arch in resnet.ARCHS:
        stride_on = as_str(attr("resnet_stride_on")) if "resnet_stride_on" in f.attrs else None
        if stride_on not in resnet.STRIDE_PLACEMENTS:
            got = "is missing" if stride_on is None else f"is {stride_on!r}"
            raise fail(f"attribute resnet_stride_on {got}{where} (a {arch} file needs "
                       f"{' or '.join(map(repr, resnet.STRIDE_PLACEMENTS))}); the file is damaged: re-create it")
        header["stride_on"] = stride_on
        if "bn_epsilon" in f.attrs:
            header["bn_epsilon"] = _finite_attr(attr("bn_epsilon"), "bn_epsilon", 1, where)[0]
    return header


def _read_layers(f: Any, path: pathlib.Path, arch: str) -> dict[str, dict[str, np.ndarray]]:
    """Every layer's arrays, each shape, dtype and storage checked before a byte is read."""
    where = f" in {path}"
    raw: dict[str, dict[str, np.ndarray]] = {}
    for name, parts in param_table(arch):
        g = h5safe.child(f, name, str(path))
        if not isinstance(g, h5py.Group):
            raise fail(f"layer {name} is missing{where}; the file is damaged: re-create it")
        raw[name] = {}
        for part, shape in parts:
            ds = h5safe.child(g, part, str(path))
            if not isinstance(ds, h5py.Dataset):
                raise fail(f"layer {name}: {part} is missing{where}; the file is damaged: re-create it")
            raw[name][part] = h5safe.read(ds, shape, str(path), f"layer {name}: {part}")
    return raw


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
    _check_kind(path)
    fingerprint = sha256_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise fail(f"cannot open {path}: truncated or corrupt HDF5 ({error_text(e)}); delete it and re-create it") from None
    with f:
        try:
            def attr(name: str, default: Any = None) -> Any:
                return h5safe.attr(f, name, str(path), default)

            header = _read_header(f, path, attr)
            raw = _read_layers(f, path, header["arch"])
        except WeightsError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
            raise fail(f"cannot read {path}: truncated or corrupt HDF5 ({error_text(e)}); delete it and re-create it") from None
    params = check_params(raw, header["arch"], f" in {path}", strict=False)
    return Network(params=params, fingerprint=fingerprint, path=str(path), **header)


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
            seed = int(np.asarray(h5safe.attr(f, "synthetic_seed", net.path)))
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
        *([f"quantized:     {net.quantization}"] if net.quantization else []),
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

