"""HDF5 from strangers: only data stored in the file itself, and sizes checked before bytes are read.

HDF5 can keep a dataset's bytes outside the file (external storage: ``create_dataset(...,
external=[(path, offset, size)])``; virtual datasets that map other files' datasets) and can
point a name elsewhere (external links to other files; soft links to any path). h5py follows
all of them silently, so a "weights file" could copy ``/proc/self/environ`` or a key into the
converted weights. Every reader in this package reaches groups, datasets and attributes through
this module, which:

* follows hard links only, refusing soft and external links by name (``child``, ``walk``);
* accepts only compact, contiguous or chunked datasets with no external storage, no virtual
  mapping and only HDF5's built-in filters (a third-party filter is a shared library loaded by
  name: refused) (``check_dataset``);
* checks a dataset's declared shape and dtype, and a chunk's size, before reading a byte
  (``read``), and an attribute's declared size before reading it (``attr``);
* bounds the walk over a file's objects in depth and count, so a crafted file cannot make it
  run for ever.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional

import h5py
import numpy as np

from .common import fail

# HDF5's own filters (and h5py's built-in LZF). Anything else would be a plugin library loaded
# from HDF5_PLUGIN_PATH because the file names its filter id.
_BUILTIN_FILTERS = {
    h5py.h5z.FILTER_DEFLATE: "gzip",
    h5py.h5z.FILTER_SHUFFLE: "shuffle",
    h5py.h5z.FILTER_FLETCHER32: "fletcher32",
    h5py.h5z.FILTER_SZIP: "szip",
    h5py.h5z.FILTER_NBIT: "nbit",
    h5py.h5z.FILTER_SCALEOFFSET: "scaleoffset",
    32000: "lzf",
}
_LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked"}
# An attribute holds names and a few numbers: a few MB at most even for 1000-layer models.
MAX_ATTR_BYTES = 16 * 2**20
# Walks over a file's objects (Keras 3 layouts): deeper or larger than any real model file.
MAX_DEPTH = 24
MAX_OBJECTS = 50_000


def _refuse_link(link: Any, path: str, label: str) -> None:
    if isinstance(link, h5py.ExternalLink):
        raise fail(
            f"{label}: {path} is an external link to {link.filename}:{link.path}; nst-jax reads only "
            "data stored in the weights file itself"
        )
    if isinstance(link, h5py.SoftLink):
        raise fail(
            f"{label}: {path} is a soft link to {link.path}; nst-jax follows no links in weights files "
            "(re-export the file without links)"
        )
    if not isinstance(link, h5py.HardLink):
        raise fail(f"{label}: {path} is a {type(link).__name__}; nst-jax follows no links in weights files")


def child(group: h5py.Group, path: str, label: str) -> Optional[Any]:
    """The object at ``path`` below ``group``, following hard links only.

    Args:
      group: where to start.
      path: "a/b/c" (Keras' weight names contain slashes: each part is a group).
      label: the file's name, for messages.

    Returns:
      The group or dataset, or None if a part of the path does not exist.

    Raises:
      WeightsError: a part of the path is a soft, external or user-defined link.
    """
    node = group
    done = []
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, h5py.Group):
            return None
        done.append(part)
        link = node.get(part, getlink=True)
        if link is None:
            return None
        _refuse_link(link, "/".join(done), label)
        node = node[part]
    return node


def walk(group: h5py.Group, label: str) -> Iterator[tuple[str, Any]]:
    """Every object below ``group`` as (relative path, object), depth first in name order.

    Only hard links are followed (a soft or external link is refused by name); depth and count
    are bounded (``MAX_DEPTH``, ``MAX_OBJECTS``), which also ends hard-link cycles.
    """
    count = 0
    stack: list[tuple[str, h5py.Group, int]] = [("", group, 0)]
    while stack:
        prefix, g, depth = stack.pop()
        names = sorted(g.keys(), reverse=True)
        count += len(names)
        if count > MAX_OBJECTS:
            raise fail(f"{label}: more than {MAX_OBJECTS} HDF5 objects; not a weights file nst-jax reads")
        for name in names:
            path = f"{prefix}{name}"
            _refuse_link(g.get(name, getlink=True), path, label)
            obj = g[name]
            yield path, obj
            if isinstance(obj, h5py.Group):
                if depth + 1 > MAX_DEPTH:
                    raise fail(f"{label}: HDF5 groups nested deeper than {MAX_DEPTH}; not a weights file nst-jax reads")
                stack.append((path + "/", obj, depth + 1))


def check_dataset(ds: h5py.Dataset, label: str) -> None:
    """Refuse a dataset whose bytes are not plainly stored in this file.

    Raises:
      WeightsError: virtual dataset, external storage, another layout, a non-built-in filter, a
        non-numeric dtype, or chunks larger than the dataset could need. One line naming it.
    """
    name = ds.name
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.VIRTUAL or ds.is_virtual:
        raise fail(f"{label}: dataset {name} is a virtual dataset (its data live in other files); refused")
    n_external = dcpl.get_external_count()
    if n_external:
        files = ", ".join(dcpl.get_external(i)[0].decode("utf-8", "replace") for i in range(min(n_external, 3)))
        raise fail(f"{label}: dataset {name} keeps its data in external file(s) {files}; refused (nst-jax reads "
                    "only data stored in the weights file itself)")
    if layout not in _LAYOUTS:
        raise fail(f"{label}: dataset {name} has an unknown storage layout ({layout}); refused")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in _BUILTIN_FILTERS:
            raise fail(f"{label}: dataset {name} uses HDF5 filter {code}, which is not built in (it would load "
                        "a plugin library); refused")
    if ds.dtype.kind not in "fiub":
        raise fail(f"{label}: dataset {name} has dtype {ds.dtype}, not numbers; refused")
    if ds.chunks is not None:
        chunk_bytes = math.prod(ds.chunks) * ds.dtype.itemsize
        if chunk_bytes > max(2 * math.prod(ds.shape) * ds.dtype.itemsize, 2**20):
            raise fail(f"{label}: dataset {name} declares chunks of {chunk_bytes:,} bytes for "
                        f"{math.prod(ds.shape):,} elements; refused")


def read(ds: h5py.Dataset, expected: tuple[int, ...], label: str, what: str) -> np.ndarray:
    """Read a dataset after checking where its bytes live, its shape and its dtype.

    Args:
      ds: the dataset.
      expected: the shape it must have.
      label: the file's name; what: e.g. "layer conv1_1: kernel", for messages.

    Returns:
      The array (its own dtype; ``check_params`` converts floats to float32 and refuses integers).

    Raises:
      WeightsError: see ``check_dataset``; a shape other than ``expected``; an integer dtype.
    """
    check_dataset(ds, label)
    if tuple(ds.shape) != tuple(expected):
        raise fail(f"{what} has shape {tuple(ds.shape)}, expected {tuple(expected)} in {label}")
    if ds.dtype.kind != "f":
        raise fail(f"{what} has dtype {ds.dtype} in {label}; weights must be floating point (an integer array "
                    "means a quantised or damaged file)")
    return ds[()]


def attr(obj: Any, name: str, label: str, default: Any = None) -> Any:
    """An attribute's value after checking its declared size (``MAX_ATTR_BYTES``).

    Returns:
      The value, or ``default`` when the attribute does not exist.
    """
    if name not in obj.attrs:
        return default
    aid = h5py.h5a.open(obj.id, name.encode())
    dtype = aid.dtype
    itemsize = dtype.itemsize if dtype.kind != "O" else 8
    if math.prod(aid.shape or ()) * max(itemsize, 1) > MAX_ATTR_BYTES:
        raise fail(f"{label}: attribute {name!r} of {obj.name} declares shape {aid.shape} of {dtype}; "
                    "too large for a weights file, refused")
    return obj.attrs[name]
