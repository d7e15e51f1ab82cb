"""Optical flow between frames (OpenCV, the optional ``video`` extra), and a cache of flows on disk.

:func:`estimate` gives the flow in ``temporal.py``'s convention, H×W×2 ``(dx, dy)`` with
``warp(b, estimate(a, b)) ≈ a``: OpenCV's ``calcOpticalFlow*(a, b)`` returns exactly that field
(``a[y, x] ≈ b[y + dy, x + dx]``). For frame t, ``estimate(frame_t, frame_{t-1})`` is the backward
flow ``temporal.warp`` uses and ``estimate(frame_{t-1}, frame_t)`` the forward flow of the
consistency check. Methods: ``dis`` (Dense Inverse Search, OpenCV's fast dense flow; preset
MEDIUM) and ``farneback`` (polynomial expansion). Ruder et al. used DeepFlow/EpicFlow; these are
the well-kept, pip-installable choices and an accuracy trade (tested on a clip with known flow).

:class:`FlowCache` keeps the flows of one clip at one working size in a folder, one ``.npy`` file a
frame pair, so a re-run with another style reads them back. A cached file is a stranger's file too:
its header (dtype, shape, no pickles) is checked before its bytes are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Optional

import numpy as np

from .. import files
from ..errors import ImageError

__all__ = ["FLOW_METHODS", "FlowCache", "estimate"]

FLOW_METHODS = ("dis", "farneback")
_CACHE_VERSION = 2  # 2: DIS finer than its MEDIUM preset (see estimate)


def _cv2():
    try:
        import cv2
    except ImportError:
        from .io import VIDEO_EXTRA

        raise ImageError(f"optical flow needs OpenCV: {VIDEO_EXTRA}") from None
    return cv2


def _grey(frame: Any) -> np.ndarray:
    a = np.asarray(frame, np.float32)
    g = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    return np.clip(np.rint(g * 255.0), 0, 255).astype(np.uint8)


def estimate(a: Any, b: Any, method: str = "dis") -> np.ndarray:
    """Dense optical flow from frame ``a`` to frame ``b`` (``temporal.warp(b, flow) ≈ a``).

    Args:
      a, b: H×W×3 RGB frames in [0, 1].
      method: ``"dis"`` or ``"farneback"``.

    Returns:
      H×W×2 float32 ``(dx, dy)`` in pixels.
    """
    if method not in FLOW_METHODS:
        from ..errors import ConfigError

        raise ConfigError(f"unknown flow method {method!r}; use one of {', '.join(FLOW_METHODS)}")
    cv2 = _cv2()
    ga, gb = _grey(a), _grey(b)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        # Finer than the MEDIUM preset: patches down to the full resolution (finest scale 0,
        # 4-pixel patches every 2 pixels) and a smoother variational refinement (alpha 100, 20
        # iterations). Ruder et al.'s motion-boundary test (|∇w|² > 0.01|w|² + 0.002) was set for
        # DeepFlow's smooth variational flows; on the preset's noisier field it marks ~20 % of a
        # still, textured background as boundaries. Measured on scripts/make_clip.py's clip against
        # its true flow: mean end-point error 0.10 px instead of 0.33, the consistency mask agreeing
        # with the true one on 88 % of pixels instead of 73 %; 0.2 s a flow at 512×640 instead of
        # 0.02 s (BENCHMARKS.md, "Video"), small next to a frame's optimisation.
        dis.setFinestScale(0)
        dis.setPatchSize(4)
        dis.setPatchStride(2)
        dis.setVariationalRefinementAlpha(100.0)
        dis.setVariationalRefinementIterations(20)
        flow = dis.calc(ga, gb, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 4, 15, 5, 5, 1.2, 0)
    return np.ascontiguousarray(flow, np.float32)


class FlowCache:
    """The flows of one clip at one working size, in ``folder`` (created on first write).

    The key (the input's identity, the frame selection, the working size, the method) is written to
    ``folder/key.json``; a folder holding another key is not read (and not written: it belongs to
    another clip). Entries: ``back_<t>.npy`` (frame t to t−1) and ``fwd_<t>.npy`` (t−1 to t), t the
    position in the selection.
    """

    def __init__(self, folder: os.PathLike[str] | str, key: dict, shape: tuple[int, int]) -> None:
        self.folder = pathlib.Path(folder)
        self.key = {"version": _CACHE_VERSION, **key}
        self.shape = (int(shape[0]), int(shape[1]), 2)
        self.usable = True
        kf = self.folder / "key.json"
        if kf.exists() or kf.is_symlink():
            # nst-jax writes this folder itself: a link, a FIFO or anything but a small regular
            # file here is not ours, and the folder is neither read nor written
            raw = files.read_small(kf, 65536, follow_links=False)
            try:
                held = json.loads(raw) if raw is not None else None
            except ValueError:
                held = None
            self.usable = held == json.loads(json.dumps(self.key))

    @staticmethod
    def key_for(clip_path: os.PathLike[str] | str, **fields: Any) -> dict:
        """A key naming a clip by path, size and modification time (a folder: every frame's)."""
        p = pathlib.Path(clip_path).expanduser().resolve()
        if p.is_dir():
            stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.iterdir()) if f.is_file()]
        else:
            st = p.stat()
            stats = [(p.name, st.st_size, st.st_mtime_ns)]
        digest = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
        return {"input": str(p), "files": digest, **fields}

    def _path(self, kind: str, t: int) -> pathlib.Path:
        return self.folder / f"{kind}_{t:06d}.npy"

    def get(self, kind: str, t: int) -> Optional[np.ndarray]:
        """The cached flow, or None when absent, unusable or not a flow of the expected shape."""
        p = self._path(kind, t)
        if not self.usable:
            return None
        try:  # a regular file only, and never through a link (the cache is ours: a link is not)
            with os.fdopen(files.open_regular(p, follow_links=False), "rb") as f:
                a = files.read_npy(f, os.fstat(f.fileno()).st_size, shape=self.shape, dtype=np.dtype("<f4"))
        except (OSError, ValueError):
            return None
        return a if np.isfinite(a).all() else None

    def put(self, kind: str, t: int, flow: np.ndarray) -> None:
        """Store a flow (atomically); silently skipped when the folder belongs to another clip."""
        if not self.usable:
            return
        kf = self.folder / "key.json"
        if not (kf.exists() or kf.is_symlink()):
            files.atomic_write(kf, lambda f: f.write(json.dumps(self.key).encode()), overwrite=True)
        a = np.ascontiguousarray(flow, "<f4")
        files.atomic_write(self._path(kind, t), lambda f: np.lib.format.write_array(f, a, allow_pickle=False),
                           overwrite=True)

    def flow(self, kind: str, t: int, a: Any, b: Any, method: str) -> np.ndarray:
        """The cached flow ``kind`` of pair ``t``, else ``estimate(a, b, method)`` (and cached)."""
        got = self.get(kind, t)
        if got is None:
            got = estimate(a, b, method)
            self.put(kind, t, got)
        return got
