"""Draw the example images that ship with nst-jax (nst_jax/assets/): our own, free of anyone's copyright.

content.png: a small landscape (sky gradient, sun, hills, a house, a lake).
style.png: a swirling brush-stroke texture in a blue/yellow palette (in the spirit of the
paintings style transfer is usually shown with, drawn from scratch).

Usage: python scripts/make_examples.py [--outdir nst_jax/assets]
"""

from __future__ import annotations

import argparse
import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def content_image(w: int = 320, h: int = 240) -> Image.Image:
    y = np.linspace(0, 1, h)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 230]) + y * np.array([250, 200, 160])
    img = Image.fromarray(np.broadcast_to(sky, (h, w, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([230, 30, 280, 80], fill=(255, 230, 120))
    for k, (base, amp, col) in enumerate([(150, 25, (70, 120, 70)), (175, 18, (50, 100, 55))]):
        pts = [(x, base + amp * math.sin(x / (40 + 15 * k) + k)) for x in range(0, w + 1, 4)]
        d.polygon(pts + [(w, h), (0, h)], fill=col)
    d.rectangle([0, 200, w, h], fill=(60, 110, 170))  # lake
    for x in range(0, w, 12):
        d.line([(x, 205 + (x // 12) % 3 * 10), (x + 8, 205 + (x // 12) % 3 * 10)], fill=(200, 220, 240), width=1)
    d.rectangle([90, 135, 150, 185], fill=(200, 80, 60))  # house
    d.polygon([(82, 137), (120, 105), (158, 137)], fill=(110, 60, 50))
    d.rectangle([112, 160, 128, 185], fill=(80, 50, 30))
    d.rectangle([96, 145, 108, 157], fill=(240, 240, 200))
    d.rectangle([134, 145, 146, 157], fill=(240, 240, 200))
    return img.filter(ImageFilter.SMOOTH)


def style_image(w: int = 256, h: int = 256, seed: int = 7) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), (20, 40, 90))
    d = ImageDraw.Draw(img)
    palette = [(30, 60, 140), (60, 100, 180), (240, 210, 80), (250, 240, 170), (20, 30, 70), (90, 150, 200)]
    centres = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(6)]
    for _ in range(900):  # short curved strokes following swirls around random centres
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        cx, cy = centres[int(rng.integers(len(centres)))]
        col = palette[int(rng.integers(len(palette)))]
        pts = []
        for _ in range(8):
            ang = math.atan2(y - cy, x - cx) + math.pi / 2
            x, y = x + 4 * math.cos(ang), y + 4 * math.sin(ang)
            pts.append((x, y))
        d.line(pts, fill=col, width=int(rng.integers(2, 5)))
    return img.filter(ImageFilter.SMOOTH_MORE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", default=str(pathlib.Path(__file__).resolve().parents[1] / "nst_jax" / "assets"))
    out = pathlib.Path(ap.parse_args().outdir)
    out.mkdir(parents=True, exist_ok=True)
    content_image().save(out / "content.png", optimize=True)
    style_image().save(out / "style.png", optimize=True)
    print(f"wrote {out / 'content.png'} and {out / 'style.png'}")


if __name__ == "__main__":
    main()
