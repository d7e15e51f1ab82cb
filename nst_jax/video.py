"""Video: frames stylised with temporal consistency (Ruder, Dosovitskiy & Brox 2016), in memory.

:func:`stylize_sequential` is the paper's sequential algorithm: frame t starts from the stylised
frame t−1 warped by the flow, and its objective adds the short-term temporal loss to that warped
frame under the consistency mask (``temporal.py``). :func:`stylize_independent` is the baseline
(every frame on its own), and :func:`temporal_errors` the paper's measure of flicker.

:func:`stylize_multipass` is the paper's multi-pass algorithm, batched: every frame of a pass is
optimised at once in one compiled program (``stylize_many``, sharded over devices when there are
several), passes alternating the direction of the flow.

Frames are H×W×3 RGB in [0, 1] at the working size; flows come from the caller (a clip with known
flow, ``scripts/make_clip.py``; ``flow.estimate`` for real footage). Files: ``video_io``; the
``nst-jax video`` command: ``cli_video``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from . import temporal
from .config import StyleConfig
from .batching import stylize_many
from .engine import Result, stylize
from .targets import ImageLike

__all__ = ["frame_masks", "multipass_inputs", "no_temporal", "stylize_independent", "stylize_multipass", "stylize_sequential",
           "temporal_errors"]


def frame_masks(flows_back: Sequence[Optional[ImageLike]], flows_fwd: Optional[Sequence[Optional[ImageLike]]] = None
                ) -> list[Optional[np.ndarray]]:
    """Each frame's consistency weights: None for frame 0, then ``temporal.consistency_mask`` (or,
    without forward flows, only where the warp samples inside the frame).

    Args:
      flows_back: per frame t, the H×W×2 flow from frame t to t−1 (entry 0 unused).
      flows_fwd: per frame t, the flow from t−1 to t (entry 0 unused), or None.

    Returns:
      per frame, H×W float32 weights (None for frame 0).
    """
    out: list[Optional[np.ndarray]] = [None]
    for t in range(1, len(flows_back)):
        back = flows_back[t]
        if back is None:
            raise ValueError(f"frame {t} has no backward flow")
        out.append(_pair_mask(back, None if flows_fwd is None else flows_fwd[t]))
    return out


def _pair_mask(to_prev: ImageLike, from_prev: Optional[ImageLike]) -> np.ndarray:
    """The consistency weights of one pair of frames (the flow to the earlier frame and the one
    back), or, without the flow back, only where the warp samples inside the frame."""
    to_prev = jnp.asarray(to_prev, jnp.float32)
    if from_prev is None:
        return np.asarray(temporal.warp_valid(to_prev))
    return np.asarray(temporal.consistency_mask(to_prev, jnp.asarray(from_prev, jnp.float32)))


def no_temporal(frame: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    """A temporal target that adds exactly 0 (weights of 0): frames with and without a predecessor
    then share one program (the target's presence is structure; its weights are values)."""
    a = np.asarray(frame, np.float32)
    return a, np.zeros(a.shape[:2], np.float32)


def stylize_independent(frames: Sequence[ImageLike], style: Any, params: Any, config: StyleConfig, *,
                        seed: int = 0, convention: Any = None,
                        callback: Optional[Callable[[int, Result], None]] = None) -> list[Result]:
    """Every frame stylised on its own (the flickering baseline): ``stylize`` per frame, one seed.

    Args:
      frames: H×W×3 frames.
      style, params, config, seed, convention: as ``stylize``.
      callback: called with (frame index, its result) after each frame.

    Returns:
      one ``Result`` per frame.
    """
    results = []
    for t, frame in enumerate(frames):
        results.append(stylize(frame, style, params, config, seed=seed, convention=convention))
        if callback is not None:
            callback(t, results[-1])
    return results


def stylize_sequential(frames: Sequence[ImageLike], style: Any, params: Any, config: StyleConfig,
                       flows_back: Sequence[Optional[ImageLike]], *,
                       flows_fwd: Optional[Sequence[Optional[ImageLike]]] = None, seed: int = 0,
                       convention: Any = None, callback: Optional[Callable[[int, Result], None]] = None,
                       long_term: Sequence[int] = (1,),
                       pair_flows: Optional[Callable[[int, int], tuple[ImageLike, Optional[ImageLike]]]] = None
                       ) -> list[Result]:
    """Ruder et al.'s sequential algorithm with the short-term temporal loss.

    Frame 0 is ``stylize(frames[0], ...)`` (with a temporal term of weight 0, :func:`no_temporal`). Frame t > 0 starts from the stylised frame t−1 warped by
    ``flows_back[t]`` (the paper's initialisation) and minimises the usual objective plus
    ``config.temporal_weight`` × the mean squared difference to that warped frame under the
    consistency weights (:func:`frame_masks`). Every frame of a shape shares one compiled program.

    Args:
      frames: H×W×3 frames (all one shape).
      style, params, config, seed, convention: as ``stylize``.
      flows_back: per frame t, the flow from frame t to t−1 (entry 0 unused).
      flows_fwd: per frame t, the flow from t−1 to t, for the disocclusion and motion-boundary test
        (without them only pixels warped from outside the frame are excluded).
      callback: called with (frame index, its result) after each frame.
      long_term: J, the earlier frames (offsets) the temporal term holds frame t to: ``(1,)`` is
        the short-term loss; e.g. ``(1, 2, 4)`` is the paper's long-term loss
        (:func:`temporal.long_term_target`: each pixel to the nearest frame where it is visible).
        Frame t still starts from frame t − 1 warped.
      pair_flows: ``pair_flows(t, j)`` gives (the flow from frame t to t − j, the one back, or
        None), for every j > 1 in ``long_term`` (j = 1 uses ``flows_back``/``flows_fwd``).

    Returns:
      one ``Result`` per frame (``output`` is the frame's stylised image).
    """
    offsets = sorted({int(j) for j in long_term})
    if not offsets or offsets[0] < 1:
        raise ValueError(f"long_term offsets must be >= 1, got {tuple(long_term)}")
    if offsets != [1] and pair_flows is None:
        raise ValueError("long_term offsets above 1 need pair_flows(t, j)")
    if len(flows_back) != len(frames):
        raise ValueError(f"{len(flows_back)} flows for {len(frames)} frames (entry 0 is unused)")
    masks = frame_masks(flows_back, flows_fwd)
    results: list[Result] = []
    for t, frame in enumerate(frames):
        if t == 0:  # a temporal term of weight 0: one compiled program for every frame
            r = stylize(frame, style, params, config, seed=seed, convention=convention,
                        temporal=no_temporal(frame))
        else:
            prev = jnp.asarray(results[-1].output, jnp.float32)
            warped = np.asarray(temporal.warp(prev, jnp.asarray(flows_back[t], jnp.float32)))
            mask = masks[t]
            assert mask is not None  # (every frame after the first has one)
            target: tuple[Any, Any] = (warped, mask)
            if offsets != [1]:
                ws, cs = [], []
                for j in (j for j in offsets if j <= t):
                    if j == 1:
                        ws.append(warped)
                        cs.append(mask)
                        continue
                    assert pair_flows is not None
                    to_j, back_j = pair_flows(t, j)
                    ws.append(np.asarray(temporal.warp(jnp.asarray(results[t - j].output, jnp.float32),
                                                       jnp.asarray(to_j, jnp.float32))))
                    cs.append(_pair_mask(to_j, back_j))
                # (no offset reaches back this far yet: a term of weight 0, the same program)
                target = temporal.long_term_target(ws, cs) if ws else (warped, np.zeros_like(mask))
            r = stylize(frame, style, params, config, seed=seed, convention=convention, init_image=warped,
                        temporal=target)
        results.append(r)
        if callback is not None:
            callback(t, r)
    return results


def temporal_errors(outputs: Sequence[ImageLike], flows_back: Sequence[Optional[ImageLike]],
                    masks: Sequence[Optional[ImageLike]]) -> np.ndarray:
    """Ruder et al.'s temporal error of a stylised sequence: per frame t ≥ 1, the mean over pixels
    and channels of ``c · (x_t − warp(x_{t−1}))²``.

    Args:
      outputs: the stylised frames.
      flows_back: per frame t, the flow from t to t−1 (entry 0 unused).
      masks: per frame t, the H×W consistency weights (entry 0 unused; :func:`frame_masks`).

    Returns:
      float64 array of len(outputs) − 1 errors.
    """
    errs = []
    for t in range(1, len(outputs)):
        warped = temporal.warp(jnp.asarray(outputs[t - 1], jnp.float32), jnp.asarray(flows_back[t], jnp.float32))
        errs.append(float(temporal.temporal_loss(jnp.asarray(outputs[t], jnp.float32), warped,
                                                 jnp.asarray(masks[t], jnp.float32))))
    return np.asarray(errs, np.float64)


def multipass_inputs(images: np.ndarray, flows_back: Sequence[Optional[ImageLike]],
                     flows_fwd: Sequence[Optional[ImageLike]], forward: bool, blend: float
                     ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """One pass's start images and temporal targets, from the previous pass's frames.

    Ruder et al. §3.3: in a forward pass frame i's neighbour is i−1, in a backward pass i+1. With
    ω the neighbour warped to frame i and c the consistency weights of that pair, frame i starts
    from ``δ c ω + (1 − δ c) x_i`` (δ = ``blend``) and its temporal term pulls towards ω under c.
    The frame without a neighbour in this direction keeps its image and gets weights of 0.

    Departure from the paper: the paper's passes are sequential within a pass (frame i blends in
    frame i−1 *of this pass*); here every frame blends in its neighbour *of the previous pass*, so
    a whole pass is one batch (the Jacobi form of the same iteration). Information travels one
    frame a pass instead of the whole clip, which the alternating directions and several passes
    make up for (measured in BENCHMARKS.md, "Video").

    Args:
      images: N×H×W×3, the previous pass's frames.
      flows_back, flows_fwd: per frame t, the flows t→t−1 and t−1→t (entry 0 unused).
      forward: the pass's direction.
      blend: δ.

    Returns:
      (N×H×W×3 start images, per frame (ω, c)).
    """
    n = len(images)
    starts = np.array(images, np.float32, copy=True)
    targets: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(n):
        j = i - 1 if forward else i + 1
        if not 0 <= j < n:
            targets.append(no_temporal(starts[i]))
            continue
        # the flow from frame i to its neighbour j, and the one back (for the consistency check)
        to_j, from_j = (flows_back[i], flows_fwd[i]) if forward else (flows_fwd[j], flows_back[j])
        to_j = jnp.asarray(to_j, jnp.float32)
        warped = np.asarray(temporal.warp(jnp.asarray(images[j], jnp.float32), to_j))
        c = np.asarray(temporal.consistency_mask(to_j, jnp.asarray(from_j, jnp.float32)))
        starts[i] = blend * c[..., None] * warped + (1.0 - blend * c[..., None]) * images[i]
        targets.append((warped, c))
    return starts, targets


def stylize_multipass(frames: Sequence[ImageLike], style: Any, params: Any, config: StyleConfig,
                      flows_back: Sequence[Optional[ImageLike]], flows_fwd: Sequence[Optional[ImageLike]], *,
                      passes: int = 4, blend: float = 0.5, first_iterations: Optional[int] = None, seed: int = 0,
                      convention: Any = None, batch_size: Optional[int] = None, devices: Any = None,
                      start: Optional[tuple[int, np.ndarray]] = None,
                      callback: Optional[Callable[[int, np.ndarray], Optional[bool]]] = None,
                      spatial: int = 1) -> list[Result]:
    """Ruder et al.'s multi-pass algorithm, every frame of a pass in one batch.

    Pass 0 stylises every frame on its own (``first_iterations``, default ``config.iterations``).
    Each later pass p = 1, 2, ... runs ``config.iterations`` from :func:`multipass_inputs` (forward
    for odd p, backward for even p), with the temporal term. A pass is one ``stylize_many`` call:
    frames are the batch, so on an accelerator a pass costs about one frame's time.

    Args:
      frames: N H×W×3 frames.
      style, params, config, seed, convention: as ``stylize`` (one seed for every frame).
      flows_back, flows_fwd: per frame t, the flows t→t−1 and t−1→t (entry 0 unused).
      passes: passes after the first (0: independent frames).
      blend: δ, how much of the warped neighbour a frame starts from (the paper's 0.5).
      first_iterations: iterations of pass 0.
      batch_size, devices, spatial: as ``stylize_many`` (frames at once; devices to shard them
        over; devices per frame, a ``batch × spatial`` mesh).
      start: (passes done, their N×H×W×3 frames) to resume after pass ``passes done − 1``.
      callback: called with (pass index, N×H×W×3 frames) after each pass; True stops.

    Returns:
      the last pass's results, one ``Result`` a frame.
    """
    n = len(frames)
    if len(flows_back) != n or len(flows_fwd) != n:
        raise ValueError(f"{len(flows_back)}/{len(flows_fwd)} flows for {n} frames (entry 0 is unused)")
    contents = np.stack([np.asarray(f, np.float32) for f in frames])
    common = dict(seeds=[seed] * n, convention=convention, batch_size=batch_size, devices=devices, spatial=spatial)
    done, images, last = 0, None, None
    if start is not None:
        done, images = int(start[0]), np.asarray(start[1], np.float32)
    for p in range(done, passes + 1):
        if p == 0:
            last = stylize_many(contents, [style] * n, params, config, iterations=first_iterations,
                                temporal=[no_temporal(f) for f in contents], **common)  # (one program for all passes)
        else:
            assert images is not None
            starts, targets = multipass_inputs(images, flows_back, flows_fwd, forward=p % 2 == 1, blend=blend)
            last = stylize_many(contents, [style] * n, params, config, init_images=starts, temporal=targets, **common)
        images = np.asarray(last.outputs, np.float32)
        if callback is not None and callback(p, images):
            break
    if last is None:  # resumed after the last pass: nothing left to run
        raise ValueError(f"start says {done} passes are done; this run has {passes + 1}")
    return [last[i] for i in range(n)]
