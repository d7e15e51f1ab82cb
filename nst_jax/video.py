"""Video: frames stylised with temporal consistency (Ruder, Dosovitskiy & Brox 2016), in memory.

:func:`stylize_sequential` is the paper's sequential algorithm: frame t starts from the stylised
frame t−1 warped by the flow, and its objective adds the short-term temporal loss to that warped
frame under the consistency mask (``temporal.py``). :func:`stylize_independent` is the baseline
(every frame on its own), and :func:`temporal_errors` the paper's measure of flicker.

Frames are H×W×3 RGB in [0, 1] at the working size; flows come from the caller (a clip with known
flow, ``scripts/make_clip.py``; OpenCV for real footage). Decoding and encoding video files, flow
estimation, the multi-pass algorithm and the ``nst-jax video`` command are not built yet.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from . import temporal
from .config import StyleConfig
from .engine import Result, stylize
from .targets import ImageLike

__all__ = ["frame_masks", "stylize_independent", "stylize_sequential", "temporal_errors"]


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
        back = jnp.asarray(flows_back[t], jnp.float32)
        if flows_fwd is not None and flows_fwd[t] is not None:
            mask = temporal.consistency_mask(back, jnp.asarray(flows_fwd[t], jnp.float32))
        else:
            mask = temporal.warp_valid(back)
        out.append(np.asarray(mask))
    return out


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
                       convention: Any = None, callback: Optional[Callable[[int, Result], None]] = None
                       ) -> list[Result]:
    """Ruder et al.'s sequential algorithm with the short-term temporal loss.

    Frame 0 is ``stylize(frames[0], ...)``. Frame t > 0 starts from the stylised frame t−1 warped by
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

    Returns:
      one ``Result`` per frame (``output`` is the frame's stylised image).
    """
    if len(flows_back) != len(frames):
        raise ValueError(f"{len(flows_back)} flows for {len(frames)} frames (entry 0 is unused)")
    masks = frame_masks(flows_back, flows_fwd)
    results: list[Result] = []
    for t, frame in enumerate(frames):
        if t == 0:
            r = stylize(frame, style, params, config, seed=seed, convention=convention)
        else:
            prev = jnp.asarray(results[-1].output, jnp.float32)
            warped = np.asarray(temporal.warp(prev, jnp.asarray(flows_back[t], jnp.float32)))
            mask = masks[t]
            assert mask is not None  # (every frame after the first has one)
            r = stylize(frame, style, params, config, seed=seed, convention=convention, init_image=warped,
                        temporal=(warped, mask))
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
