#!/usr/bin/env python
"""A synthetic clip whose optical flow is known exactly: textured shapes moving over a textured,
still background, one occluding the other as they cross.

    python scripts/make_clip.py --out clip/ --frames 12 --size 64x80

Writes ``clip/frame_0000.png``... and ``clip/flows.npz`` (``back``: per frame t the flow from t to
t−1, ``fwd``: from t−1 to t; (dx, dy) in pixels, N×H×W×2, entry 0 zero). Importable:
``make_clip(frames, height, width, seed)`` returns the arrays. Shapes move by whole pixels, so the
true flow is exact at every pixel, occlusions and disocclusions included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _texture(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth colour noise: a coarse random grid upsampled bilinearly."""
    grid = rng.random((cells + 1, cells + 1, 3))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    g = grid
    return ((1 - fy) * (1 - fx) * g[y0][:, x0] + (1 - fy) * fx * g[y0][:, x0 + 1]
            + fy * (1 - fx) * g[y0 + 1][:, x0] + fy * fx * g[y0 + 1][:, x0 + 1])


def make_clip(frames: int = 12, height: int = 64, width: int = 80, seed: int = 0, *, blink: tuple[int, ...] = ()
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames N×H×W×3 float32 in [0, 1], back N×H×W×2, fwd N×H×W×2) of the synthetic clip.

    A square (moving right, 2 px a frame) passes in front of a disc (moving left and down, 1 px
    each a frame) over a still background. ``blink``: frames where a still grey bar covers part of
    the background's lower third for that one frame (what Ruder et al.'s long-term loss is for).
    """
    out, back, fwd, _ = clip_with_owners(frames, height, width, seed, blink=blink)
    return out, back, fwd


# each owner's velocity (dy, dx) a frame: the background (-1) and the blinking bar (2) are still
VELOCITIES = {-1: (0, 0), 0: (1, -1), 1: (0, 2), 2: (0, 0)}


def visible(owner: np.ndarray, t: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which pixels of frame t show the same surface point in frame t − j, and where: (H×W bool,
    source rows, source columns). Exact: every shape moves by whole pixels."""
    h, w = owner.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    sy, sx = yy.copy(), xx.copy()
    for k, (vy, vx) in VELOCITIES.items():
        here = owner[t] == k
        sy[here] -= j * vy
        sx[here] -= j * vx
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    same = np.zeros((h, w), bool)
    same[inside] = owner[t - j][sy[inside], sx[inside]] == owner[t][inside]
    return same, np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)


def clip_with_owners(frames: int = 12, height: int = 64, width: int = 80, seed: int = 0, *,
                     blink: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`make_clip`'s arrays and which surface each pixel shows (N×H×W: -1 the background,
    0 the disc, 1 the square, 2 the blinking bar; velocities in ``VELOCITIES``)."""
    rng = np.random.default_rng(seed)
    background = 0.25 + 0.5 * _texture(rng, height, width, 6)
    side, radius = height // 4, height // 6
    square_tex = _texture(rng, side, side, 2)
    disc_tex = _texture(rng, 2 * radius, 2 * radius, 2)
    # (top, left) at frame 0 and velocity (dy, dx); drawn back to front: disc, then square
    shapes = [("disc", (height // 6, width - 2 * radius - 4), (1, -1)), ("square", (height // 3, 2), (0, 2))]
    yy, xx = np.mgrid[0:2 * radius, 0:2 * radius]
    disc_mask = (yy - radius + 0.5) ** 2 + (xx - radius + 0.5) ** 2 <= radius**2
    out = np.zeros((frames, height, width, 3), np.float32)
    owner = np.full((frames, height, width), -1, np.int64)  # which shape a pixel shows (-1: background)
    for t in range(frames):
        img = background.copy()
        for k, (kind, (top, left), (vy, vx)) in enumerate(shapes):
            y, x = top + vy * t, left + vx * t
            tex, mask = (disc_tex, disc_mask) if kind == "disc" else (square_tex, np.ones((side, side), bool))
            for dy in range(tex.shape[0]):
                for dx in range(tex.shape[1]):
                    py, px = y + dy, x + dx
                    if mask[dy, dx] and 0 <= py < height and 0 <= px < width:
                        img[py, px] = tex[dy, dx]
                        owner[t, py, px] = k
        if t in blink:  # a still bar over the background, for this frame only
            top, bottom, left, right = 2 * height // 3, 2 * height // 3 + height // 6, width // 4, 3 * width // 4
            img[top:bottom, left:right] = 0.5
            owner[t, top:bottom, left:right] = 2
        out[t] = img
    back = np.zeros((frames, height, width, 2), np.float32)
    fwd = np.zeros((frames, height, width, 2), np.float32)
    for t in range(1, frames):
        for k, (_, _, (vy, vx)) in enumerate(shapes):
            back[t][owner[t] == k] = (-vx, -vy)  # pixel of frame t came from here in t-1
            fwd[t][owner[t - 1] == k] = (vx, vy)  # pixel of frame t-1 goes here in t
    return out, back, fwd, owner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", default="64x80", help="HxW")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blink", default="", help="frames (comma list) where a still bar hides part of the background")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    frames, back, fwd = make_clip(args.frames, h, w, args.seed,
                                  blink=tuple(int(v) for v in args.blink.split(",") if v.strip()))
    from PIL import Image

    args.out.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(np.round(f * 255).astype(np.uint8)).save(args.out / f"frame_{t:04d}.png")
    np.savez(args.out / "flows.npz", back=back, fwd=fwd)
    print(f"{args.out}: {len(frames)} frames {h}x{w}, flows.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
