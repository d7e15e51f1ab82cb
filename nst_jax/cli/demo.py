"""``nst-jax demo``: the bundled photo in the bundled painting's style, sized for the device."""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, NamedTuple, Optional

from . import common, plan
from .stylize import Images, OneRun, run_one
from ..errors import ConfigError
from ..program.presets import PRESETS, preset

ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets"


# The demo's settings. CPU: measured on this project's 2-core machine (BENCHMARKS.md, "The demo"):
# 128 px then 256 px, 200 + 100 evaluations, about 67 s with the real weights; 500 evaluations at
# 256 px, the earlier demo, took 147 s there (and 8 minutes beside other work) for a painting that
# looks the same. Accelerators: the default preset's own length at 512 px, coarse-to-fine.
class DemoPlan(NamedTuple):
    """A demo's long side, its scales (coarse to fine) and iterations at each."""

    size: int
    scales: tuple[int, ...]
    iterations: tuple[int, ...]


DEMO_CPU = DemoPlan(256, (128, 256), (200, 100))
DEMO_ACCELERATOR = DemoPlan(512, (256, 362, 512), (500, 250, 250))
DEMO_SYNTHETIC = DemoPlan(96, (96,), (30,))


def demo_plan(args: argparse.Namespace) -> tuple[int, Optional[list[int]], list[int]]:
    """(long side, scales or None for one, iterations per scale) of the demo on this device.

    ``--size`` runs that one size with the plan's total iterations (or ``--iterations``);
    ``--iterations`` alone replaces the final scale's count.
    """
    import jax

    chosen = DEMO_SYNTHETIC if args.synthetic else DEMO_CPU if jax.default_backend() == "cpu" else DEMO_ACCELERATOR
    per_scale = list(chosen.iterations)
    if args.size is not None:
        return args.size, None, [args.iterations or sum(per_scale)]
    if args.iterations is not None:
        per_scale[-1] = args.iterations
    return chosen.size, (list(chosen.scales) if len(chosen.scales) > 1 else None), per_scale


def add_parser(sub: Any) -> None:
    """The ``demo`` command's options."""
    d = sub.add_parser("demo", help="paint the bundled example images (a first run, or a check of the pipeline)",
                       description="Paint the example photo that ships with nst-jax in the example painting's style; "
                                   "writes DIR/result.png, DIR/montage.png (content | result | style) and, with "
                                   "matplotlib, DIR/loss.png. Sizes and lengths are chosen for the device: on a CPU "
                                   f"{DEMO_CPU.size} px coarse-to-fine from {DEMO_CPU.scales[0]} px "
                                   f"({'+'.join(map(str, DEMO_CPU.iterations))} iterations: L-BFGS evaluations "
                                   "with the default preset; about a minute on 2 cores), on a GPU or TPU "
                                   f"{DEMO_ACCELERATOR.size} px coarse-to-fine from {DEMO_ACCELERATOR.scales[0]} "
                                   f"px ({'+'.join(map(str, DEMO_ACCELERATOR.iterations))}).")
    d.add_argument("-o", "--output-dir", default="demo", metavar="DIR", help="where the pictures go (default: demo)")
    d.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    d.add_argument("--weights", metavar="FILE", help="converted weights file (default: the weights directory; fetched "
                   "on first use)")
    d.add_argument("--synthetic", action="store_true",
                   help=f"random weights, no download: a check that the pipeline runs ({DEMO_SYNTHETIC.size} px, "
                        f"{DEMO_SYNTHETIC.iterations[0]} iterations, seconds), not art")
    d.add_argument("--iterations", type=int, default=None, help="iterations (L-BFGS evaluations) at the final size "
                   "(default: chosen for the device, as above)")
    d.add_argument("--size", type=int, default=None, help="long side in pixels (default: chosen for the device, as "
                   "above); a size of its own runs at that one scale")
    d.add_argument("--overwrite", action="store_true", help="replace the pictures of an earlier demo")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_demo(args: argparse.Namespace) -> int:
    """``nst-jax demo``: a ``OneRun`` of the bundled images."""
    from ..image import figures
    from .. import image, weights

    if args.synthetic and args.weights:
        raise ConfigError("--synthetic uses random weights; it does not go with --weights")
    common.positive_option("--iterations", args.iterations)
    size, scales, per_scale = demo_plan(args)
    cfg = preset(args.preset).replace(size=size, size_side="long", shape=None, iterations=per_scale[0])
    outdir = pathlib.Path(args.output_dir)
    out = image.check_output_path(outdir / "result.png", overwrite=args.overwrite)
    montage = image.check_output_path(outdir / "montage.png", overwrite=args.overwrite)
    loss_plot = None
    if figures.have_matplotlib():
        loss_plot = image.check_output_path(outdir / "loss.png", overwrite=args.overwrite)
    if args.synthetic:
        conv = {"pytorch": "torchvision"}.get(args.preset, "caffe")
        from ..network import vgg

        params = weights.synthetic_params(cfg.arch, seed=0)
        net = weights.Network(arch=cfg.arch, params=params, convention=vgg.CONVENTIONS[conv], pretrained=False,
                              source_name="", source_sha256="", fingerprint="synthetic", path="")
    else:
        net = common.load_network(cfg, args.weights, next_step="run `nst-jax demo --synthetic` to check the pipeline "
                                  "without weights, or give --weights FILE")
    common.warn_not_pretrained(net)
    content_path, style_path = ASSETS / "content.png", ASSETS / "style.png"
    content, styles, init, hw = plan.working_images(str(content_path), [str(style_path)], cfg, None)
    run = OneRun(cfg, out, lambda path: bool(args.overwrite), progress=not args.no_progress, montage=montage,
                 loss_plot=loss_plot, scales=scales, iterations_per_scale=per_scale if scales else None)
    code = run_one(run, net, Images(content, styles, init, hw))
    if code == 0 and loss_plot is None:
        print(f"(no {outdir / 'loss.png'}: the loss plot needs matplotlib; {figures.PLOT_EXTRA})", file=sys.stderr)
    return code

