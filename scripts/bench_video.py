#!/usr/bin/env python
"""Temporal consistency measured: independent frames against Ruder et al.'s sequential and multi-pass algorithms.

    python scripts/bench_video.py --frames 8 --iterations 60 --temporal-weight 200

On the synthetic clip of ``scripts/make_clip.py`` (true flow known) and synthetic VGG19 weights,
at equal iterations per frame: per-frame temporal error (Ruder et al.: the masked mean squared
difference between frame t and the warped frame t−1), each method's mean style loss, seconds per
frame; the algorithms run with the true flow and with OpenCV's estimate (``--flow``), the error is
always measured with the true one. Prints a Markdown table; ``--strip PATH`` writes frames (a row a
method, true flow), ``--plot PATH`` the per-frame errors. A measurement, not a test.
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
    ap.add_argument("--iterations", type=int, default=60, help="iterations a frame, every method")
    ap.add_argument("--passes", type=int, default=3, help="multi-pass: passes after the first; each of the "
                    "passes + 1 runs iterations / (passes + 1)")
    ap.add_argument("--temporal-weight", type=float, default=200.0)
    ap.add_argument("--style-weight", type=float, default=None)
    ap.add_argument("--flow", default="true,dis", help="flows the algorithms use: true (the clip's), dis, "
                    "farneback (OpenCV); the error is always measured with the true flow")
    ap.add_argument("--strip", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    from machine import cpu_model_and_features
    from make_clip import make_clip
    from nst_jax import StyleConfig, flow, image, video, vgg
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
    per_pass = args.iterations // (args.passes + 1)
    mp_cfg = cfg.replace(iterations=per_pass, chunk_size=per_pass)
    true_masks = video.frame_masks(list(back), list(fwd))
    flows = {"true": (list(back), list(fwd))}
    flow_seconds = {}
    for name in args.flow.split(","):
        if name != "true":
            t0 = time.time()
            b = [None] + [flow.estimate(frames[t], frames[t - 1], name) for t in range(1, len(frames))]
            f = [None] + [flow.estimate(frames[t - 1], frames[t], name) for t in range(1, len(frames))]
            flow_seconds[name] = (time.time() - t0) / (2 * (len(frames) - 1))
            flows[name] = (b, f)

    def run(method: str, fb, ff, clip):
        if method == "independent":
            return [r.output for r in video.stylize_independent(clip, style, net, cfg, convention=vgg.CAFFE)], None
        if method == "sequential":
            res = video.stylize_sequential(clip, style, net, cfg, fb[:len(clip)], flows_fwd=ff[:len(clip)],
                                           convention=vgg.CAFFE)
            return [r.output for r in res], res
        res = video.stylize_multipass(clip, style, net, mp_cfg, fb[:len(clip)], ff[:len(clip)], passes=args.passes,
                                      convention=vgg.CAFFE)
        return [r.output for r in res], res

    def style_loss(outs) -> float:
        """The mean weighted style term at each output frame, one objective for every method (no
        temporal term): the first recorded loss of a one-step run started from the frame."""
        from nst_jax import stylize

        one = cfg.replace(iterations=1, chunk_size=1)
        return float(np.mean([stylize(c, style, net, one, init_image=o, convention=vgg.CAFFE).loss_parts[0, 1]
                              for o, c in zip(outs, frames)]))

    rows = {}
    plan = [("independent", "true")] + [(m, f) for m in ("sequential", "multipass") for f in flows]
    for method, fname in plan:
        fb, ff = flows[fname]
        run(method, fb, ff, frames[:2])  # compilation, untimed (one program for every later frame)
        t0 = time.time()
        outs, _ = run(method, fb, ff, frames)
        seconds = (time.time() - t0) / len(frames)
        errs = video.temporal_errors(outs, list(back), true_masks)
        label = method if method == "independent" else f"{method}, {fname} flow"
        rows[label] = (errs, style_loss(outs), seconds, outs)
    print(f"CPU: {cpu_model_and_features()[0]}; {args.frames} frames {h}x{w}, {args.iterations} Adam iterations a "
          f"frame (multi-pass: {args.passes + 1} passes of {per_pass}), temporal_weight {args.temporal_weight:g}, "
          "synthetic VGG19 weights\n")
    if flow_seconds:
        print("flow estimation:", ", ".join(f"{k} {1000 * v:.1f} ms a flow" for k, v in flow_seconds.items()), "\n")
    print("| method | mean temporal error | max | vs independent | mean style loss | vs independent | s / frame |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ind = rows["independent"]
    for name, (errs, sl, sec, _) in rows.items():
        print(f"| {name} | {errs.mean():.3e} | {errs.max():.3e} | {ind[0].mean() / errs.mean():.1f}x lower | "
              f"{sl:.4g} | {100 * (sl / ind[1] - 1):+.1f} % | {sec:.2f} |")
    print()
    for name, (errs, *_rest) in rows.items():
        print(f"per frame, {name}:", " ".join(f"{e:.2e}" for e in errs))
    if args.strip:
        shown = [r for r in rows if r == "independent" or "true" in r]
        image.save_image(args.strip, np.concatenate([np.concatenate(rows[r][3], axis=1) for r in shown], axis=0),
                         overwrite=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        t = np.arange(1, len(frames))
        for name, (errs, *_rest) in rows.items():
            ax.semilogy(t, errs, "o-", label=name, markersize=3)
        ax.set_xlabel("frame")
        ax.set_ylabel("temporal error")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
