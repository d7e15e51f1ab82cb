"""Seed 002's experiment: the same content and style through VGG19, VGG16 and ResNet50.

The blog behind seed 002 runs the Keras style-transfer example three times, changing only the
network (and the loss weights that go with it). This script does the same with the presets
``keras-lbfgs`` (VGG19), ``keras-vgg16`` and ``keras-resnet50``: one montage

    content | style | VGG19 | VGG16 | ResNet50   (labelled)

and a table (markdown on stdout, optionally JSON) of each network's final loss, loss at the
start, evaluations made, milliseconds per function evaluation (loss + gradient, median of a few
timed calls after compiling) and the run's wall time.

Usage::

    python scripts/compare_networks.py -o montage.png                       # weights dir
    python scripts/compare_networks.py --weights-vgg19 v19.h5 --weights-vgg16 v16.h5 \\
        --weights-resnet50 r50.h5 --size 256 --json table.json
    python scripts/compare_networks.py --synthetic --size 64 --evaluations 20  # pipeline check

The losses of different networks are not comparable with each other (different features, weights
and loss weights); the table says how far each run got on its own objective and what one
evaluation costs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import warnings
from typing import Any, Optional, Sequence

import jax
import numpy as np

from nst_jax.image import figures
from nst_jax import image, preset, weights
from nst_jax.network import backbones as network, vgg
from nst_jax.cli.plan import working_images
from nst_jax.engine.single import stylize
from nst_jax.errors import NSTError
from nst_jax.objective.terms import network_objective
from nst_jax.objective.targets import compute_targets

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "nst_jax" / "assets"
# (label, preset, arch) in the blog's order: part 1, part 2, part 3.
NETWORKS: tuple[tuple[str, str, str], ...] = (
    ("VGG19", "keras-lbfgs", "vgg19"),
    ("VGG16", "keras-vgg16", "vgg16"),
    ("ResNet50", "keras-resnet50", "resnet50"),
)


def load_network(arch: str, path: Optional[str], synthetic: bool) -> weights.Network:
    """The network for ``arch``: random weights (``synthetic``), ``path``, or the weights directory.

    Args:
      arch: "vgg19", "vgg16" or "resnet50".
      path: a converted weights file, or None for ``weights.resolve_weights(arch)``.
      synthetic: use ``weights.synthetic_params(arch, 0)`` (Caffe convention; ResNet50 strided
        on the 1x1 convolution as Keras' weights are).

    Returns:
      A ``weights.Network``.
    """
    if synthetic:
        return weights.Network(
            arch=arch,
            params=weights.synthetic_params(arch, seed=0),
            convention=vgg.CAFFE,
            pretrained=False,
            source_name="",
            source_sha256="",
            fingerprint="synthetic",
            path="",
            stride_on="1x1" if arch == "resnet50" else None,
        )
    net = weights.load_weights(weights.resolve_weights(arch, path))
    if net.arch != arch:
        raise SystemExit(f"error: {net.path} holds {net.arch} weights, expected {arch}")
    return net


def ms_per_evaluation(loss_and_grad, x, repeats: int = 5) -> float:
    """Median wall time of one compiled loss-and-gradient call, in milliseconds."""
    jax.block_until_ready(loss_and_grad(x))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(loss_and_grad(x))
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def run_network(
    label: str,
    preset_name: str,
    net: weights.Network,
    content_path: str,
    style_path: str,
    size: int,
    evaluations: Optional[int],
    repeats: int = 5,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """One network's run of its preset.

    Args:
      label: the name shown in the table and the montage.
      preset_name: "keras-lbfgs", "keras-vgg16" or "keras-resnet50".
      net: its weights.
      content_path, style_path: image files.
      size: working height in pixels (the presets size the height, as the Keras example).
      evaluations: function-evaluation budget (None: the preset's, 10 rounds of 10).
      repeats: timed calls for the per-evaluation time.

    Returns:
      (table row, result image, content, style) with images RGB in [0, 1] at the working size.
    """
    cfg = preset(preset_name).replace(size=size)
    if evaluations is not None:
        cfg = cfg.replace(iterations=evaluations)
    content, styles, _, _ = working_images(content_path, [style_path], cfg, None)
    params, spec = network.net_spec(net)
    spec = network.with_pixel_scale(spec, cfg.pixel_scale)
    targets = compute_targets(params, spec, content, styles[0], cfg)
    program, values = cfg.program(), cfg.values()
    objective = jax.jit(jax.value_and_grad(lambda xn: network_objective(params, targets, xn, values, program, spec)[0]))
    x0 = spec.convention.to_network(jax.numpy.asarray(content))
    start_loss = float(objective(x0)[0])
    ms = ms_per_evaluation(objective, x0, repeats)
    t0 = time.perf_counter()
    result = stylize(content, styles[0], net, cfg)
    seconds = time.perf_counter() - t0
    # The loss of the final image itself (Result.losses are taken before each step's update).
    final_loss = float(objective(result.state.v)[0])
    row = {
        "network": label,
        "preset": preset_name,
        "shape": list(content.shape[:2]),
        "start_loss": start_loss,
        "final_loss": final_loss,
        "evaluations": int(result.evaluations),
        "steps": int(result.iterations),
        "ms_per_evaluation": ms,
        "seconds": seconds,
        "status": result.status,
    }
    return row, result.image, content, styles[0]


def labelled(img: np.ndarray, text: str, strip: int = 18) -> np.ndarray:
    """``img`` with a white caption strip underneath (Pillow ImageDraw, default font)."""
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    canvas = Image.new("RGB", (w, h + strip), (255, 255, 255))
    canvas.paste(Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    try:
        tw = draw.textlength(text)
    except AttributeError:  # pragma: no cover - Pillow < 8
        tw = 6 * len(text)
    draw.text((max(2, (w - tw) / 2), h + 3), text, fill=(0, 0, 0))
    return np.asarray(canvas, np.float32) / 255.0


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| network | preset | size | start loss | final loss | evaluations | ms / evaluation | run s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['preset']} | {r['shape'][0]}x{r['shape'][1]} | {r['start_loss']:.4g} | "
            f"{r['final_loss']:.4g} | {r['evaluations']} | {r['ms_per_evaluation']:.1f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content", default=str(ASSETS / "content.png"), help="content image (default: bundled)")
    p.add_argument("--style", default=str(ASSETS / "style.png"), help="style image (default: bundled)")
    p.add_argument("--weights-vgg19", metavar="PATH", help="converted VGG19 weights (default: weights directory)")
    p.add_argument("--weights-vgg16", metavar="PATH", help="converted VGG16 weights (default: weights directory)")
    p.add_argument("--weights-resnet50", metavar="PATH", help="converted ResNet50 weights (default: weights directory)")
    p.add_argument("--synthetic", action="store_true",
                   help="random weights: demonstrates the pipeline only, the images are not style transfer")
    p.add_argument("--size", type=int, default=256, help="working height in pixels (default 256; the blog: 400)")
    p.add_argument("--evaluations", type=int, default=None,
                   help="function evaluations per network (default: the presets' 100 = 10 rounds of maxfun=10)")
    p.add_argument("--networks", default="vgg19,vgg16,resnet50", help="comma-separated subset to run")
    p.add_argument("--repeats", type=int, default=5, help="timed calls for ms / evaluation (median)")
    p.add_argument("-o", "--output", default="montage.png", help="montage file (default montage.png)")
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the comparison; returns the exit code."""
    args = build_parser().parse_args(argv)
    wanted = [a.strip() for a in args.networks.split(",") if a.strip()]
    unknown = sorted(set(wanted) - {arch for _, _, arch in NETWORKS})
    if unknown or not wanted:
        print(f"error: --networks takes vgg19, vgg16, resnet50; got {args.networks!r}", file=sys.stderr)
        return 2
    if args.evaluations is not None and args.evaluations <= 0:
        print(f"error: --evaluations must be > 0; got {args.evaluations}", file=sys.stderr)
        return 2
    out = image.check_output_path(args.output, overwrite=args.overwrite)
    if args.synthetic:
        print("warning: --synthetic uses random weights: this demonstrates the pipeline only; the images will "
              "not look like style transfer and the losses say nothing about the networks", file=sys.stderr)
    paths = {"vgg19": args.weights_vgg19, "vgg16": args.weights_vgg16, "resnet50": args.weights_resnet50}
    nets = {}
    for _, _, arch in NETWORKS:  # every file is checked before any work
        if arch in wanted:
            try:
                nets[arch] = load_network(arch, paths[arch], args.synthetic)
            except NSTError as err:
                print(f"error: {err} (or pass --synthetic to check the pipeline)", file=sys.stderr)
                return 2
    rows, results = [], []
    content = style = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        for label, name, arch in NETWORKS:
            if arch not in wanted:
                continue
            net = nets[arch]
            print(f"{label}: {name} ...", file=sys.stderr)
            row, img, c, s = run_network(label, name, net, args.content, args.style, args.size, args.evaluations,
                                         args.repeats)
            rows.append(row)
            results.append((label, img))
            content, style = (c, s) if content is None else (content, style)
    panels = [labelled(content, "content"), labelled(style, "style")]
    panels += [labelled(img if img.shape == content.shape else image.resize(img, content.shape[:2]), label)
               for label, img in results]
    image.save_image(out, figures.montage(panels), overwrite=args.overwrite)
    table = markdown_table(rows)
    print(table)
    if args.json:
        payload = {"content": args.content, "style": args.style, "synthetic": args.synthetic, "size": args.size,
                   "device": str(jax.devices()[0]), "rows": rows}
        pathlib.Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"montage: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
