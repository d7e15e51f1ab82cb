"""One image across many devices: the image's height split over a device mesh.

The peers split VGG's *layers* across GPUs (jcjohnson's ``-multigpu_strategy``), which their own
maintainers measured slower than one card. Here every device holds a band of rows of the image,
of every activation and of the optimiser state (Adam's moments, the L-BFGS history, the best
iterate), and XLA's SPMD partitioner places the rest: each 3×3 convolution exchanges one halo row
with its neighbours (``collective-permute``), a Gram matrix is a per-band sum plus an all-reduce,
L-BFGS's dot products are all-reduces. No device ever holds the whole image inside the step (a
test counts the all-gathers of the compiled program: none). Small arrays (the weights, the style
targets, the loss weights) are replicated.

A mesh axis is named ``"spatial"``; :func:`stylize_many`'s batch axis is ``"batch"``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..errors import ConfigError

__all__ = ["BATCH", "SPATIAL", "batch_mesh", "replicate", "shard_batch", "spatial_mesh"]

SPATIAL = "spatial"
BATCH = "batch"


def spatial_mesh(devices: Sequence[jax.Device], height: int) -> Mesh:
    """A one-axis mesh over ``devices`` for an image ``height`` rows tall.

    Args:
      devices: the devices (at least one; each gets about ``height / len(devices)`` rows).
      height: the image's height in pixels.

    Returns:
      the mesh, its one axis named ``"spatial"``.

    Raises:
      ConfigError: no devices, a device listed twice, or fewer than 8 rows a device (a band must
        be taller than the pooling stride of VGG's deepest layer for the halos to stay halos).
    """
    devices = list(devices)
    if not devices:
        raise ConfigError("at least one device is needed")
    if len({d.id for d in devices}) != len(devices):
        raise ConfigError("a device is listed twice")
    if height < 8 * len(devices):
        raise ConfigError(f"an image {height} rows tall cannot be split over {len(devices)} devices "
                          f"(at least 8 rows each); use fewer devices or a larger size")
    return Mesh(np.asarray(devices), (SPATIAL,))


def batch_mesh(devices: Sequence[jax.Device], spatial: int, height: int) -> Mesh:
    """A ``batch × spatial`` mesh: ``len(devices) / spatial`` groups of ``spatial`` devices, each
    group optimising its members with their rows split over the group.

    Args:
      devices: the devices (a multiple of ``spatial``).
      spatial: devices per image (1: the batch alone is split).
      height: the image's height in pixels.

    Returns:
      the mesh, axes ``("batch", "spatial")``.

    Raises:
      ConfigError: ``spatial`` does not divide the device count, or the rows are too few.
    """
    devices = list(devices)
    if spatial < 1 or len(devices) % spatial:
        raise ConfigError(f"{len(devices)} devices cannot be grouped {spatial} to an image")
    spatial_mesh(devices[:spatial], height)  # the same checks on one group
    return Mesh(np.asarray(devices).reshape(len(devices) // spatial, spatial), (BATCH, SPATIAL))


def shard_batch(tree: Any, mesh: Mesh, image_hw: tuple[int, int]) -> Any:
    """Place a batched tree (leading axis: members) on a ``batch × spatial`` mesh: members over
    ``"batch"``, and the rows of every image-sized leaf (…, H, W, 3) over ``"spatial"``.

    Args:
      tree: a pytree whose leaves have the batch axis first (a multiple of the mesh's batch size).
      mesh: from :func:`batch_mesh`.
      image_hw: the image's (H, W).

    Returns:
      the tree on the mesh.
    """
    shape = (int(image_hw[0]), int(image_hw[1]), 3)

    def place(x: Any) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim >= 4 and tuple(x.shape[-3:]) == shape:  # image-sized: rows over "spatial"
            spec = PartitionSpec(BATCH, *([None] * (x.ndim - 4)), SPATIAL, None, None)
        else:
            spec = PartitionSpec(*[BATCH][: x.ndim])
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(place, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` replicated on every device of ``mesh``.

    Args:
      tree: a pytree of arrays (weights, targets, values).
      mesh: the mesh.

    Returns:
      the tree on the mesh.
    """
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
