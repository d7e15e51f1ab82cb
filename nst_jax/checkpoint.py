"""Checkpoints of a run: the whole loop state, so a resumed run ends exactly where an uninterrupted one would.

One ``.npz`` file (written atomically): every leaf of ``transfer.LoopState`` (image, optimiser
state, best iterate, iteration and evaluation counters), the losses so far, and a JSON header with
the config, the seed (the only randomness is the start image, drawn from it), the weights'
fingerprint and the image shapes. Resuming checks all of them and refuses a checkpoint made with
other weights or another config (the iteration count and chunk size may differ).
"""

from __future__ import annotations

import io
import json
import pathlib
import zipfile
from typing import Any

import jax
import numpy as np

from .config import StyleConfig
from .errors import NSTError
from .image import write_file_atomic

FORMAT = "nst-jax-checkpoint"
VERSION = 1
# Fields a resumed run may change: how long it runs and how it is chunked.
MUTABLE_FIELDS = ("iterations", "chunk_size")


class CheckpointError(NSTError):
    """A checkpoint that cannot be used to resume this run."""


def _config_dict(config: StyleConfig) -> dict:
    d = config.to_dict()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in MUTABLE_FIELDS}


def save(path: str | pathlib.Path, state: Any, losses: np.ndarray, *, config: StyleConfig, seed: int,
         weights_fingerprint: str, content_shape: tuple[int, ...], overwrite: bool = True) -> pathlib.Path:
    """Write a checkpoint atomically.

    Args:
      path: destination (``.npz``).
      state: a ``transfer.LoopState`` (device or host arrays).
      losses: the losses of every iteration so far.
      config, seed, weights_fingerprint, content_shape: what a resume must match.

    Returns:
      The path written.
    """
    leaves, treedef = jax.tree.flatten(state)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "iteration": int(np.asarray(state.step)),
        "seed": int(seed),
        "weights_fingerprint": weights_fingerprint,
        "content_shape": list(content_shape),
        "config": _config_dict(config),
        "treedef": str(treedef),
        "leaves": len(leaves),
    }
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8), losses=np.asarray(losses, np.float32),
             **arrays)
    return write_file_atomic(path, buf.getvalue(), overwrite=overwrite)


def load(path: str | pathlib.Path, template: Any, *, config: StyleConfig, seed: int, weights_fingerprint: str,
         content_shape: tuple[int, ...]) -> tuple[Any, np.ndarray, dict]:
    """Read a checkpoint and check it belongs to this run.

    Args:
      path: the checkpoint.
      template: a fresh ``LoopState`` of this run (gives the pytree structure and shapes).
      config, seed, weights_fingerprint, content_shape: this run's; any mismatch is refused.

    Returns:
      (state, losses so far, header).
    """
    p = pathlib.Path(path)
    name = str(p)
    if not p.is_file():
        raise CheckpointError(f"{name}: no such checkpoint")
    try:
        with np.load(p, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            losses = np.asarray(data["losses"])
            leaves = [np.asarray(data[f"leaf_{i}"]) for i in range(int(header["leaves"]))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as err:
        raise CheckpointError(f"{name}: not a readable nst-jax checkpoint ({type(err).__name__})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{name}: not an nst-jax checkpoint (version {VERSION})")
    if header["weights_fingerprint"] != weights_fingerprint:
        raise CheckpointError(f"{name}: made with other weights (fingerprint {header['weights_fingerprint'][:12]}, "
                              f"these are {weights_fingerprint[:12]}); resume with the same --weights")
    mine = _config_dict(config)
    diff = sorted(k for k in set(mine) | set(header["config"]) if mine.get(k) != header["config"].get(k))
    if diff:
        shown = ", ".join(f"{k} {header['config'].get(k)!r} -> {mine.get(k)!r}" for k in diff[:4])
        raise CheckpointError(f"{name}: made with another config ({shown}); resume with the same preset and options")
    if header["seed"] != seed:
        raise CheckpointError(f"{name}: made with --seed {header['seed']}, not {seed}")
    if list(header["content_shape"]) != list(content_shape):
        raise CheckpointError(f"{name}: made at {header['content_shape'][:2]}, this run is {list(content_shape[:2])}")
    t_leaves, treedef = jax.tree.flatten(template)
    if str(treedef) != header["treedef"] or len(t_leaves) != len(leaves) or any(
        a.shape != np.shape(b) for a, b in zip(leaves, t_leaves)
    ):
        raise CheckpointError(f"{name}: its optimiser state does not fit this run")
    state = jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
    return state, losses, header
