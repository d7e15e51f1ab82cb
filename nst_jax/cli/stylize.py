"""``nst-jax stylize``: one result (``OneRun``, ``run_one``), or many through ``batch``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
from typing import Any, Callable, Optional

from . import batch, common, plan
from .options import Parsed, config_from_args
from ..program.config import StyleConfig
from ..errors import ConfigError, ImageError, NSTError


@dataclasses.dataclass(frozen=True)
class OneRun:
    """One result's run, resolved from the arguments once: where it writes, what it may replace,
    its cadence and resume, its scales and devices (the library sees configs, arrays and paths)."""

    cfg: StyleConfig
    out: pathlib.Path
    may_replace: Callable[[pathlib.Path], bool]
    seed: int = 0
    progress: bool = True
    save_every: Optional[int] = None
    montage: Optional[pathlib.Path] = None
    loss_plot: Optional[pathlib.Path] = None
    checkpoint_every: Optional[int] = None
    checkpoint_path: Optional[pathlib.Path] = None
    resume: Optional[str] = None
    scales: Any = None
    iterations_per_scale: Any = None
    color_match: str = "chol"
    written: tuple[str, ...] = ()  # recorded in every checkpoint: what a resumed run may replace
    devices: Optional[list] = None  # the devices the image's rows are split over (``--devices``)
    web: bool = False  # a live view of the run (``--web``)


@dataclasses.dataclass(frozen=True)
class Images:
    """A run's decoded working images: content, styles, start image, the content's original size
    (for ``--original-size``) and the region masks of ``--content-mask``."""

    content: Any
    styles: list
    init: Any = None
    original_hw: Any = None
    masks: Any = None


def _resume_state(run: OneRun, net: Any, content: Any, shapes: list) -> tuple[Any, Any, list]:
    """(state, losses of the checkpoint's scale, (losses, evaluations) of each finished scale)."""
    import jax.numpy as jnp

    from ..engine import checkpoint, loop

    if run.resume is None:
        return None, None, []
    cfg = run.cfg

    def template(k: int):  # a fresh state of the checkpoint's scale
        if k >= len(shapes):
            raise checkpoint.CheckpointError(f"{run.resume}: made at scale {k + 1}, this run has {len(shapes)} "
                                             "(resume with the same --size and --scales)")
        return loop.init_state(jnp.zeros((*shapes[k], 3), jnp.float32), cfg.program(), cfg.values())

    state, all_losses, header = checkpoint.load(run.resume, template, config=cfg, seed=run.seed,
                                                weights_fingerprint=net.fingerprint, content_shape=tuple(content.shape))
    finished, start = [], 0
    for n, evals in header["scales_done"]:
        finished.append((all_losses[start:start + n], evals))
        start += n
    where = f" of scale {header['scale'] + 1}/{len(shapes)}" if len(shapes) > 1 else ""
    print(f"resuming {run.resume} at iteration {header['iteration']}{where}", file=sys.stderr)
    return state, all_losses[start:], finished


def _callback(run: OneRun, net: Any, content: Any, bar: Any, signals: common.Signals, multi: bool, live: Any = None):
    """The progress callback: the bar, intermediates, checkpoints, and a stop on a signal."""
    import numpy as np

    from ..engine import checkpoint
    from .. import image

    cfg = run.cfg

    def callback(p) -> bool:
        if live is not None:
            live.update(p.overall_iteration, np.concatenate([l for l, _ in p.finished] + [p.losses]), p.parts,
                        p.restored_image())
        post = dict(loss=f"{p.loss:.4g}", **{name: f"{v:.3g}" for name, v in p.parts.items()}, evals=p.evaluations)
        if multi:
            post["scale"] = f"{p.scale_index + 1}/{p.num_scales} {p.scale_shape[0]}x{p.scale_shape[1]}"
        bar.set_postfix(post, refresh=False)  # (drawn with the count, below)
        bar.update(p.overall_iteration - bar.n)
        if run.save_every and p.overall_iteration % run.save_every == 0 and p.overall_iteration < p.total_iterations:
            path = common.intermediate_path(run.out, p.overall_iteration)
            image.save_image(path, p.restored_image(), overwrite=run.may_replace(path), rounding=cfg.save_rounding)
        stop = signals.received is not None
        if run.checkpoint_path is not None and (stop or (run.checkpoint_every and
                                                         p.iteration % run.checkpoint_every == 0)):
            # every scale's losses so far; the state is this scale's (``--checkpoint-every`` counts
            # this scale's iterations)
            checkpoint.save(run.checkpoint_path, p.state, np.concatenate([l for l, _ in p.finished] + [p.losses]),
                            scales_done=[(len(l), e) for l, e in p.finished], outputs=run.written, config=cfg,
                            seed=run.seed, weights_fingerprint=net.fingerprint, content_shape=tuple(content.shape))
        return stop

    return callback


def _write(run: OneRun, images: Images, result: Any) -> None:
    """The output, and the montage and loss plot when asked."""
    from ..image import figures
    from .. import image

    cfg = run.cfg
    _, final = common.output_image(result, cfg, images.original_hw)
    image.save_image(run.out, final, overwrite=run.may_replace(run.out), rounding=cfg.save_rounding)
    content = images.content
    if run.montage is not None:
        panels = [content, final if final.shape == content.shape else image.resize(final, content.shape[:2]),
                  images.styles[0]]
        image.save_image(run.montage, figures.labelled_montage(panels, ["content", "result", "style"]),
                         overwrite=run.may_replace(run.montage))
    if run.loss_plot is not None:
        figures.save_loss_plot(run.loss_plot, result.losses, parts=result.parts(),
                               overwrite=run.may_replace(run.loss_plot), title=f"loss ({cfg.optimizer})")


def run_one(run: OneRun, net: Any, images: Images) -> int:
    """One result, written to ``run.out`` (and the montage, loss plot, intermediates, checkpoints).

    Returns:
      the exit code.
    """
    from ..control.scales import run_shapes, scale_iterations

    shapes = run_shapes(tuple(images.content.shape[:2]), run.scales)
    total = sum(scale_iterations(run.cfg, len(shapes), run.iterations_per_scale))
    resumed = _resume_state(run, net, images.content, shapes)
    live = _live_view(run, total) if run.web else None
    try:
        return _run_and_write(run, net, images, shapes, total, resumed, live)
    finally:
        if live is not None:
            live.close()


def _live_view(run: OneRun, iterations: int) -> Any:
    """``--web``: the page of ``nst-jax serve`` watching this run, on 127.0.0.1 (a free port)."""
    import webbrowser

    try:
        from ..serve.live import LiveView
    except ImportError as err:
        raise ConfigError(f"--web needs the serve extra: pip install 'nst-jax[serve]' ({err.name} is missing)") \
            from None
    live = LiveView(["stylize", "-o", str(run.out)], run.cfg.to_dict(), iterations)
    print(f"live view: {live.url}", file=sys.stderr, flush=True)
    # a desktop's browser opens it; on a machine without a display (where Python's webbrowser would
    # start a text browser in this terminal) the address is all
    desktop = sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if desktop and not os.environ.get("NST_JAX_NO_BROWSER"):
        try:
            webbrowser.open(live.url)
        except Exception:
            pass
    return live


def _run_and_write(run: OneRun, net: Any, images: Images, shapes: list, total: int, resumed: tuple,
                   live: Any) -> int:
    """The run and its outputs, the live view fed and ended when there is one; the exit code."""
    from tqdm import tqdm

    from ..control import runs as control

    cfg, content, styles = run.cfg, images.content, images.styles
    chunk = common.period_chunk([run.save_every or 0, run.checkpoint_every or 0], cfg.iterations, cfg.chunk_size)
    resume_state, resume_losses, resume_scales = resumed
    bar = tqdm(total=total, disable=not run.progress, unit="it", dynamic_ncols=True, file=sys.stderr)
    with common.Signals() as signals:
        blend = cfg.style_blend_weights
        style_arg = styles if blend is None or images.masks is not None else list(zip(styles, blend))
        # (with masks: one style per region, not blended)
        result = control.stylize_controlled(
            content, style_arg, net, cfg, seed=run.seed, callback=_callback(run, net, content, bar, signals,
                                                                            len(shapes) > 1, live),
            init_image=images.init, chunk_size=chunk, resume=resume_state, resume_losses=resume_losses,
            resume_scales=resume_scales, scales=run.scales, iterations_per_scale=run.iterations_per_scale,
            color_match_method=run.color_match, masks=images.masks, devices=run.devices)
        bar.update(result.iterations - bar.n)
        bar.close()
    _write(run, images, result)
    if live is not None:
        live.finish(run.out, {"done": "done", "nonfinite": "failed"}.get(result.status, "cancelled"))
    if result.status == "nonfinite":
        raise NSTError(common.nonfinite_advice(result, cfg, run.out))
    if signals.received is not None:
        hint = f"; resume with --resume {run.checkpoint_path}" if run.checkpoint_path is not None else ""
        print(f"stopped at iteration {result.iterations}; best image so far saved to {run.out}{hint}", file=sys.stderr)
        return signals.exit_code
    if run.checkpoint_path is not None and run.checkpoint_path.exists() and result.status == "done":
        run.checkpoint_path.unlink()  # the run is complete: its checkpoint has served
    if result.iterations == 0:
        print(f"{run.out}: 0 iterations; the start image was saved")
    else:
        print(f"{run.out}: {result.iterations} iterations, {result.evaluations} evaluations, "
              f"final loss {result.final_loss:.6g}")
    return 0


def _refuse_for_one(args: argparse.Namespace, parsed: Parsed, styles: list[str]) -> None:
    """Options of many results given to one run, and other combinations one run cannot take."""
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
    blend = parsed.cfg.style_blend_weights
    if blend is not None and len(blend) != len(styles):
        raise ConfigError(f"{len(blend)} style blend weights for {len(styles)} styles")
    if args.content_mask and blend is not None:
        raise ConfigError("--content-mask gives each style its own region; it does not mix with --style-blend-weights")


def _plan_one(args: argparse.Namespace, parsed: Parsed, styles: list[str], devices: Optional[int]) -> OneRun:
    """Every output path checked before any work: clashes with inputs, an interrupted run's
    checkpoint, extension, existing files, a directory that cannot take a file."""
    from ..engine import checkpoint
    from ..image import figures
    from .. import files, image

    cfg = parsed.cfg
    first = pathlib.Path(args.output)
    ckpt = pathlib.Path(args.checkpoint) if args.checkpoint else first.with_name(first.name + ".ckpt.npz")
    intermediates = ([common.intermediate_path(first, k) for k in range(args.save_every, cfg.iterations,
                                                                       args.save_every)] if args.save_every else [])
    inputs = {"content": args.content, **{f"style {i + 1}": st for i, st in enumerate(styles)},
              "--content-mask": args.content_mask, "--init": parsed.init_path, "--weights": args.weights}
    outputs = {"-o": first, "--montage": args.montage, "--loss-plot": args.loss_plot,
               "checkpoint": None if args.resume and pathlib.Path(args.resume) == ckpt else ckpt,
               **{f"intermediate {p.name}": p for p in intermediates}}
    files.refuse_clashes({**inputs, "--resume": args.resume}, outputs)
    # A resumed run may replace only the files its interrupted part was writing (recorded in the
    # checkpoint); anything else needs --overwrite.
    recorded = checkpoint.read_header(args.resume).get("outputs", []) if args.resume is not None else []
    may_replace = common.replaceable(args, recorded)
    resuming_same = args.resume is not None and pathlib.Path(args.resume).resolve() == ckpt.resolve()
    if ckpt.exists() and not (args.overwrite or resuming_same):
        raise ImageError(f"{ckpt}: an interrupted run's checkpoint is there; continue it with --resume {ckpt}, "
                         "or pass --overwrite to start afresh")
    files.probe_writable(ckpt)
    out = image.check_output_path(args.output, overwrite=may_replace(first))
    montage = (image.check_output_path(args.montage, overwrite=may_replace(pathlib.Path(args.montage)))
               if args.montage else None)
    if args.loss_plot and not figures.have_matplotlib():
        raise ConfigError(f"--loss-plot needs matplotlib: {figures.PLOT_EXTRA}")
    loss_plot = (image.check_output_path(args.loss_plot, overwrite=may_replace(pathlib.Path(args.loss_plot)))
                 if args.loss_plot else None)
    for path in intermediates:  # all beside -o, whose directory was probed just now
        image.check_output_path(path, overwrite=may_replace(path), probe=False)
    written = tuple(str(pathlib.Path(q).expanduser().resolve()) for q in [out, montage, loss_plot, ckpt] if q is not None)
    return OneRun(cfg, out, may_replace, seed=parsed.seeds[0], progress=not args.no_progress,
                  save_every=args.save_every, montage=montage, loss_plot=loss_plot,
                  checkpoint_every=args.checkpoint_every, checkpoint_path=ckpt, resume=args.resume,
                  scales=common.parse_scales(args.scales), iterations_per_scale=args.iterations_per_scale,
                  color_match=parsed.color_match, written=written, devices=common.devices(devices), web=args.web)


def cmd_stylize(args: argparse.Namespace) -> int:
    """``nst-jax stylize``: the arguments become a ``Parsed`` and a ``OneRun`` (or a batch) once."""
    from .. import image

    parsed = config_from_args(args)
    styles = plan.style_list(args)
    for name in ("--save-every", "--checkpoint-every", "--batch-size"):
        common.positive_option(name, getattr(args, name[2:].replace("-", "_")))
    batched = bool(args.batch or args.styles_dir or parsed.sweep or len(parsed.seeds) > 1)
    devices, spatial = common.resolve_mesh(args, batched=batched)
    if batched:
        if args.content_mask or args.save_every:
            raise ConfigError("--content-mask/--save-every work on single runs, not with --batch, a sweep or several "
                              "seeds")
        if args.montage or args.loss_plot:
            raise ConfigError("--montage/--loss-plot draw one run; with several results use --grid PATH")
        if args.web:
            raise ConfigError("--web watches one run; send several results to nst-jax serve to watch each")
        return batch.cmd_batch(args, parsed, styles, devices, spatial)
    _refuse_for_one(args, parsed, styles)
    run = _plan_one(args, parsed, styles, devices)
    cfg, max_pixels = parsed.cfg, args.max_pixels or image.DEFAULT_MAX_PIXELS
    # Sizes and memory from the headers, before any image is decoded or resized.
    sizes = plan.plan_sizes(args.content, styles, cfg, args.max_pixels, parsed.init_path, scales=run.scales)
    if args.content_mask:
        image.image_size(args.content_mask, max_pixels=max_pixels)
    # The weights before the memory check: a user without weights hears about that first.
    net = common.load_network(cfg, args.weights, download=not args.no_download)
    common.warn_not_pretrained(net)
    plan.check_memory(sizes, cfg, skip=args.skip_memory_check, devices=devices,
                      regions=len(styles) if args.content_mask else 0)
    content, style_images, init, hw = plan.working_images(args.content, styles, cfg, args.max_pixels, parsed.init_path)
    masks = None
    if args.content_mask:
        masks = image.load_region_mask(args.content_mask, len(style_images), tuple(content.shape[:2]),
                                       max_pixels=max_pixels)
    return run_one(run, net, Images(content, style_images, init, hw, masks))
