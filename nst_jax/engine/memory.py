"""Memory estimates: what a run of a given size needs, against what the device has free.

The CLI calls ``memory_shortfall`` before any image is decoded (from the files' headers), and
``batching.default_batch_size`` sizes batches from ``estimate_bytes_per_result``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Sequence

import jax

from ..program.config import StyleConfig
from ..program.optimizers import OPTIMIZERS


# Per pixel of the content, what XLA's compiled chunk holds (CPU, default preset, direct
# convolutions; tests/test_many.py checks the model against it): Adam 2.44 kB in float32, 2.09 kB
# with --precision bf16, 2.81 kB with --remat. XLA's CPU backend keeps float32 copies around its
# bf16 convolutions (so bf16 saves 15 %, not half) and rematerialisation there keeps more, not less.
# Accelerators are expected to save more with both (bf16 activations, remat's fewer stored
# ones), but that is unmeasured (no GPU lent), so the model keeps the CPU's factors everywhere:
# it may refuse a run on a GPU that would fit (--skip-memory-check), never the other way round.
ACTIVATION_BYTES_PER_PIXEL = 320 * 4 * 2  # VGG19 up to conv5_1: ~320 floats a pixel, and their gradients
PRECISION_FACTOR = {"bf16": 0.85}
REMAT_FACTOR = 1.15


def estimate_bytes_per_result(height: int, width: int, config: StyleConfig) -> int:
    """A rough upper estimate of the memory one result needs while it is optimised.

    VGG19 activations up to conv5_1 are about 320 floats per input pixel; the backward pass keeps
    them and adds as much again for the gradients (scaled by ``PRECISION_FACTOR`` for bf16 and
    ``REMAT_FACTOR`` for remat, as measured); the image-sized state (the variable, Adam's moments,
    the best iterate, ...) is 8 images; an optimiser's own (L-BFGS: ``2 · memory``) come from
    ``optimizers.OPTIMIZERS``.

    Args:
      height, width: the content's working size.
      config: supplies the optimiser, its history, ``precision`` and ``remat``.

    Returns:
      Bytes.
    """
    pixels = height * width
    activations = ACTIVATION_BYTES_PER_PIXEL * PRECISION_FACTOR.get(config.precision, 1.0)
    if config.remat:
        activations *= REMAT_FACTOR
    bytes_ = pixels * activations + pixels * 3 * 4 * 8
    bytes_ += OPTIMIZERS[config.optimizer].state_images(config) * pixels * 3 * 4
    return int(bytes_)


def free_device_memory(device: Optional[jax.Device] = None) -> Optional[int]:
    """Free bytes on ``device`` (accelerator stats, or available RAM for the CPU); None if unknown."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU devices may not implement it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return available_ram()


def available_ram(meminfo: str = "/proc/meminfo") -> Optional[int]:
    """Bytes of RAM a new allocation can have without swapping: the kernel's ``MemAvailable``.

    Not ``MemFree`` (what ``sysconf(SC_AVPHYS_PAGES)`` gives): that counts the page cache, which the
    kernel hands back on demand, as used, and on a machine that has read a lot of files (a desktop,
    or after a test run) it is a small part of what is really available. Where there is no
    ``/proc/meminfo`` (macOS, Windows), psutil's ``available`` if installed, else ``SC_AVPHYS_PAGES``.

    Args:
      meminfo: the file to read (tests give a fake one).

    Returns:
      Bytes, or None when unknown.
    """
    try:
        with open(meminfo, "rb") as f:
            for line in f.read(1 << 16).decode("ascii", "replace").splitlines():
                key, _, rest = line.partition(":")
                if key.strip() == "MemAvailable":
                    value = rest.split()
                    scale = {"kb": 1024, "mb": 2**20, "gb": 2**30}.get(value[1].lower(), 1) if len(value) > 1 else 1
                    return int(value[0]) * scale
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - not installed, or no answer on this platform
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# What a run holds besides the per-pixel part: weights, Winograd kernels (~0.4 GB), XLA's compiler.
# Measured with scripts/bench_largest.py (BENCHMARKS.md, "The largest image"): peak RSS = ~1.45 GiB
# + 4.87 kB/pixel (default preset) or + 2.48 kB/pixel (Adam) on CPU, of which ~0.45 GiB is the
# Python process with JAX loaded (not in the free memory any more).
RUN_OVERHEAD_BYTES = 2**30


def estimate_run_bytes(height: int, width: int, config: StyleConfig, *,
                       style_shapes: Sequence[tuple[int, int]] = (), batch: int = 1, regions: int = 0,
                       decoded_pixels: int = 0, devices: int = 1, held_bytes: int = 0) -> int:
    """Every image-sized thing a run holds, not only the optimisation: what the memory check counts.

    Args:
      height, width: the content's working size.
      config: the run's config (optimiser, iterations).
      style_shapes: each style's working (H, W): its targets come from one forward pass at that size.
      batch: results optimised at once.
      regions: region masks (``--content-mask``): regions × H × W, resized to every layer.
      decoded_pixels: the largest input image in pixels (decoded at full size before resizing).
      devices: the image's rows split over this many devices (``sharding``): the optimisation's
        part is per device, the rest (host-side images, the one-off style pass) is not.
      held_bytes: what the caller keeps in host memory besides (video multi-pass: every frame).

    Returns:
      Bytes, a rough upper estimate: the larger of the optimisation (``estimate_bytes_per_result``
      per result, plus the losses array) and the largest style's forward pass (the targets are
      computed, and its activations freed, before the optimisation starts), plus the decoded and
      working images and the masks.
    """
    pixels = height * width
    per_result = estimate_bytes_per_result(height, width, config) + 4 * config.iterations  # + the losses
    style_pass = max([h * w * 320 * 4 for h, w in style_shapes], default=0)
    working = 12 * (pixels + sum(h * w for h, w in style_shapes))
    decoded = 24 * decoded_pixels  # Pillow's decode and the float32 copy
    masks = 2 * 4 * regions * pixels
    return int(max(batch * per_result / max(int(devices), 1), style_pass) + working + decoded + masks + held_bytes)


def memory_shortfall(height: int, width: int, config: StyleConfig,
                     free: Optional[int] = None, **extent: Any) -> Optional[tuple[int, int, int]]:
    """Whether a run of this size clearly will not fit: None if it fits (or free memory is
    unknown), else ``(bytes needed, bytes free, largest long side that fits)`` at this aspect ratio.

    The need is ``estimate_run_bytes(height, width, config, **extent)`` (styles, batch, masks,
    decoded inputs) plus ``RUN_OVERHEAD_BYTES``, against the device's free memory
    (``free_device_memory``), so a user gets a message before the run (before any image is
    decoded or resized, when the CLI calls it), not an out-of-memory kill in the middle of it.
    """
    free = free_device_memory() if free is None else free
    if free is None:
        return None
    need = estimate_run_bytes(height, width, config, **extent) + RUN_OVERHEAD_BYTES
    if need <= free:
        return None
    batch = int(extent.get("batch", 1))
    per_pixel = batch * estimate_bytes_per_result(height, width, config) / (height * width)
    per_pixel /= max(int(extent.get("devices", 1)), 1)
    per_pixel += int(extent.get("held_bytes", 0)) / (height * width)  # (held on the host: not split)
    pixels = max(free - RUN_OVERHEAD_BYTES, 0) / per_pixel
    long_side = max(height, width)
    fits = int(math.sqrt(pixels * long_side / min(height, width))) // 16 * 16
    return need, free, max(fits, 0)
