#!/usr/bin/env python
"""Temporal consistency measured: independent frames against Ruder et al.'s sequential algorithm.

    python scripts/bench_video.py --frames 8 --iterations 60 --temporal-weight 200

On the synthetic clip of ``scripts/make_clip.py`` (true flow known) and synthetic VGG19 weights,
at equal iterations per frame: per-frame temporal error (Ruder et al.: the masked mean squared
difference between frame t and the warped frame t−1), each method's mean style loss, seconds per
frame. Prints a Markdown table; ``--strip PATH`` writes frames (independent above, sequential
below), ``--plot PATH`` the per-frame errors. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="64x80")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--temporal-weight", type=float, default=200.0)
    ap.add_argument("--style-weight", type=float, default=None)
    ap.add_argument("--strip", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    from machine import cpu_model_and_features
    from make_clip import make_clip
    from nst_jax import StyleConfig, image, video, vgg
    from nst_jax.weights import synthetic_params

    h, w = (int(v) for v in args.size.lower().split("x"))
    frames, back, fwd = make_clip(args.frames, h, w, seed=0)
    rng = np.random.default_rng(1)
    style = np.clip(np.repeat(np.repeat(rng.random((8, 10, 3)), h // 8, 0), w // 10, 1)
                    + 0.1 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)
    net = synthetic_params("vgg19", seed=0)
    cfg = StyleConfig(optimizer="adam", learning_rate=0.02, iterations=args.iterations, chunk_size=args.iterations,
                      size=max(h, w), init="content", temporal_weight=args.temporal_weight)
    if args.style_weight is not None:
        cfg = cfg.replace(style_weight=args.style_weight)
    masks = video.frame_masks(list(back), list(fwd))
    rows = {}
    for name in ("independent", "sequential"):
        # one frame first, untimed: compilation (the same program for every later frame)
        if name == "independent":
            video.stylize_independent(frames[:1], style, net, cfg, convention=vgg.CAFFE)
            t0 = time.time()
            res = video.stylize_independent(frames, style, net, cfg, convention=vgg.CAFFE)
        else:
            video.stylize_sequential(frames[:2], style, net, cfg, list(back[:2]), flows_fwd=list(fwd[:2]),
                                     convention=vgg.CAFFE)
            t0 = time.time()
            res = video.stylize_sequential(frames, style, net, cfg, list(back), flows_fwd=list(fwd),
                                           convention=vgg.CAFFE)
        seconds = (time.time() - t0) / len(frames)
        outs = [r.output for r in res]
        errs = video.temporal_errors(outs, list(back), masks)
        style_loss = float(np.mean([r.loss_parts[-1, 1] for r in res]))
        rows[name] = (errs, style_loss, seconds, outs)
    print(f"CPU: {cpu_model_and_features()[0]}; {args.frames} frames {h}x{w}, {args.iterations} Adam iterations a "
          f"frame, temporal_weight {args.temporal_weight:g}, synthetic VGG19 weights\n")
    print("| method | mean temporal error | max | mean style loss | s / frame |")
    print("|---|---:|---:|---:|---:|")
    for name, (errs, sl, sec, _) in rows.items():
        print(f"| {name} | {errs.mean():.3e} | {errs.max():.3e} | {sl:.4g} | {sec:.2f} |")
    ind, seq = rows["independent"], rows["sequential"]
    print(f"\ntemporal error {ind[0].mean() / seq[0].mean():.1f}x lower; style loss {100 * (seq[1] / ind[1] - 1):+.1f} %")
    print("per frame (t = 1..):", " ".join(f"{a:.2e}/{b:.2e}" for a, b in zip(ind[0], seq[0])))
    if args.strip:
        top = np.concatenate(ind[3], axis=1)
        bottom = np.concatenate(seq[3], axis=1)
        image.save_image(args.strip, np.concatenate([top, bottom], axis=0), overwrite=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        t = np.arange(1, len(frames))
        ax.semilogy(t, ind[0], "o-", label="independent")
        ax.semilogy(t, seq[0], "s-", label="sequential (temporal loss)")
        ax.set_xlabel("frame")
        ax.set_ylabel("temporal error")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
