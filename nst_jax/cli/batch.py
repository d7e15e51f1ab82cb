"""``nst-jax stylize`` with many results: styles (``--batch``), value sweeps and seeds, one program.

The members are the product of three axes: the styles (with ``--batch`` or ``--styles-dir``; else
every member paints with all the styles, blended), the swept values (a comma list on a value
option, e.g. ``--style-weight 1e2,1e3``) and the seeds (``--seed 0,1,2``). They run together in
``control.stylize_many_controlled``: one compiled program, whatever the values. Each result is
written to ``-o DIR``, with ``manifest.json`` and, with ``--grid PATH``, a labelled grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import pathlib
import sys
import time
from typing import Any, Optional

from ..program.config import VALUES, StyleConfig, fields_of
from ..errors import ConfigError, ImageError, NSTError

def _last_finite(values: Any) -> Optional[float]:
    import numpy as np

    finite = np.asarray(values, np.float64)[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


# A cap on the members of one command (the product of the axes): each is a full result in memory.
MAX_MEMBERS = 1024


@dataclasses.dataclass(frozen=True)
class Member:
    """One result of a batch: its style (an index, or None: all styles blended), values and seed."""

    style: Optional[int]
    values: tuple[tuple[str, float], ...]
    seed: int


def _option_name(field: str) -> str:
    f = {f.name: f for f in fields_of(VALUES)}[field]
    return f.metadata["option"][0].lstrip("-")


def members_of(n_styles: int, per_style: bool, sweep: dict[str, tuple[float, ...]],
               seeds: tuple[int, ...]) -> list[Member]:
    """The product of the axes, styles slowest, seeds fastest.

    Args:
      n_styles: the style images given.
      per_style: one result per style (``--batch``); else each member blends all the styles.
      sweep: field -> values (from ``options.config_from_args``).
      seeds: the seeds.
    """
    style_axis: list[Optional[int]] = list(range(n_styles)) if per_style else [None]
    names = list(sweep)
    combos = list(itertools.product(*(sweep[n] for n in names)))
    out = [Member(s, tuple(zip(names, combo)), seed) for s in style_axis for combo in combos for seed in seeds]
    if len(out) > MAX_MEMBERS:
        raise ConfigError(f"{len(out)} results in one command ({len(style_axis)} styles x {len(combos)} value "
                          f"combinations x {len(seeds)} seeds); at most {MAX_MEMBERS}: split the sweep")
    return out


def _label(member: Member, style_names: list[str]) -> str:
    parts = [] if member.style is None else [style_names[member.style]]
    parts += [f"{_option_name(k)}{v:g}" for k, v in member.values]
    return "_".join(parts)


def output_names(stem: str, members: list[Member], style_names: list[str], seeds: tuple[int, ...], ext: str) -> list[str]:
    """One file name per member: ``CONTENT_STYLE_style-weight100_seed3.EXT`` (the parts that vary)."""
    out, seen = [], set()
    for i, m in enumerate(members):
        name = "_".join(p for p in [stem, _label(m, style_names), f"seed{m.seed}" if len(seeds) > 1 else ""] if p)
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        out.append(name + ext)
    return out


def grid_layout(members: list[Member], style_names: list[str], seeds: tuple[int, ...]
                ) -> tuple[list[list[int]], list[str], list[str]]:
    """Rows and columns of the grid: the last varying axis is the columns, the others the rows.

    Returns:
      (cells: rows of member indices, row labels, column labels).
    """
    axes: list[tuple[str, list[Any]]] = []
    if any(m.style is not None for m in members):
        axes.append(("style", sorted({m.style for m in members})))
    for k, (name, _) in enumerate(members[0].values):
        axes.append((name, list(dict.fromkeys(m.values[k][1] for m in members))))
    if len(seeds) > 1:
        axes.append(("seed", list(seeds)))

    def key(m: Member) -> tuple:
        k: list[Any] = [] if m.style is None else [m.style]
        return tuple(k + [v for _, v in m.values] + ([m.seed] if len(seeds) > 1 else []))

    index = {key(m): i for i, m in enumerate(members)}

    def text(name: str, value: Any) -> str:
        if name == "style":
            return style_names[value]
        if name == "seed":
            return f"seed {value}"
        return f"{_option_name(name)} {value:g}"

    if not axes:
        return [[0]], [""], [""]
    *row_axes, (col_name, col_values) = axes
    rows, row_labels = [], []
    for combo in itertools.product(*(values for _, values in row_axes)):
        rows.append([index[tuple(combo) + (c,)] for c in col_values])
        row_labels.append(", ".join(text(n, v) for (n, _), v in zip(row_axes, combo)))
    return rows, row_labels, [text(col_name, c) for c in col_values]


def init_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` from --coordinator/--num-processes/--process-id, else from
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, else JAX's cluster detection
    (Slurm, Cloud TPU, ...). JAX itself reads only the first variable: the other two are ours."""
    import jax

    def pick(value, env, kind):
        if value is not None:
            return value
        text = os.environ.get(env)
        if text is None or text == "":
            return None
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{env} must be {'an integer' if kind is int else 'HOST:PORT'}; got {text!r}") from None

    kw = {"coordinator_address": pick(args.coordinator, "JAX_COORDINATOR_ADDRESS", str),
          "num_processes": pick(args.num_processes, "JAX_NUM_PROCESSES", int),
          "process_id": pick(args.process_id, "JAX_PROCESS_ID", int)}
    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        jax.distributed.initialize(**kw)
    except (ValueError, TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--distributed: {first} (set --coordinator HOST:PORT --num-processes N --process-id I, "
                          "or run under Slurm / on Cloud TPU)") from None


def _member_description(m: Member, styles: list[str]) -> dict:
    """A member as a checkpoint records it (a resume must have the same members): its style file
    (or all of them, blended), swept values and seed."""
    return {"style": styles if m.style is None else styles[m.style], "values": [[k, float(v)] for k, v in m.values],
            "seed": m.seed}


def _done_arrays(done: Any) -> Optional[dict]:
    """The finished groups' results (a ``batching.ManyResult``) as ``checkpoint.save_batch`` takes them."""
    import numpy as np

    from ..engine.checkpoint import STATUSES

    if done is None:
        return None
    rows = np.concatenate([done.losses[..., None], done.loss_parts], axis=-1)
    return {"done_images": done.images, "done_best": done.best_images, "done_rows": rows,
            "done_evals": done.evaluations, "done_steps": done.steps,
            "done_status": np.asarray([STATUSES.index(s) for s in done.status], np.uint8)}


def _resume_of(arrays: tuple, cfg: StyleConfig, configs: list, seeds: list) -> Any:
    """A ``batching.ManyResume`` from ``checkpoint.load_batch``'s (state, rows, done arrays)."""
    from ..engine.batching import ManyResult, ManyResume
    from ..engine.checkpoint import STATUSES
    from ..objective.terms import active_terms

    state, rows, done, _ = arrays
    if done is None:
        return ManyResume(None, state, rows)
    k = len(done["done_evals"])
    finished = ManyResult(done["done_images"], done["done_best"], done["done_rows"][..., 0], done["done_evals"],
                          int(done["done_steps"].max()), [STATUSES[int(c)] for c in done["done_status"]], cfg,
                          seeds[:k], configs[:k], loss_parts=done["done_rows"][..., 1:],
                          terms=active_terms(cfg.program()), steps=done["done_steps"])
    return ManyResume(finished, state, rows)


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """A batch command resolved once: its members (this host's share ``mine``), every path it
    writes (checked before any work), the checkpoint, and which existing files it may replace."""

    members: list[Member]
    mine: list[int]
    style_names: list[str]
    seeds: tuple[int, ...]
    outdir: pathlib.Path
    outs: list[pathlib.Path]
    manifest: pathlib.Path
    grid: Optional[pathlib.Path]
    checkpoint: pathlib.Path
    may_replace: Any
    written: tuple[str, ...]
    resume_header: dict
    host: int
    hosts: int


def _plan_batch(args: argparse.Namespace, parsed: Any, styles: list[str], host: int, hosts: int) -> BatchPlan:
    """Every member and every path the batch writes, checked against the inputs before any work."""
    from ..engine import checkpoint
    from .. import files, image
    from . import common

    members = members_of(len(styles), bool(args.batch or args.styles_dir), parsed.sweep, parsed.seeds)
    fmt = args.format or "png"
    ext = "." + fmt.lower().lstrip(".")
    if ext not in image.IMAGE_EXTENSIONS:  # a format is an extension, never a path ("png/../../x.png")
        raise ConfigError(f"--format {fmt!r:.60}: give one of "
                          f"{', '.join(sorted(e.lstrip('.') for e in image.IMAGE_EXTENSIONS))}")
    outdir = pathlib.Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise ImageError(f"{outdir}: exists and is not a directory (several results are written into -o DIR)")
    if not outdir.exists() and outdir.suffix.lower() in image.IMAGE_EXTENSIONS:
        raise ConfigError(f"{len(members)} results (a sweep, seeds or --batch) are written into a directory: "
                          f"-o {outdir} names an image file; give -o a directory")
    if args.grid and hosts > 1:
        raise ConfigError("--grid needs every result in one process; it does not work with --distributed")
    style_names = [pathlib.Path(s).stem for s in styles]
    names = output_names(pathlib.Path(args.content).stem, members, style_names, parsed.seeds, ext)
    mine = list(range(host, len(members), hosts))  # each host runs and writes its own share
    if hosts > 1 and (args.checkpoint_every or args.resume or args.checkpoint):
        raise ConfigError("--checkpoint-every/--checkpoint/--resume: not with --distributed (one checkpoint per "
                          "command)")
    # Checkpoints as for one run: written every --checkpoint-every iterations and on Ctrl-C / SIGTERM,
    # removed when the batch is complete; a resumed batch may replace the files its interrupted part wrote.
    ckpt = pathlib.Path(args.checkpoint) if args.checkpoint else outdir / "batch.ckpt.npz"
    resume_header = checkpoint.read_header(args.resume) if args.resume is not None else {}
    may_replace = common.replaceable(args, resume_header.get("outputs", []))
    outs = [image.check_output_path(outdir / names[i], overwrite=may_replace(outdir / names[i])) for i in mine]
    manifest = outdir / ("manifest.json" if hosts == 1 else f"manifest-{host}.json")
    if manifest.exists() and not may_replace(manifest):
        raise ImageError(f"{manifest}: already exists; pass --overwrite to replace it")
    grid = image.check_output_path(args.grid, overwrite=may_replace(pathlib.Path(args.grid))) if args.grid else None
    resuming_same = args.resume is not None and pathlib.Path(args.resume).resolve() == ckpt.resolve()
    files.refuse_clashes({"content": args.content, **{f"style {i + 1}": st for i, st in enumerate(styles)},
                          "--weights": args.weights, "--resume": args.resume},
                         {**{f"output {k + 1} ({o.name})": o for k, o in enumerate(outs)}, "manifest": manifest,
                          "--grid": grid, "checkpoint": None if resuming_same else ckpt})
    # (one label a member: two resolving to one file are found)
    if ckpt.exists() and not (args.overwrite or resuming_same):
        raise ImageError(f"{ckpt}: an interrupted batch's checkpoint is there; continue it with --resume {ckpt}, "
                         "or pass --overwrite to start afresh")
    written = tuple(str(pathlib.Path(q).expanduser().resolve()) for q in [*outs, manifest, grid, ckpt] if q is not None)
    return BatchPlan(members, mine, style_names, parsed.seeds, outdir, outs, manifest, grid, ckpt, may_replace,
                     written, resume_header, host, hosts)


def _load_resume(args: argparse.Namespace, bp: BatchPlan, cfg: StyleConfig, configs: list, content: Any,
                 meta: dict) -> Any:
    """The ``batching.ManyResume`` of ``--resume`` (None without it)."""
    import jax

    from ..engine import checkpoint, driver, loop

    if args.resume is None:
        return None

    def template(g: int):  # a fresh stacked state of the running group
        one = loop.init_state(jax.numpy.zeros(content.shape, jax.numpy.float32), cfg.program(), cfg.values())
        return driver.stack([one] * g)

    loaded = checkpoint.load_batch(args.resume, template, group_size=args.batch_size,
                                   max_rows=2 * cfg.iterations + 64, **meta)
    resume = _resume_of(loaded, cfg, configs, [bp.members[i].seed for i in bp.mine])
    done = 0 if resume.done is None else len(resume.done)
    print(f"resuming {args.resume}: {done} of {len(bp.mine)} results done, the next {len(resume.rows)} at "
          f"iteration {loaded[3]['iteration']}", file=sys.stderr)
    return resume


def _callback(args: argparse.Namespace, bp: BatchPlan, bar: Any, signals: Any, per_member: int, checkpointing: bool,
              group: int, meta: dict):
    """The progress callback: the bar (every group's iterations, and the group it is on), the
    checkpoints, and a stop on a signal."""
    from ..engine import checkpoint

    def callback(p) -> bool:
        post = {"group": f"{p.group + 1}/{p.groups}"} if p.groups > 1 else {}
        post["mean_loss"] = f"{p.loss:.4g}"
        post.update({name: f"{value:.3g}" for name, value in p.parts.items()})
        bar.set_postfix(post, refresh=False)  # (drawn with the count, below: one line, never a stale group)
        bar.update(p.group * per_member + p.overall_iteration - bar.n)
        stop = signals.received is not None
        if checkpointing and (stop or (args.checkpoint_every and p.iteration % args.checkpoint_every == 0)):
            checkpoint.save_batch(bp.checkpoint, p.batch_state, p.rows, _done_arrays(p.done), group_size=group,
                                  outputs=bp.written, **meta)
        return stop

    return callback


def _write_results(args: argparse.Namespace, bp: BatchPlan, many: Any, cfg: StyleConfig, hw: Any, styles: list[str],
                   manifest: dict) -> list[dict]:
    """Each result's image, the grid and the manifest; returns the manifest's entries."""
    from ..image import figures
    from .. import image
    from . import common

    entries, pictures = [], []
    for k in range(len(many)):
        r, m = many[k], bp.members[bp.mine[k]]
        working, img = common.output_image(r, cfg, hw)
        pictures.append(working)
        image.save_image(bp.outs[k], img, overwrite=bp.may_replace(bp.outs[k]), rounding=cfg.save_rounding)
        entries.append({"output": str(bp.outs[k]), "style": styles[m.style] if m.style is not None else styles,
                        "values": dict(m.values), "seed": m.seed, "final_loss": r.final_loss,
                        "final_parts": {name: _last_finite(v) for name, v in r.parts().items()},
                        "iterations": r.iterations, "evaluations": r.evaluations, "status": r.status})
    if bp.grid is not None and len(pictures) == len(bp.members):
        rows, row_labels, col_labels = grid_layout(bp.members, bp.style_names, bp.seeds)
        picture = figures.grid([[pictures[i] for i in row] for row in rows], row_labels, col_labels)
        image.save_image(bp.grid, picture, overwrite=bp.may_replace(bp.grid))
    manifest = {**manifest, "grid": None if bp.grid is None else str(bp.grid), "config": cfg.to_dict(),
                "results": entries}
    image.write_file_atomic(bp.manifest, json.dumps(manifest, indent=2).encode(), overwrite=True)
    return entries


def cmd_batch(args: argparse.Namespace, parsed: Any, styles: list[str], devices: Optional[int], spatial: int) -> int:
    """Every member (styles x swept values x seeds) optimised together; writes the images, a manifest
    and the optional grid."""
    import jax

    from tqdm import tqdm

    from ..engine import batching
    from ..control import runs as control, scales
    from . import common, plan

    if not args.distributed and (args.coordinator or args.num_processes is not None or args.process_id is not None):
        raise ConfigError("--coordinator/--num-processes/--process-id set up --distributed; give it too")
    if args.distributed:
        init_distributed(args)
    cfg = parsed.cfg
    bp = _plan_batch(args, parsed, styles, jax.process_index(), jax.process_count())
    if parsed.init_path is not None:
        raise ConfigError("--init FILE is not supported with several results; use --init content/noise/...")
    configs = [cfg.replace(**dict(bp.members[i].values)) for i in bp.mine]  # validates every swept value
    # Sizes and memory from the headers, before any image is decoded; an explicit --batch-size
    # is checked as given (the default batch is what fits).
    run_scales = common.parse_scales(args.scales)
    sizes = plan.plan_sizes(args.content, styles, cfg, args.max_pixels, scales=run_scales)
    net = common.load_network(cfg, args.weights, download=not args.no_download)
    common.warn_not_pretrained(net)
    plan.check_memory(sizes, cfg, skip=args.skip_memory_check, devices=devices,
                      batch=min(args.batch_size or 1, max(len(bp.mine), 1)))
    content, style_imgs, _, hw = plan.working_images(args.content, styles, cfg, args.max_pixels)
    blended = style_imgs if cfg.style_blend_weights is None else list(zip(style_imgs, cfg.style_blend_weights))
    specs = [blended if bp.members[i].style is None else style_imgs[bp.members[i].style] for i in bp.mine]
    n_scales = len(scales.run_shapes(tuple(content.shape[:2]), run_scales))
    if n_scales > 1 and (args.checkpoint_every or args.resume or args.checkpoint):
        raise ConfigError("--checkpoint-every/--checkpoint/--resume with several results work with one scale; "
                          "drop --scales or run the results one at a time")
    device_list = common.devices(devices)  # (a bad --devices is one error line before any work)
    group = args.batch_size or bp.resume_header.get("batch", {}).get("group_size") or \
        batching.default_batch_size(int(content.shape[0]), int(content.shape[1]), cfg, len(bp.mine))
    meta = dict(config=cfg, members=[_member_description(bp.members[i], styles) for i in bp.mine],
                weights_fingerprint=net.fingerprint, content_shape=tuple(content.shape))
    resume = _load_resume(args, bp, cfg, configs, content, meta)
    per_member = sum(scales.scale_iterations(cfg, n_scales, args.iterations_per_scale))
    groups = -(-len(bp.mine) // group)
    bar = tqdm(total=per_member * groups, disable=args.no_progress, unit="it", dynamic_ncols=True, file=sys.stderr,
               desc=f"{len(bp.mine)} results" + (f", {groups} groups of {group}" if groups > 1 else ""))
    with common.Signals() as signals:
        t0 = time.time()
        many = control.stylize_many_controlled(
            content, specs, net, cfg, configs=configs, seeds=[bp.members[i].seed for i in bp.mine],
            callback=_callback(args, bp, bar, signals, per_member, n_scales == 1, group, meta),
            chunk_size=common.period_chunk([args.checkpoint_every or 0], cfg.iterations, cfg.chunk_size),
            batch_size=group, scales=run_scales, iterations_per_scale=args.iterations_per_scale,
            color_match_method=parsed.color_match, devices=device_list, spatial=spatial, resume=resume)
        elapsed = time.time() - t0
        bar.close()
    run = {"content": args.content, "preset": args.preset, "weights": net.path, "host": bp.host, "hosts": bp.hosts,
           "seconds": round(elapsed, 3), "sweep": {k: list(v) for k, v in parsed.sweep.items()},
           "seeds": list(bp.seeds)}
    return _finish(args, bp, many, cfg, hw, styles, run, signals)


def _finish(args: argparse.Namespace, bp: BatchPlan, many: Any, cfg: StyleConfig, hw: Any, styles: list[str],
            run: dict, signals: Any) -> int:
    """Write the results and the manifest, remove a served checkpoint, and say how the batch ended."""
    entries = _write_results(args, bp, many, cfg, hw, styles, run)
    if signals.received is not None:
        print(f"stopped; {len(entries)} results saved in {bp.outdir}; resume with --resume {bp.checkpoint}",
              file=sys.stderr)
        return signals.exit_code
    if bp.checkpoint.exists() and all(e["status"] != "stopped" for e in entries):
        bp.checkpoint.unlink()  # the batch is complete: its checkpoint has served
    bad = [e for e in entries if e["status"] == "nonfinite"]
    if bad:
        raise NSTError(f"{len(bad)} of {len(entries)} results stopped on a non-finite loss (see {bp.manifest})")
    print(f"{bp.outdir}: {len(entries)} results, manifest {bp.manifest.name}"
          + (f", grid {bp.grid}" if bp.grid is not None else ""))
    return 0
