"""Video: frames stylised with temporal consistency (Ruder, Dosovitskiy & Brox 2016).

:func:`iter_frames` is the paper's sequential algorithm as a stream (what ``nst-jax video``
runs): frame t starts from the stylised frame t−1 warped by the flow, and its objective adds the
temporal loss towards the earlier stylised frames, warped, under their consistency masks
(``temporal.py``; the short-term loss, or the long-term one over several earlier frames).
:func:`stylize_sequential` and :func:`stylize_independent` (the baseline: every frame on its own)
run it over frames and flows in memory; :func:`temporal_errors` is the paper's measure of flicker.

:func:`stylize_multipass` is the paper's multi-pass algorithm, batched: every frame of a pass is
optimised at once in one compiled program (``stylize_many``, sharded over devices when there are
several), each frame blending in and held to its neighbours of the previous pass.

Frames are H×W×3 RGB in [0, 1] at the working size; flows come from the caller (a clip with known
flow, ``scripts/make_clip.py``; ``flow.estimate`` for real footage). Files: ``video_io``; the
``nst-jax video`` command: ``cli.video``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from ..objective import temporal
from ..program.config import StyleConfig
from ..engine.batching import stylize_many
from ..engine.single import Result, stylize
from ..objective.targets import ImageLike

__all__ = ["FlowFn", "VideoFrame", "frame_masks", "iter_frames", "multipass_inputs", "no_temporal", "stylize_independent",
           "stylize_multipass", "stylize_sequential", "temporal_errors"]


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


class VideoFrame(NamedTuple):
    """One painted frame: its position t in the clip, the picture (RGB in [0, 1], colours restored:
    what a file gets) and the engine's result (in the engine's colour domain: grey under
    ``preserve_colors="lum"``)."""

    t: int
    output: np.ndarray
    result: Optional[Result]


# flows(t, j, frame t, frame t − j) -> (the flow from frame t to t − j, the one back or None)
FlowFn = Callable[[int, int, np.ndarray, np.ndarray], tuple[ImageLike, Optional[ImageLike]]]


def iter_frames(frames: Iterable[ImageLike], style: Any, params: Any, config: StyleConfig,
                flows: Optional[FlowFn] = None, *, long_term: Sequence[int] = (1,), seed: int = 0,
                convention: Any = None, color_match_method: str = "chol", devices: Any = None,
                start: int = 0, earlier: Optional[Callable[[int], ImageLike]] = None,
                keep: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                callback: Optional[Callable[[Any], Optional[bool]]] = None) -> Iterator[VideoFrame]:
    """Ruder et al.'s sequential algorithm as a stream: each frame is yielded as soon as it is painted.

    Frame 0 runs alone (a temporal term of weight 0, :func:`no_temporal`, so every frame shares one
    compiled program). Frame t > 0 starts from frame t − 1's picture warped to it (the paper's
    initialisation) and adds ``config.temporal_weight`` × the temporal loss towards the pictures of
    the frames t − j, j in ``long_term``, each warped to frame t and held where its consistency
    mask says it is visible (:func:`temporal.long_term_target`; ``(1,)``: the short-term loss).
    With ``flows=None`` every frame is painted on its own (the flickering baseline).

    Colours (``config.preserve_colors``) are prepared per frame (``control.prepare_colors``: the
    frame's own luminance or colours) and restored on each picture; the temporal chain runs on the
    restored pictures (for "lum", their luminance), so a run resumed from written frames equals
    the uninterrupted one. Only ``max(long_term)`` earlier frames and pictures are held.

    Args:
      frames: H×W×3 frames in [0, 1] (an iterable: read lazily, one at a time), all one shape.
      style, params, config, seed, convention, devices: as ``engine.stylize``.
      flows: ``flows(t, j, frame_t, frame_t_minus_j)`` gives (the flow from frame t to t − j, the
        flow back or None: without it only pixels warped from outside the frame are excluded).
      long_term: J, the earlier frames (offsets ≥ 1) the temporal term holds frame t to.
      color_match_method: for ``preserve_colors="match"`` (``control.prepare_colors``).
      start: resume: frames before ``start`` are finished; their pictures come from ``earlier(t)``
        (only the last ``max(long_term)`` are asked for).
      keep: maps a picture to what the chain holds and warps (e.g. its 8-bit rounding, so a run
        equals one resumed from written files).
      callback: ``engine.stylize``'s, for every frame; True stops (the frame is yielded with its
        result's status "stopped", and the stream ends).

    Yields:
      one :class:`VideoFrame` per painted frame (frames ``start`` onwards).
    """
    from ..control.colors import prepare_colors

    offsets = sorted({int(j) for j in long_term})
    if not offsets or offsets[0] != 1:
        raise ValueError(f"long_term offsets must be >= 1 and include 1, got {tuple(long_term)}")
    reach = offsets[-1]
    sources: dict[int, np.ndarray] = {}  # the last `reach` source frames and pictures, by index
    pictures: dict[int, np.ndarray] = {}
    for t, frame in enumerate(frames):
        frame = np.asarray(frame, np.float32)
        sources[t] = frame
        for old in [k for k in sources if k < t - reach]:
            del sources[old]
            pictures.pop(old, None)
        if t < start:
            if flows is not None and earlier is not None and t >= start - reach:
                pictures[t] = np.asarray(earlier(t), np.float32)
            continue
        content_in, style_in, restore = prepare_colors(frame, style, config, color_match_method=color_match_method)
        grey = config.preserve_colors == "lum"
        init, target = None, None
        if flows is not None:
            init, target = _temporal_target(t, offsets, flows, sources, pictures, grey)
            target = target if target is not None else no_temporal(content_in)
        r = stylize(content_in, style_in, params, config, seed=seed, convention=convention, init_image=init,
                    temporal=target, callback=callback, devices=devices)
        picture = restore(r.output)
        pictures[t] = keep(picture) if keep is not None else picture
        yield VideoFrame(t, picture, r)
        if r.status == "stopped":
            return


def _temporal_target(t: int, offsets: Sequence[int], flows: FlowFn, sources: dict, pictures: dict, grey: bool
                     ) -> tuple[Optional[np.ndarray], Optional[tuple[np.ndarray, np.ndarray]]]:
    """Frame t's start image (frame t − 1's picture warped) and temporal target (None for frame 0)."""
    from ..image.color import luminance

    ws, cs = [], []
    for j in (j for j in offsets if j <= t):
        to_j, back_j = flows(t, j, sources[t], sources[t - j])
        prev = pictures[t - j]
        if grey:  # the engine optimises a grey image under "lum": hold it to the luminance
            prev = np.repeat(np.asarray(luminance(prev), np.float32)[..., None], 3, axis=-1)
        ws.append(np.asarray(temporal.warp(jnp.asarray(prev, jnp.float32), jnp.asarray(to_j, jnp.float32))))
        cs.append(_pair_mask(to_j, back_j))
    if not ws:
        return None, None
    # (an offset not reaching back yet adds nothing: a term of weight 0 in the same program)
    return ws[0], temporal.long_term_target(ws, cs)


def stylize_independent(frames: Sequence[ImageLike], style: Any, params: Any, config: StyleConfig, *,
                        seed: int = 0, convention: Any = None,
                        callback: Optional[Callable[[int, Any], None]] = None) -> list[VideoFrame]:
    """Every frame stylised on its own (the flickering baseline): :func:`iter_frames` without flows.

    Args:
      frames: H×W×3 frames.
      style, params, config, seed, convention: as ``stylize``.
      callback: called with (frame index, its ``VideoFrame``) after each frame.

    Returns:
      one :class:`VideoFrame` per frame.
    """
    out = []
    for f in iter_frames(frames, style, params, config, None, seed=seed, convention=convention):
        out.append(f)
        if callback is not None:
            callback(f.t, f)
    return out


def stylize_sequential(frames: Sequence[ImageLike], style: Any, params: Any, config: StyleConfig,
                       flows_back: Sequence[Optional[ImageLike]], *,
                       flows_fwd: Optional[Sequence[Optional[ImageLike]]] = None, seed: int = 0,
                       convention: Any = None, callback: Optional[Callable[[int, Any], None]] = None,
                       long_term: Sequence[int] = (1,),
                       pair_flows: Optional[Callable[[int, int], tuple[ImageLike, Optional[ImageLike]]]] = None
                       ) -> list[VideoFrame]:
    """Ruder et al.'s sequential algorithm over frames and flows in memory (:func:`iter_frames`).

    Args:
      frames: H×W×3 frames (all one shape).
      style, params, config, seed, convention: as ``stylize``.
      flows_back: per frame t, the flow from frame t to t−1 (entry 0 unused).
      flows_fwd: per frame t, the flow from t−1 to t, for the disocclusion and motion-boundary test
        (without them only pixels warped from outside the frame are excluded).
      callback: called with (frame index, its ``VideoFrame``) after each frame.
      long_term: J (see :func:`iter_frames`); e.g. ``(1, 2, 4)``, the paper's long-term loss.
      pair_flows: ``pair_flows(t, j)`` gives (the flow from frame t to t − j, the one back, or
        None), for every j > 1 in ``long_term`` (j = 1 uses ``flows_back``/``flows_fwd``).

    Returns:
      one :class:`VideoFrame` per frame.
    """
    if any(int(j) != 1 for j in long_term) and pair_flows is None:
        raise ValueError("long_term offsets above 1 need pair_flows(t, j)")
    if len(flows_back) != len(frames):
        raise ValueError(f"{len(flows_back)} flows for {len(frames)} frames (entry 0 is unused)")

    def flows(t: int, j: int, _a: Any, _b: Any) -> tuple[ImageLike, Optional[ImageLike]]:
        if j == 1:
            back = flows_back[t]
            if back is None:
                raise ValueError(f"frame {t} has no backward flow")
            return back, None if flows_fwd is None else flows_fwd[t]
        assert pair_flows is not None
        return pair_flows(t, j)

    out = []
    for f in iter_frames(frames, style, params, config, flows, long_term=long_term, seed=seed, convention=convention):
        out.append(f)
        if callback is not None:
            callback(f.t, f)
    return out


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


# Multi-pass holds each frame to its blend with this share of ``temporal_weight``: the hold is to a
# smoothed picture, not to a neighbour. Measured (BENCHMARKS.md, "Video"): with the full weight
# the synthetic weights' frames stayed at the blur of their blends (style loss up 2-3x, flicker
# barely lower); 1/40 (25 at the default 1000) kept the style and lowered the error most.
MULTIPASS_HOLD = 1.0 / 40.0


def multipass_inputs(images: np.ndarray, flows_back: Sequence[Optional[ImageLike]],
                     flows_fwd: Sequence[Optional[ImageLike]], blend: float
                     ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """One pass's start images and temporal targets, from the previous pass's frames.

    For frame i, ω_p and c_p are frame i − 1 warped to it and that pair's consistency weights,
    ω_n and c_n the same for frame i + 1; T = (c_p ω_p + c_n ω_n) / (c_p + c_n) is the neighbours'
    picture of frame i and c = max(c_p, c_n) where either sees it. Frame i starts from
    ``s = δ c T + (1 − δ c) x_i`` (δ = ``blend``) and its temporal term holds it to s with
    weights ``MULTIPASS_HOLD · c``.

    Departure from the paper (§3.3), measured in BENCHMARKS.md "Video": the paper's passes run
    frame after frame, alternating direction, each frame blending in its neighbour *of this pass*
    and holding to it. Here a whole pass is one batch, so every frame only sees its neighbours *of
    the previous pass*. Held to an old neighbour, a frame just takes its place (a pure shift:
    measured, the temporal error did not fall, and grew with the weight); blending in both
    neighbours and holding to the blend is the damped Jacobi iteration of the same smoothing, which
    removes the frame-to-frame flicker pass by pass while the style terms keep the texture.

    Args:
      images: N×H×W×3, the previous pass's frames.
      flows_back, flows_fwd: per frame t, the flows t→t−1 and t−1→t (entry 0 unused).
      blend: δ.

    Returns:
      (N×H×W×3 start images, per frame (s, MULTIPASS_HOLD · c)).
    """
    n = len(images)
    starts = np.array(images, np.float32, copy=True)
    targets: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(n):
        seen = np.zeros(images.shape[1:3], np.float32)
        total = np.zeros(images.shape[1:], np.float32)
        for j in (i - 1, i + 1):
            if not 0 <= j < n:
                continue
            # the flow from frame i to its neighbour j, and the one back (for the consistency check)
            to_j, from_j = (flows_back[i], flows_fwd[i]) if j < i else (flows_fwd[j], flows_back[j])
            to_j = jnp.asarray(to_j, jnp.float32)
            warped = np.asarray(temporal.warp(jnp.asarray(images[j], jnp.float32), to_j))
            c = np.asarray(temporal.consistency_mask(to_j, jnp.asarray(from_j, jnp.float32)))
            seen += c
            total += c[..., None] * warped
        mean = np.where(seen[..., None] > 0, total / np.maximum(seen, 1.0)[..., None], images[i])
        c = np.minimum(seen, 1.0)[..., None]
        starts[i] = blend * c * mean + (1.0 - blend * c) * images[i]
        targets.append((starts[i].copy(), (MULTIPASS_HOLD * c[..., 0]).astype(np.float32)))
    return starts, targets


def stylize_multipass(frames: Sequence[ImageLike], style: Any, params: Any, config: StyleConfig,
                      flows_back: Sequence[Optional[ImageLike]], flows_fwd: Sequence[Optional[ImageLike]], *,
                      passes: int = 4, blend: float = 0.75, first_iterations: Optional[int] = None, seed: int = 0,
                      convention: Any = None, batch_size: Optional[int] = None, devices: Any = None,
                      start: Optional[tuple[int, np.ndarray]] = None,
                      callback: Optional[Callable[[int, np.ndarray], Optional[bool]]] = None,
                      spatial: int = 1, color_match_method: str = "chol") -> list[VideoFrame]:
    """Ruder et al.'s multi-pass algorithm, every frame of a pass in one batch.

    Pass 0 stylises every frame on its own (``first_iterations``, default ``config.iterations``).
    Each later pass runs ``config.iterations`` from :func:`multipass_inputs`, with the temporal
    term. A pass is one ``stylize_many`` call: frames are the batch, so on an accelerator a pass
    costs about one frame's time. Colours (``config.preserve_colors``) are prepared per frame and
    restored on the last pass's pictures (``control.prepare_colors``).

    Args:
      frames: N H×W×3 frames.
      style, params, config, seed, convention: as ``stylize`` (one seed for every frame).
      flows_back, flows_fwd: per frame t, the flows t→t−1 and t−1→t (entry 0 unused).
      passes: passes after the first (0: independent frames).
      blend: δ, how much of the neighbours' picture a frame starts from and is held to (0.75:
        measured, above the paper's 0.5 with these batched passes).
      first_iterations: iterations of pass 0.
      batch_size, devices, spatial: as ``stylize_many`` (frames at once; devices to shard them
        over; devices per frame, a ``batch × spatial`` mesh).
      start: (passes done, their N×H×W×3 frames, in the engine's colour domain) to resume after
        pass ``passes done − 1``.
      callback: called with (pass index, N×H×W×3 frames in the engine's colour domain) after each
        pass; True stops.
      color_match_method: for ``preserve_colors="match"``.

    Returns:
      the last pass's frames, one :class:`VideoFrame` a frame.
    """
    from ..control.colors import prepare_colors

    n = len(frames)
    if len(flows_back) != n or len(flows_fwd) != n:
        raise ValueError(f"{len(flows_back)}/{len(flows_fwd)} flows for {n} frames (entry 0 is unused)")
    prepared = [prepare_colors(np.asarray(f, np.float32), style, config, color_match_method=color_match_method)
                for f in frames]
    contents = np.stack([c for c, _, _ in prepared])
    styles = [s for _, s, _ in prepared]
    common = dict(seeds=[seed] * n, convention=convention, batch_size=batch_size, devices=devices, spatial=spatial)
    done, images, last = 0, None, None
    if start is not None:
        done, images = int(start[0]), np.asarray(start[1], np.float32)
    for p in range(done, passes + 1):
        if p == 0:
            last = stylize_many(contents, styles, params, config, iterations=first_iterations,
                                temporal=[no_temporal(f) for f in contents], **common)  # (one program for all passes)
        else:
            assert images is not None
            starts, targets = multipass_inputs(images, flows_back, flows_fwd, blend=blend)
            last = stylize_many(contents, styles, params, config, init_images=starts, temporal=targets, **common)
        images = np.asarray(last.outputs, np.float32)
        if callback is not None and callback(p, images):
            break
    if images is None or done > passes + 1:
        raise ValueError(f"start says {done} passes are done; this run has {passes + 1}")
    # (resumed after the last pass: nothing ran, and the frames have no engine result)
    return [VideoFrame(i, prepared[i][2](images[i]), None if last is None else last[i]) for i in range(n)]
