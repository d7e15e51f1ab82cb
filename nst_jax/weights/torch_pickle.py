"""torch state dicts without torch: a restricted unpickler that builds only validated tensor references.

Nothing in the file can run code (``find_class`` allows only tensor rebuilders, storage types and
``OrderedDict``), nothing can change a reference after it is validated (BUILD is refused), and
every array is bounds-checked against its storage where it is made. Zip entries are compared
with the bytes they must hold before they are inflated, and each storage is read once.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import math
import pathlib
import pickle
import zipfile
from typing import Any, Callable, Optional

import numpy as np

from .common import TORCH_LEGACY_MAGIC, fail

# --------------------------------------------------------------------------------------------
# torch state dicts without torch: a restricted unpickler
# --------------------------------------------------------------------------------------------


def _refuse_build(self: Any, state: Any) -> None:
    """Pickle's BUILD opcode would set fields on an object after it was made and validated
    (``inst.__setstate__(state)``, or a write into its ``__dict__``). Our reference types refuse
    it. It must sit in each class body: a frozen, slotted dataclass otherwise gets its own
    ``__setstate__`` that sets the fields from any iterable (a dict's keys included)."""
    raise pickle.UnpicklingError(f"refusing to modify a {type(self).__name__.lstrip('_')} after it was built (BUILD opcode)")


@dataclasses.dataclass(frozen=True, slots=True)
class _TorchDType:
    """A torch element type: a numpy dtype name, or 'bfloat16' (no numpy equivalent)."""

    name: str
    __setstate__ = _refuse_build

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
_KNOWN_DTYPES = frozenset(_STORAGE_TYPES.values()) | frozenset(_TORCH_DTYPES.values())


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are read only if a needed tensor uses it."""

    key: str
    dtype: _TorchDType
    numel: int  # elements of this (view of the) storage
    base: int = 0  # element offset into the root storage (legacy storage views)
    __setstate__ = _refuse_build


@dataclasses.dataclass(frozen=True, slots=True)
class TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Optional[_TorchDType] = None  # _rebuild_tensor_v3: dtype given apart from storage
    __setstate__ = _refuse_build


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(f"bad tensor {what}: {value!r}")
    if any(v < 0 for v in value):
        raise TypeError(f"negative tensor {what}: {value!r}")
    return tuple(value)


def _tensor_ref(storage: Any, offset: Any, size: Any, stride: Any, dtype: Any = None) -> TensorRef:
    if not isinstance(storage, _StorageRef):
        raise TypeError("tensor storage is not a storage reference")
    if not isinstance(offset, int) or offset < 0:
        raise TypeError(f"bad storage offset {offset!r}")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise TypeError("tensor size and stride differ in length")
    if dtype is not None and not isinstance(dtype, _TorchDType):
        raise TypeError("bad tensor dtype")
    return TensorRef(storage, offset, size, stride, dtype)


def _rebuild_tensor(storage, storage_offset, size, stride):  # old torch (< 0.4)
    return _tensor_ref(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _tensor_ref(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    return _tensor_ref(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, TensorRef):
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


# Every global a pickle may name, and nothing else (``tests/test_hostile.py`` holds the exact
# list): none of them runs code; each builds a dict, a tensor reference or a dtype name.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("collections", "OrderedDict"), ("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")}
    | {("torch._utils", name) for name in _REBUILDERS}
    | {(module, name) for module in ("torch", "torch.cuda") for name in _STORAGE_TYPES}
    | {("torch", name) for name in _TORCH_DTYPES}
)


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
        if (module, name) not in ALLOWED_GLOBALS:
            raise fail(
                f"{self.label}: refusing to unpickle {module}.{name}: only a state dict of tensors is allowed "
                f"(the file may run code when loaded); load it in PyTorch yourself and save model.state_dict() instead"
            )
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
        raise fail(
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
            raise fail(f"{self.label}: refusing to load a persistent object of type {typename!r:.40}: only tensors are allowed")
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


# data.pkl of a VGG or ResNet50 state dict is a few tens of kB; anything near this is not one.
_MAX_PICKLE_BYTES = 64 * 2**20


class TorchFile:
    """A torch.save file opened without torch: the (lazy) object plus storage access.

    Storage bytes are read only for the tensors asked for (``plan`` then ``array``), each
    storage once, and never more than those tensors reach into. In the zip format an entry's
    declared size must equal its storage's size before anything is inflated (a 2 MB file whose
    entry inflates to 2 GiB is refused, not inflated).
    """

    def __init__(self, path: pathlib.Path, label: str, kind: str, *, zf: Optional[zipfile.ZipFile] = None,
                 data: Optional[bytes] = None) -> None:
        self.path, self.label, self.kind = path, label, kind
        self.little = True
        self._cache: dict[str, bytes] = {}
        self._planned: dict[str, int] = {}
        self._data = data  # a legacy file already in memory (a wheel's member)
        if kind == "zip":
            # one archive, opened once: a file with 200,000 extra entries was parsed again for
            # every storage (50 s)
            self._zf = zf if zf is not None else zipfile.ZipFile(self.path)
            check_entry_count(self._zf, label)
            self._open_zip(self._zf)
        else:
            self._open_legacy()

    # zip format (torch >= 1.6): <prefix>/data.pkl, <prefix>/data/<key>, <prefix>/byteorder
    def _open_zip(self, zf: zipfile.ZipFile) -> None:
        self._infos = {info.filename: info for info in zf.infolist()}
        pkls = [n for n in self._infos if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkls) != 1:
            raise NotTorch()
        self.prefix = pkls[0][: -len("data.pkl")]
        if self.prefix + "byteorder" in self._infos:
            self.little = _read_entry(zf, self._infos[self.prefix + "byteorder"], 16).strip() != b"big"
        info = self._infos[pkls[0]]
        if info.file_size > _MAX_PICKLE_BYTES:
            raise fail(f"{self.label}: its {pkls[0]} declares {info.file_size:,} bytes, far more than a state "
                        "dict's pickle; refused")
        self.obj, self.storages = self._unpickle_main(io.BytesIO(_read_entry(zf, info, info.file_size)))

    # legacy format: pickles of magic, protocol version, sys_info, the object, the storage
    # keys; then every storage as an 8-byte element count followed by its raw bytes.
    def sha256(self) -> str:
        """The SHA-256 of the legacy file's bytes (in memory or on disk); "" for a zip archive."""
        if self.kind == "zip":
            return ""
        h = hashlib.sha256()
        with self._legacy_file() as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def _legacy_file(self) -> Any:
        return io.BytesIO(self._data) if self._data is not None else open(self.path, "rb")

    def _open_legacy(self) -> None:
        size = len(self._data) if self._data is not None else self.path.stat().st_size
        with self._legacy_file() as f:
            magic = _RestrictedUnpickler(f, self.label).load()
            if magic != TORCH_LEGACY_MAGIC:
                raise NotTorch()
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
                    raise Truncated()
                (numel,) = np.frombuffer(header, dtype=f"{order}i8")
                if int(numel) != ref.numel:
                    raise pickle.UnpicklingError(f"storage {key} has {int(numel)} elements, expected {ref.numel}")
                self._offsets[key] = pos + 8
                pos += 8 + int(numel) * ref.dtype.itemsize
                if pos > size:
                    raise Truncated()

    def _unpickle_main(self, file: Any) -> tuple[Any, dict[str, _StorageRef]]:
        up = _RestrictedUnpickler(file, self.label)
        obj = up.load()
        return obj, up.storages

    def _extent(self, t: Any) -> tuple[TensorRef, _TorchDType, int, int]:
        """Validate a tensor reference where its array is made: (ref, dtype, first byte, bytes needed).

        Every field is checked again here (types, non-negative offsets, sizes and strides, the
        storage view inside its root storage, the last element inside the view), so nothing the
        pickle did after building the reference can make the read leave the storage.
        """
        bad = pickle.UnpicklingError
        if not isinstance(t, TensorRef) or not isinstance(t.storage, _StorageRef):
            raise bad("not a tensor reference")
        view = t.storage
        root = self.storages.get(view.key) if isinstance(view.key, str) else None
        if root is None or not isinstance(root.dtype, _TorchDType) or view.dtype != root.dtype:
            raise bad("tensor storage does not match the file's storages")
        for what, v in (("storage offset", t.offset), ("storage view base", view.base), ("storage size", view.numel),
                        ("root storage size", root.numel)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(f"bad {what} {v!r:.40}")
        if view.base + view.numel > root.numel:
            raise bad("storage view reaches past its root storage")
        size, stride = _ints(t.size, "size"), _ints(t.stride, "stride")
        if len(size) != len(stride):
            raise bad("tensor size and stride differ in length")
        dtype = t.dtype if t.dtype is not None else view.dtype
        if not isinstance(dtype, _TorchDType) or dtype.name not in _KNOWN_DTYPES:
            raise bad("bad tensor dtype")
        start = view.base * view.dtype.itemsize
        view_bytes = view.numel * view.dtype.itemsize
        if math.prod(size) == 0:
            return t, dtype, start, start
        last = t.offset + sum((n - 1) * st for n, st in zip(size, stride))
        if (last + 1) * dtype.itemsize > view_bytes:
            raise bad("tensor reaches past the end of its storage")
        return t, dtype, start, start + (last + 1) * dtype.itemsize

    def plan(self, refs: list[Any]) -> None:
        """Record the tensors that will be read, so each storage is read once, as far as they need."""
        for t in refs:
            _, _, _, need = self._extent(t)
            key = t.storage.key
            self._planned[key] = max(self._planned.get(key, 0), need)

    def _storage_bytes(self, key: str, need: int) -> bytes:
        cached = self._cache.get(key)
        if cached is not None and len(cached) >= need:
            return cached
        need = max(need, self._planned.get(key, 0))
        root = self.storages[key]
        nbytes = root.numel * root.dtype.itemsize
        if self.kind == "zip":
            name = f"{self.prefix}data/{key}"
            info = self._infos.get(name)
            if info is None:
                raise pickle.UnpicklingError(f"storage {key} missing from the archive")
            if info.file_size != nbytes:
                # torch.save writes exactly the storage's bytes; compared before inflating anything.
                raise fail(f"{self.label}: archive entry {name} declares {info.file_size:,} bytes but its storage "
                            f"holds {nbytes:,}; refused (corrupt, or a zip bomb)")
            data = _read_entry(self._zf, info, need)
        else:
            with self._legacy_file() as f:
                f.seek(self._offsets[key])
                data = f.read(need)
        if len(data) < need:
            raise Truncated()
        self._cache[key] = data
        return data

    def array(self, t: TensorRef, axes: Optional[tuple[int, ...]] = None) -> np.ndarray:
        """Materialise a tensor as a C-contiguous numpy array honouring size/stride/offset.

        ``axes`` permutes the dimensions on the way (OIHW -> HWIO) within the one copy.
        """
        t, dtype, start, need = self._extent(t)
        order = "<" if self.little else ">"
        np_dtype = np.dtype(f"{order}u2") if dtype.name == "bfloat16" else np.dtype(dtype.name).newbyteorder(order)  # type: ignore[arg-type]
        if math.prod(t.size) == 0:
            view = np.zeros(t.size, np_dtype)
        else:
            data = self._storage_bytes(t.storage.key, need)
            flat = np.frombuffer(data, dtype=np_dtype, count=(need - start) // np_dtype.itemsize, offset=start)
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


# A torch zip holds data.pkl, byteorder, version and a storage a tensor (a ResNet50: ~330); a
# wheel a few dozen files. An archive with more entries than this is not one of them.
MAX_ZIP_ENTRIES = 10_000


def check_entry_count(zf: zipfile.ZipFile, label: str) -> None:
    """Refuse an archive with more than ``MAX_ZIP_ENTRIES`` entries (before any is read)."""
    n = len(zf.infolist())
    if n > MAX_ZIP_ENTRIES:
        raise fail(f"{label}: a zip archive of {n:,} entries, more than any weights file or wheel holds "
                    f"({MAX_ZIP_ENTRIES:,}); refused")


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """At most ``limit`` bytes of a zip entry, inflated only as far as they go."""
    with zf.open(info) as fh:
        return fh.read(limit)


class NotTorch(Exception):
    """The file is a zip or a pickle, but not one ``torch.save`` wrote."""


class Truncated(Exception):
    """The file ends before the bytes it declares."""


def tensor_dtype(ref: Any) -> str:
    """A tensor reference's element type ("float32", "uint8", ...), or "" when it is not a tensor."""
    if not isinstance(ref, TensorRef):
        return ""
    dtype = ref.dtype if ref.dtype is not None else ref.storage.dtype
    return dtype.name if isinstance(dtype, _TorchDType) else ""
