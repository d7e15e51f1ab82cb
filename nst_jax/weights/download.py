"""``download``: fetch an official weights file, verify it and convert it."""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import re
import secrets
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from .. import vgg
from ._common import Network, PathLike, _check_arch, _fail, _short
from .convert import _convert
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
SOURCE_NAMES: tuple[str, ...] = ("keras", "torchvision")
# The input convention each source's weights were trained with.
_SOURCE_CONVENTION = {"keras": vgg.CAFFE, "torchvision": vgg.TORCHVISION}


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
