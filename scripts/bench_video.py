#!/usr/bin/env python
"""Temporal consistency of `nst-jax video`, measured through the command: independent frames
against Ruder et al.'s sequential and multi-pass algorithms.

    python scripts/bench_video.py --weights weights/vgg19.h5 --iterations 20,40,80

Writes the synthetic clip of ``scripts/make_clip.py`` (its motion known exactly) as a folder of
frames and runs ``nst-jax video`` on it (``cli.main``, in this process: the command a user types,
with its ``--preset`` (default ``default``), its flow estimation (DIS) and its 8-bit frames), for
each method and iteration count; multi-pass gets the same iterations a frame: ``--passes P`` and
``--iterations N / (P + 1)``. The frames are read back and measured here with numpy alone, with
the clip's exact motion: the temporal error of frame t is the mean over pixels and channels of
``(x_t − x_{t−1} moved)²`` over the pixels visible in both frames (Ruder et al.'s measure with the
true flow and occlusions); ``--long-term`` adds the error to frame t − 2 and a clip where a bar
hides the background for one frame (frames 2 and 5), measured under the bar. Style loss: the preset's weighted style term
at each output frame (one objective for every method). s / frame: the command's wall time over
the frames (flows, compilation and writing included). Prints Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def temporal_error(outs: list[np.ndarray], owner: np.ndarray, j: int = 1) -> np.ndarray:
    """Per frame t ≥ j: mean over visible pixels' channels of (x_t − x_{t−j} at the same surface point)²,
    over all pixels (invisible ones count 0, as the paper's masked mean)."""
    from make_clip import visible

    errs = []
    for t in range(j, len(outs)):
        same, sy, sx = visible(owner, t, j)
        diff = outs[t].astype(np.float64) - outs[t - j][sy, sx].astype(np.float64)
        errs.append(float(np.sum(same[..., None] * diff**2) / diff.size))
    return np.asarray(errs)


def run_command(argv: list[str]) -> tuple[int, str, float]:
    """``nst-jax ARGV`` in this process: (exit code, stderr, seconds)."""
    from nst_jax import cli

    err = io.StringIO()
    t0 = time.time()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, err.getvalue(), time.time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="converted weights (synthetic or real)")
    ap.add_argument("--style", default=None, help="style image (default: the bundled painting)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="64x80")
    ap.add_argument("--iterations", default="20,40,80", help="iterations a frame (comma list)")
    ap.add_argument("--passes", type=int, default=4, help="multi-pass: passes after the first")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--methods", default="independent,sequential,sequential:--temporal-weight=0,multipass",
                    help="methods (the first is the baseline); METHOD:--option=value adds options to that row")
    ap.add_argument("--long-term", action="store_true", help="also the blink clip, short- and long-term")
    ap.add_argument("--extra", default="", help="more options for every run (space-separated)")
    args = ap.parse_args(argv)
    from machine import cpu_model_and_features
    from make_clip import clip_with_owners

    from nst_jax import StyleConfig, image, stylize, weights
    from nst_jax.program.presets import preset

    h, w = (int(v) for v in args.size.lower().split("x"))
    style_path = Path(args.style) if args.style else Path(__file__).resolve().parents[1] / "nst_jax/assets/style.png"
    net = weights.load_weights(args.weights)
    work = Path(tempfile.mkdtemp(prefix="bench_video_"))

    def write_clip(name: str, blink: tuple[int, ...]):
        frames, _, _, owner = clip_with_owners(args.frames, h, w, seed=0, blink=blink)
        for t, f in enumerate(frames):
            image.save_image(work / name / f"frame_{t:04d}.png", f)
        return frames, owner

    def style_loss(outs, frames) -> float:
        """The preset's weighted style term at each output frame: the first loss of a one-step run
        started from it, at the same working size."""
        cfg: StyleConfig = preset(args.preset).replace(iterations=1, chunk_size=1, size=max(h, w))
        style = image.resize(image.load_image(style_path), (h, w), cfg.resample)
        return float(np.mean([stylize(c, style, net, cfg, init_image=o).parts()["style"][0]
                              for o, c in zip(outs, frames)]))

    def paint(clip: str, method: str, iterations: int, more: list[str]):
        out = work / f"{clip}-{method}-{iterations}-{'-'.join(more)}"
        n = iterations // (args.passes + 1) if method == "multipass" else iterations
        mp = ["--passes", str(args.passes)] if method == "multipass" else []
        code, err, seconds = run_command(["video", str(work / clip), str(style_path), "-o", str(out), "--weights",
                                          args.weights, "--preset", args.preset, "--size", str(max(h, w)),
                                          "--iterations", str(n), "--method", method, *mp, "--no-progress",
                                          *more, *args.extra.split()])
        if code != 0:
            raise SystemExit(f"nst-jax video failed ({code}): {err.strip().splitlines()[-1]}")
        return [image.load_image(p) for p in sorted(out.glob("frame_*.png"))], seconds

    frames, owner = write_clip("clip", ())
    label = "real" if net.pretrained else "synthetic"
    print(f"CPU: {cpu_model_and_features()[0]}; `nst-jax video`, preset {args.preset}, {label} weights "
          f"({Path(args.weights).name}), {args.frames} frames {h}x{w}, DIS flow (the command's), errors with the "
          f"exact motion; multi-pass: {args.passes + 1} passes of N/{args.passes + 1}\n")
    print("| iterations a frame | method | mean temporal error | vs independent | mean style loss | "
          "vs independent | s / frame |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in (int(v) for v in args.iterations.split(",")):
        ind = None
        for spec in args.methods.split(","):
            method, _, opts = spec.partition(":")
            more = [t for o in opts.split(":") if o for t in o.split("=", 1)]
            outs, seconds = paint("clip", method, n, more)
            err, sl = temporal_error(outs, owner).mean(), style_loss(outs, frames)
            if ind is None:
                ind = (err, sl)
            print(f"| {n} | {method}{' ' + ' '.join(more) if more else ''} | {err:.3e} | {ind[0] / err:.1f}x lower | {sl:.4g} | "
                  f"{100 * (sl / ind[1] - 1):+.1f} % | {seconds / len(outs):.2f} |", flush=True)
    if args.long_term:
        blink = (2, 5)
        frames, owner = write_clip("blink", blink)
        n = int(args.iterations.split(",")[len(args.iterations.split(",")) // 2])
        print(f"\nA still bar hides part of the background in frames {blink[0]} and {blink[1]} only; "
              f"{n} iterations a frame; the error under the bar (frames {blink[0] + 1} and {blink[1] + 1} against "
              f"{blink[0] - 1} and {blink[1] - 1}: the same still background) and the mean temporal error\n")
        print("| method | error under the bar, frame after it against frame before it | mean temporal error (t−1) "
              "| mean style loss |")
        print("|---|---:|---:|---:|")
        for method, more in (("independent", []), ("sequential", []), ("sequential", ["--long-term", "1,2,4"])):
            outs, _ = paint("blink", method, n, more)
            # under the bar: the still background of frame b + 1 against frame b − 1's, where frame b
            # hid it (a short-term loss sees frame b only there, and it showed the bar)
            after = np.mean([np.mean((outs[b + 1][owner[b] == 2].astype(np.float64) - outs[b - 1][owner[b] == 2]) ** 2)
                             for b in blink if b + 1 < len(outs)])
            name = method + (" --long-term 1,2,4" if more else "")
            print(f"| {name} | {after:.3e} | {temporal_error(outs, owner).mean():.3e} | "
                  f"{style_loss(outs, frames):.4g} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
