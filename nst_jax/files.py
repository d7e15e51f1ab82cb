"""Writing files safely: atomic replaces, temp names a later run can clean, writability probes, clashes.

Every file nst-jax writes (images, checkpoints, manifests, converted weights, downloads) goes
through a temporary file beside its destination, named ``.<name>.<pid>-<random><suffix>``, that
is renamed over the destination when complete. The process id in the name lets a later run that
writes the same name tell an abandoned temp file (its process is gone: a SIGKILL, a power cut)
from one another run is still writing: ``clean_stale`` removes the first kind and reports temp
files it cannot attribute.

This module has no opinion on formats; ``image``, ``checkpoint`` and ``weights`` use it. The one
format helper, ``read_npy``, is the single place a ``.npy`` record from disk is read: its header
is checked before a byte of data is (checkpoint members, cached flows, multi-pass resume files).
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
import secrets
import stat
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import IO, Any, Optional, Union

import numpy as np

from .errors import ImageError, NSTError, NSTWarning

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_write", "clean_stale", "is_temp_name", "open_regular", "probe_writable", "read_npy", "read_small",
           "refuse_clashes", "refuse_inside", "temp_path"]


def _name(path: PathLike) -> str:
    return os.fspath(path).replace("\r", "\\r").replace("\n", "\\n")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def temp_path(dest: pathlib.Path, suffix: str = "") -> pathlib.Path:
    """A fresh temporary name beside ``dest``: ``.<name>.<pid>-<8 hex><suffix>``."""
    return dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


_TEMP_NAME = re.compile(r"\..+\.(\d+)-[0-9a-f]{8}(\.[^./]*)?|\.nst-jax-probe-.*")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of nst-jax's own temporary names (``temp_path``, or a writability probe)."""
    return _TEMP_NAME.fullmatch(name) is not None


def open_regular(path: PathLike, *, follow_links: bool = True) -> int:
    """Open ``path`` for reading only if it is a regular file; return the descriptor.

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` before a byte is read, so a FIFO, a
    socket or a device named like one of our files can neither block the run nor feed it bytes
    without end. With ``follow_links=False`` a symbolic link is refused too (``O_NOFOLLOW``).

    Raises:
      OSError: missing, unreadable, a link (when refused) or not a regular file (``EINVAL``).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_small(path: PathLike, limit: int, *, follow_links: bool = True) -> Optional[bytes]:
    """The bytes of a small regular file (``open_regular``), or None when it is absent, not a regular
    file, a refused link, unreadable or larger than ``limit`` bytes."""
    try:
        fd = open_regular(path, follow_links=follow_links)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    return None if len(data) > limit else data


def _real(path: PathLike) -> pathlib.Path:
    return pathlib.Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _inodes(path: pathlib.Path) -> set[tuple[int, int]]:
    """(device, inode) of ``path`` if it is a file, else of the files directly in the folder."""
    out: set[tuple[int, int]] = set()
    try:
        if not path.is_dir():
            st = path.stat()
            return {(st.st_dev, st.st_ino)}
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if entry.is_file():
                        s = entry.stat()
                        out.add((s.st_dev, s.st_ino))
                except OSError:
                    continue
    except OSError:
        pass
    return out


def refuse_inside(inputs: Mapping[str, Optional[PathLike]], folders: Mapping[str, Optional[PathLike]]) -> None:
    """Refuse, before any work, an input that lives in a folder the job writes into or clears.

    An input (a file, or a folder of frames) is refused when its resolved path is one of the
    folders or inside one, or when it (or, for a folder, a file directly in it) is the same file
    by device and inode as a folder's entry (a hard link). This holds with ``--overwrite`` too:
    restarting a job clears its folder, which must never hold what the job reads.

    Args:
      inputs: label -> path of every input; None entries ignored.
      folders: label -> every folder the job creates, writes into or removes files from.

    Raises:
      NSTError: one line naming the input and the folder.
    """
    places = [(label, pathlib.Path(p), _real(p)) for label, p in folders.items() if p is not None]
    for label, path in inputs.items():
        if path is None:
            continue
        real = _real(path)
        for where, folder, real_folder in places:
            if real == real_folder or real_folder in real.parents or _inodes(real) & _inodes(real_folder):
                raise NSTError(f"the {label} input {_name(path)} is in {where} {_name(folder)}, which this job "
                               "writes and clears; move the input or give another -o")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True
    return True


def clean_stale(dest: pathlib.Path, suffix: str = "") -> list[pathlib.Path]:
    """Remove the temp files an earlier, killed run left for ``dest``; warn about unattributable ones.

    A temp file ``.<name>.<pid>-<hex><suffix>`` whose process no longer exists is removed. One
    in the older ``.<name>.<random><suffix>`` form (nst-jax before 0.2) cannot be attributed, so
    it is reported with an ``NSTWarning`` and left alone.

    Args:
      dest: the file about to be written.
      suffix: the temp files' suffix (".part", ".tmp", or the destination's own suffix).

    Returns:
      The paths removed.
    """
    parent = dest.parent
    if not parent.is_dir():
        return []
    ours = re.compile(re.escape(f".{dest.name}.") + r"(\d+)-[0-9a-f]{8}" + re.escape(suffix))
    older = re.compile(re.escape(f".{dest.name}.") + r"[A-Za-z0-9_]{8}" + re.escape(suffix))
    removed, unknown = [], []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    for entry in entries:
        m = ours.fullmatch(entry.name)
        if m:
            if not _alive(int(m.group(1))):
                try:
                    os.unlink(entry.path)
                    removed.append(pathlib.Path(entry.path))
                except OSError:
                    unknown.append(entry.name)
        elif older.fullmatch(entry.name):
            unknown.append(entry.name)
    if unknown:
        warnings.warn(f"{_name(parent)}: leftover temporary file(s) of an earlier run: {', '.join(sorted(unknown)[:3])}"
                      f"{' ...' if len(unknown) > 3 else ''} (safe to delete once no nst-jax run is writing {dest.name})",
                      NSTWarning, stacklevel=3)
    return removed


_UMASK: Optional[int] = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("Umask:"):
                        _UMASK = int(line.split()[1], 8)
                        break
        except OSError:
            pass
        if _UMASK is None:  # pragma: no cover - non-Linux
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


def read_npy(fh: IO[bytes], size: int, *, shape: Optional[tuple[int, ...]] = None,
             dtype: Optional[np.dtype] = None, max_elements: Optional[int] = None,
             trailing: Optional[int] = 0) -> np.ndarray:
    """Read one ``.npy`` record from ``fh``, its header checked before its data are read.

    Never unpickles: an object dtype is refused from the header alone. The declared byte count is
    checked against the bytes that are there before any are read, so a header declaring terabytes
    costs nothing.

    Args:
      fh: a binary file positioned at the record (a file or a zip member; ``tell`` must work).
      size: the stream's total size in bytes.
      shape: the shape the record must declare (None: any).
      dtype: the dtype it must declare (None: any numeric dtype).
      max_elements: the most elements it may declare.
      trailing: how many bytes may follow the record (None: any, for a stream of records).

    Returns:
      The array (C order, owned, writeable).

    Raises:
      ValueError: with a short reason (``not a numpy array``, ``truncated``, ...); callers turn it
        into their own user-facing error.
    """
    try:
        version = np.lib.format.read_magic(fh)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        got_shape, fortran, got_dtype = reader(fh)
    except ValueError as err:
        raise ValueError(f"not a numpy array ({' '.join(str(err).split())[:80]})") from None
    if got_dtype.hasobject:
        raise ValueError("holds Python objects; only numbers are read (refused)")
    if dtype is not None and got_dtype != dtype:
        raise ValueError(f"has dtype {got_dtype}, needs {dtype}")
    if shape is not None and tuple(got_shape) != tuple(shape):
        raise ValueError(f"has shape {tuple(got_shape)}, needs {tuple(shape)}")
    count = 1
    for n in got_shape:
        count *= int(n)
    if max_elements is not None and count > max_elements:
        raise ValueError(f"declares {count:,} elements, more than it can hold; refused")
    nbytes = count * got_dtype.itemsize
    left = size - fh.tell()
    if left < nbytes:
        raise ValueError(f"is truncated ({left:,} bytes for {nbytes:,})")
    if trailing is not None and left > nbytes + trailing:
        raise ValueError(f"declares an array of {nbytes:,} bytes in {left:,}; refused")
    raw = fh.read(nbytes)
    if len(raw) != nbytes:
        raise ValueError("is truncated")
    arr = np.frombuffer(raw, dtype=got_dtype).reshape(got_shape, order="F" if fortran else "C")
    return np.array(arr, order="C")  # (a copy; ascontiguousarray would make a 0-d array 1-d)


def atomic_write(p: pathlib.Path, write: Callable[[Any], None], *, overwrite: bool,
                 error: type[NSTError] = ImageError) -> pathlib.Path:
    """Create the parent, write through ``write(file)`` to a temp file beside ``p``, rename it over ``p``.

    Args:
      p: destination.
      write: called with the open binary temp file.
      overwrite: replace an existing ``p`` (else ``error``).
      error: the NSTError subclass raised for a user-facing failure.

    Returns:
      ``p``.
    """
    name = _name(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"{name}: cannot create the output directory ({_one_line(e)})") from None
    clean_stale(p, p.suffix)
    tmp = temp_path(p, p.suffix)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise error(f"{name}: cannot write ({_one_line(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        if not overwrite and (p.exists() or p.is_symlink()):
            raise error(f"{name}: already exists; pass --overwrite to replace it")
        os.replace(tmp, p)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise error(f"{name}: cannot write ({_one_line(e)})") from e
        raise
    return p


def probe_writable(path: PathLike, *, error: type[NSTError] = ImageError) -> None:
    """Prove that a file can be created where ``path`` will go, by creating and removing one.

    ``os.access`` says yes to root on a read-only mount and in ``/proc``; only trying tells. The
    nearest existing ancestor is probed (missing directories are created later, when writing).

    Raises:
      error: one line naming the path and the reason.
    """
    p = pathlib.Path(path)
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise error(f"{_name(p)}: cannot create the output directory, {_name(ancestor)} is a file")
    try:
        fd, tmp = tempfile.mkstemp(dir=ancestor, prefix=".nst-jax-probe-")
    except OSError as e:
        raise error(f"{_name(p)}: cannot write in {_name(ancestor)} ({_one_line(e)})") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _key(path: PathLike) -> tuple:
    """What identifies a file: (device, inode) when it exists, else its resolved path."""
    p = pathlib.Path(path)
    try:
        st = p.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(p.expanduser().resolve(strict=False)))


def refuse_clashes(inputs: Mapping[str, Optional[PathLike]], outputs: Mapping[str, Optional[PathLike]]) -> None:
    """Refuse, before any work, an output that is one of the inputs or another output.

    Compared by device and inode where the file exists (hard links and symlinks included), else
    by resolved path. This holds even with ``--overwrite``: replacing the content image with the
    result, or writing the montage over the result, is never what was meant.

    Args:
      inputs: label -> path ("content", "style 2", "--content-mask", ...); None entries ignored.
      outputs: label -> path ("-o", "--montage", "checkpoint", ...); None entries ignored.

    Raises:
      NSTError: one line naming both.
    """
    seen_in: dict[Any, str] = {}
    for label, path in inputs.items():
        if path is not None:
            seen_in.setdefault(_key(path), label)
    seen_out: dict[tuple, str] = {}
    for label, path in outputs.items():
        if path is None:
            continue
        k = _key(path)
        if k in seen_in:
            raise NSTError(f"{label} {_name(path)} is the {seen_in[k]} input; choose another output path")
        if k in seen_out:
            raise NSTError(f"{label} {_name(path)} is also the {seen_out[k]} output; give each output its own path")
        seen_out[k] = label
