"""Checkpoints of a run: the whole loop state, so a resumed run ends exactly where an uninterrupted one would.

One ``.npz`` file (written atomically): every leaf of ``engine.LoopState`` (image, optimiser
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

from .config import ALIASES, StyleConfig
from .errors import NSTError
from .files import atomic_write, read_npy

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
      state: a ``engine.LoopState`` (device or host arrays) of the scale being optimised.
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
