"""Checkpoints of a run: the whole loop state, so a resumed run ends exactly where an uninterrupted one would.

One ``.npz`` file (written atomically): every leaf of ``loop.LoopState`` (image, optimiser
state, best iterate, iteration and evaluation counters), the losses so far, and a JSON header with
the config, the seed (the only randomness is the start image, drawn from it), the weights'
fingerprint, the image shapes, the state's tree paths and the files the run writes. Resuming
checks all of them and refuses a checkpoint made with other weights or another config (the
iteration count and chunk size may differ).

A checkpoint may come from anywhere, so reading one trusts nothing: it must be a zip of ``.npy``
members (never unpickled: ``allow_pickle`` stays off), each member's declared size and its array
header (shape, dtype) are checked against this run's state before its bytes are read, and the
JSON header's keys and types are checked. Every failure is a ``CheckpointError`` naming the
problem.
"""

from __future__ import annotations

import io
import json
import pathlib
import zipfile
from typing import Any, Optional, Sequence

import jax
import numpy as np

from ..program.config import ALIASES, StyleConfig
from ..errors import NSTError
from ..files import atomic_write, read_npy

FORMAT = "nst-jax-checkpoint"
VERSION = 1
# Fields a resumed run may change: how long it runs and how it is chunked.
MUTABLE_FIELDS = ("iterations", "chunk_size")
# The JSON header: config, paths and a few numbers. A larger one is not ours.
MAX_HEADER_BYTES = 4 * 2**20
# The header's keys and their JSON types ("outputs" and "paths" are newer: optional).
_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str, "version": int, "iteration": int, "seed": int, "weights_fingerprint": str,
    "content_shape": list, "config": dict, "leaves": int,
}  # fmt: skip


class CheckpointError(NSTError):
    """A checkpoint that cannot be used to resume this run."""


def _config_dict(config: StyleConfig) -> dict:
    d = config.to_dict()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in MUTABLE_FIELDS}


def _paths(tree: Any) -> list[str]:
    """The state's structure as its leaves' key paths (stable across JAX versions, unlike str(treedef))."""
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def save(path: str | pathlib.Path, state: Any, losses: np.ndarray, *, config: StyleConfig, seed: int,
         weights_fingerprint: str, content_shape: tuple[int, ...], outputs: Sequence[str] = (),
         overwrite: bool = True, scales_done: Sequence[tuple[int, int]] = ()) -> pathlib.Path:
    """Write a checkpoint atomically.

    Args:
      path: destination (``.npz``).
      state: a ``loop.LoopState`` (device or host arrays) of the scale being optimised.
      losses: the losses of every iteration so far (every scale's, in order).
      config, seed, weights_fingerprint, content_shape: what a resume must match (``content_shape``:
        the final working size, under coarse-to-fine too).
      outputs: the files this run writes (resolved paths); a resumed run may replace these.
      overwrite: replace an existing checkpoint.
      scales_done: under coarse-to-fine, (losses recorded, evaluations made) of each finished
        scale; ``state`` belongs to the next one (scale index ``len(scales_done)``).

    Returns:
      The path written.
    """
    leaves = jax.tree.leaves(state)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "iteration": int(np.asarray(state.step)),
        "seed": int(seed),
        "weights_fingerprint": weights_fingerprint,
        "content_shape": list(content_shape),
        "config": _config_dict(config),
        "paths": _paths(state),
        "leaves": len(leaves),
        "outputs": [str(o) for o in outputs],
        "scale": len(scales_done),
        "scales_done": [[int(n), int(e)] for n, e in scales_done],
    }
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8), losses=np.asarray(losses, np.float32),
             **arrays)  # type: ignore[arg-type]  # (numpy's stub types **kwds as savez's flags)
    data = buf.getvalue()
    return atomic_write(pathlib.Path(path), lambda f: f.write(data), overwrite=overwrite, error=CheckpointError)


def _read_member(zf: zipfile.ZipFile, key: str, name: str, *, shape: Optional[tuple[int, ...]] = None,
                 dtype: Optional[np.dtype] = None, max_elements: Optional[int] = None) -> np.ndarray:
    """One ``.npy`` member, its declared sizes and array header checked before its data are read."""
    member = f"{key}.npy"
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise CheckpointError(f"{name}: not an nst-jax checkpoint ({member} is missing)") from None
    with zf.open(info) as fh:
        try:
            return read_npy(fh, info.file_size, shape=shape, dtype=dtype, max_elements=max_elements, trailing=4096)
        except ValueError as err:
            raise CheckpointError(f"{name}: {member} {err}") from None


def _open(path: str | pathlib.Path) -> tuple[pathlib.Path, str, zipfile.ZipFile]:
    p = pathlib.Path(path)
    name = str(p)
    if not p.is_file():
        raise CheckpointError(f"{name}: no such checkpoint")
    try:
        return p, name, zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{name}: not an nst-jax checkpoint (not an .npz archive: {type(err).__name__})") from None


def _header(zf: zipfile.ZipFile, name: str) -> dict:
    raw = _read_member(zf, "header", name, dtype=np.dtype(np.uint8), max_elements=MAX_HEADER_BYTES)
    if raw.ndim != 1:
        raise CheckpointError(f"{name}: its header is not a byte string")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{name}: its header is not JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: its header is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{name}: not an nst-jax checkpoint (version {VERSION})")
    for key, kind in _HEADER_TYPES.items():
        if key not in header:
            raise CheckpointError(f"{name}: its header has no {key!r}; the file is damaged")
        value = header[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(f"{name}: its header's {key!r} is a {type(value).__name__}; the file is damaged")
    for key in ("outputs", "paths"):
        if key in header and not (isinstance(header[key], list) and all(isinstance(v, str) for v in header[key])):
            raise CheckpointError(f"{name}: its header's {key!r} is not a list of strings; the file is damaged")
    if not (0 <= header["iteration"] and 0 <= header["leaves"] <= 10_000):
        raise CheckpointError(f"{name}: its header's counts are out of range; the file is damaged")
    # coarse-to-fine (newer: optional, a single scale when absent)
    header.setdefault("scale", 0)
    header.setdefault("scales_done", [])
    scale, done = header["scale"], header["scales_done"]

    def count(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31

    if (not count(scale) or scale > 64 or not isinstance(done, list) or len(done) != scale
            or not all(isinstance(d, list) and len(d) == 2 and count(d[0]) and count(d[1]) for d in done)):
        raise CheckpointError(f"{name}: its header's scale fields are out of range; the file is damaged")
    return header


def read_header(path: str | pathlib.Path) -> dict:
    """The checked JSON header of a checkpoint (no arrays are read).

    Raises:
      CheckpointError: not a readable nst-jax checkpoint.
    """
    _, name, zf = _open(path)
    with zf:
        try:
            return _header(zf, name)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise CheckpointError(f"{name}: not a readable nst-jax checkpoint ({type(err).__name__})") from None


def load(path: str | pathlib.Path, template: Any, *, config: StyleConfig, seed: int, weights_fingerprint: str,
         content_shape: tuple[int, ...]) -> tuple[Any, np.ndarray, dict]:
    """Read a checkpoint and check it belongs to this run.

    Args:
      path: the checkpoint.
      template: a fresh ``LoopState`` of this run (gives the pytree structure, shapes and dtypes),
        or, for a coarse-to-fine run, a function from the header's scale index to that scale's
        fresh ``LoopState`` (an index it cannot make a state for raises ``CheckpointError``).
      config, seed, weights_fingerprint, content_shape: this run's; any mismatch is refused.

    Returns:
      (state, losses so far, header).
    """
    _, name, zf = _open(path)
    with zf:
        try:
            header = _header(zf, name)
            if header["weights_fingerprint"] != weights_fingerprint:
                raise CheckpointError(f"{name}: made with other weights (fingerprint {header['weights_fingerprint'][:12]}, "
                                      f"these are {weights_fingerprint[:12]}); resume with the same --weights")
            mine = _config_dict(config)
            # an older checkpoint names some formulas by their programs ("matlab"): read them as now
            theirs = {k: ALIASES.get(k, {}).get(v, v) if isinstance(v, str) else v for k, v in header["config"].items()}
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if diff:
                shown = ", ".join(f"{k} {header['config'].get(k)!r} -> {mine.get(k)!r}" for k in diff[:4])
                raise CheckpointError(f"{name}: made with another config ({shown}); resume with the same preset and options")
            if header["seed"] != seed:
                raise CheckpointError(f"{name}: made with --seed {header['seed']}, not {seed}")
            if list(header["content_shape"]) != list(content_shape):
                raise CheckpointError(f"{name}: made at {header['content_shape'][:2]}, this run is {list(content_shape[:2])}")
            if callable(template):
                template = template(header["scale"])
            t_leaves, treedef = jax.tree.flatten(template)
            if header["leaves"] != len(t_leaves) or header.get("paths", _paths(template)) != _paths(template):
                raise CheckpointError(f"{name}: its optimiser state does not fit this run")
            leaves = [_read_member(zf, f"leaf_{i}", name, shape=np.shape(t), dtype=np.asarray(t).dtype)
                      for i, t in enumerate(t_leaves)]
            n_losses = sum(n for n, _ in header["scales_done"]) + header["iteration"]
            losses = _read_member(zf, "losses", name, shape=(n_losses,), dtype=np.dtype(np.float32))
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointError(f"{name}: not a readable nst-jax checkpoint ({type(err).__name__})") from None
    state = jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
    return state, losses, header


# --------------------------------------------------------------------------------------------
# batches (``stylize --batch``, sweeps, several seeds): the finished groups' results, the running
# group's state and its loss rows, and the members, so a resumed batch ends as the uninterrupted one

# The per-member arrays of the finished groups, and their element types.
_DONE = {"done_images": np.float32, "done_best": np.float32, "done_rows": np.float32, "done_evals": np.int64,
         "done_steps": np.int64, "done_status": np.uint8}
STATUSES = ("done", "stopped", "nonfinite")


def save_batch(path: str | pathlib.Path, state: Any, rows: np.ndarray, done: Optional[dict[str, np.ndarray]], *,
               config: StyleConfig, members: list, weights_fingerprint: str, content_shape: tuple[int, ...],
               group_size: int, outputs: Sequence[str] = (), overwrite: bool = True) -> pathlib.Path:
    """Write a batch checkpoint atomically.

    Args:
      path: destination (``.npz``).
      state: the running group's stacked ``loop.LoopState``.
      rows: its loss rows so far (members × iterations × ``loop.row_size()``).
      done: the finished groups' results (keys of ``_DONE``: images, best images, rows, evaluations,
        steps, status codes into ``STATUSES``), or None.
      config: the batch's shared config; members: one JSON-able description per member (its swept
        values, seed and style), all of them, in order: a resume must match them.
      group_size: members optimised at once (the groups' size; the last may be smaller).
      weights_fingerprint, content_shape, outputs, overwrite: as ``save``.

    Returns:
      The path written.
    """
    leaves = jax.tree.leaves(state)
    k = 0 if done is None else len(done["done_evals"])
    header = {
        "format": FORMAT, "version": VERSION, "iteration": int(np.min(np.asarray(state.step))), "seed": 0,
        "weights_fingerprint": weights_fingerprint, "content_shape": list(content_shape),
        "config": _config_dict(config), "paths": _paths(state), "leaves": len(leaves),
        "outputs": [str(o) for o in outputs], "scale": 0, "scales_done": [],
        "batch": {"members": members, "done": k, "group": int(np.shape(state.step)[0]), "group_size": int(group_size),
                  "rows": int(np.shape(rows)[1]), "done_rows": 0 if done is None else int(np.shape(done["done_rows"])[1])},
    }
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    if done is not None:
        arrays.update({key: np.asarray(done[key], kind) for key, kind in _DONE.items()})
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8), losses=np.asarray(rows, np.float32),
             **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    return atomic_write(pathlib.Path(path), lambda f: f.write(data), overwrite=overwrite, error=CheckpointError)


def _check_batch_header(header: dict, name: str, members: list, group_size: Optional[int], max_rows: int) -> dict:
    batch = header.get("batch")
    if not isinstance(batch, dict):
        raise CheckpointError(f"{name}: made by a single run; resume it without --batch, a sweep or several seeds")
    if batch.get("members") != members:
        raise CheckpointError(f"{name}: made for other members (styles, swept values or seeds); resume with the "
                              "same styles and options")
    counts = [batch.get(k) for k in ("done", "group", "rows", "done_rows", "group_size")]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) or not counts[4]:
        raise CheckpointError(f"{name}: its header's batch counts are damaged")
    done, group, rows, done_rows, theirs = (int(c) for c in counts)  # type: ignore[arg-type]
    group_size = theirs if group_size is None else group_size
    n = len(members)
    if group_size != theirs or done % group_size or done + group != min(n, done + group_size) or rows > max_rows or done_rows > max_rows:
        raise CheckpointError(f"{name}: its groups do not fit this run ({done} done, a group of {group}, "
                              f"{n} members by {group_size}); resume with the same --batch-size")
    return batch


def load_batch(path: str | pathlib.Path, template: Any, *, config: StyleConfig, members: list,
               weights_fingerprint: str, content_shape: tuple[int, ...], group_size: Optional[int], max_rows: int
               ) -> tuple[Any, np.ndarray, Optional[dict[str, np.ndarray]], dict]:
    """Read a batch checkpoint and check it belongs to this run (as ``load``; every array's shape
    and type is known from the header and this run before its bytes are read).

    Args:
      template: a function from the running group's size to a fresh stacked ``LoopState``.
      members: this run's member descriptions (as given to ``save_batch``).
      group_size: members optimised at once (``--batch-size``; None: the checkpoint's);
        max_rows: the most loss rows a member can have (bounds the arrays read).

    Returns:
      (state, rows, done arrays or None, header).
    """
    _, name, zf = _open(path)
    with zf:
        try:
            header = _header(zf, name)
            if header["weights_fingerprint"] != weights_fingerprint:
                raise CheckpointError(f"{name}: made with other weights; resume with the same --weights")
            mine = _config_dict(config)
            diff = sorted(k for k in set(mine) | set(header["config"]) if mine.get(k) != header["config"].get(k))
            if diff:
                raise CheckpointError(f"{name}: made with another config ({', '.join(diff[:4])}); resume with the "
                                      "same preset and options")
            if list(header["content_shape"]) != list(content_shape):
                raise CheckpointError(f"{name}: made at {header['content_shape'][:2]}, this run is {list(content_shape[:2])}")
            batch = _check_batch_header(header, name, members, group_size, max_rows)
            template = template(batch["group"])
            t_leaves, treedef = jax.tree.flatten(template)
            if header["leaves"] != len(t_leaves) or header.get("paths") != _paths(template):
                raise CheckpointError(f"{name}: its optimiser state does not fit this run")
            leaves = [_read_member(zf, f"leaf_{i}", name, shape=np.shape(t), dtype=np.asarray(t).dtype)
                      for i, t in enumerate(t_leaves)]
            width = int(np.shape(template.best_loss)[0])
            row = _read_member(zf, "losses", name, dtype=np.dtype(np.float32), max_elements=width * max_rows * 64)
            if row.ndim != 3 or row.shape[:2] != (width, batch["rows"]):
                raise CheckpointError(f"{name}: its loss rows do not fit this run")
            done = None
            k, image = batch["done"], tuple(int(s) for s in content_shape)
            if k:
                shapes = {"done_images": (k, *image), "done_best": (k, *image), "done_rows": (k, batch["done_rows"], row.shape[2]),
                          "done_evals": (k,), "done_steps": (k,), "done_status": (k,)}
                done = {key: _read_member(zf, key, name, shape=shapes[key], dtype=np.dtype(kind))
                        for key, kind in _DONE.items()}
                if int(done["done_status"].max()) >= len(STATUSES):
                    raise CheckpointError(f"{name}: its status codes are damaged")
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointError(f"{name}: not a readable nst-jax checkpoint ({type(err).__name__})") from None
    state = jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
    return state, row, done, header
