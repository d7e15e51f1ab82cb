"""``nst-jax video IN STYLE... -o OUT``: a clip painted frame by frame with temporal consistency.

IN and OUT are video files (PyAV) or folders of frames. The job streams: frames are decoded one at a
time and resized to the working size; flows (OpenCV) are cached in ``<OUT's folder>/.nst-flow/``;
each finished frame is written atomically to the job's frame folder (OUT itself for a folder,
``OUT.frames/`` beside a video file), which ``job.json`` marks as this job's. A re-run of the same
command resumes at the first missing frame, with the same result (a frame's successor starts from
the frame *as written*, 8-bit, in both runs); the multi-pass method resumes after its last finished
pass. The video file is encoded from the frame folder at the end, with the input's audio copied.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pathlib
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import numpy as np

from ..errors import ConfigError, ImageError, NSTError
from . import workdir

if TYPE_CHECKING:  # (the library loads when a command runs, not when the CLI starts)
    from ..program.config import StyleConfig

METHODS = ("sequential", "multipass", "independent")
# What multi-pass holds per pixel of every frame, in float32s: the frames (3), both flows (2 + 2),
# the last pass (3), a pass's start images (3), targets (3) and masks (1).
MULTIPASS_FLOATS_PER_PIXEL = 17


def add_parser(sub: Any, add_config_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``video`` subcommand (its config options are the ``stylize`` ones)."""
    from ..video.flow import FLOW_METHODS
    from ..program.presets import PRESETS

    v = sub.add_parser("video", help="paint a video (file or folder of frames) with temporal consistency",
                       description="Paint every frame of IN in the style of STYLE (Ruder et al. 2016: optical-flow "
                                   "warped frames and a temporal loss, so the result does not flicker).")
    v.add_argument("input", metavar="IN", help="a video file (.mp4, .mkv, .mov, ...) or a folder of frames")
    v.add_argument("styles", nargs="+", metavar="STYLE")
    v.add_argument("-o", "--output", required=True, help="a video file (.mp4, .mkv, .mov, .avi, .webm) or a folder "
                   "for the frames (PNG)")
    v.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    v.add_argument("--weights", help="converted weights file (default: the weights directory)")
    v.add_argument("--method", choices=METHODS, default="sequential",
                   help="sequential: each frame starts from the previous one warped, with the temporal loss "
                        "(default); multipass: all frames at once, passes alternating direction (the batch on the "
                        "accelerator); independent: every frame on its own (flickers; for comparison)")
    v.add_argument("--passes", type=int, help="multipass: passes after the first (default 4)")
    v.add_argument("--blend", type=float, help="multipass: share of the neighbours' picture a frame starts from "
                   "and is held to (the paper's delta; default 0.75, measured)")
    v.add_argument("--long-term", type=_offsets, default=(1,), metavar="J,...",
                   help="sequential: hold each frame to these earlier frames, warped (Ruder et al.'s long-term "
                        "loss, e.g. 1,2,4: a pixel hidden for a frame or two keeps its paint; default 1, the "
                        "short-term loss)")
    v.add_argument("--flow", choices=FLOW_METHODS, default="dis", help="OpenCV optical flow (default dis)")
    v.add_argument("--fps", type=float, help="output frame rate (default: the input's, divided by --every; "
                   "a folder of frames: 25)")
    v.add_argument("--frames", metavar="A:B", help="only source frames A to B-1 (either may be left out)")
    v.add_argument("--every", type=int, default=1, metavar="K", help="only every K-th frame")
    v.add_argument("--max-frames", type=int, default=None, help="refuse clips with more frames (default 100000)")
    v.add_argument("--batch-size", type=int, help="multipass: frames optimised at once (default: what fits)")
    v.add_argument("--overwrite", action="store_true", help="replace OUT, and restart a frame folder made by "
                   "another job")
    v.add_argument("--no-progress", action="store_true")
    v.add_argument("--no-download", action="store_true", help="never fetch weights (offline use)")
    add_config_options(v)


def _offsets(text: str) -> tuple[int, ...]:
    """``--long-term``: comma-separated frame offsets, 1 among them, at most 16 frames back."""
    try:
        got = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes frame offsets like 1,2,4; got {text!r}") from None
    if not got or got[0] != 1 or got[-1] > 16:
        raise argparse.ArgumentTypeError(f"takes offsets from 1 to 16, 1 among them (e.g. 1,2,4); got {text!r}")
    return got


def _selection(text: Optional[str]) -> tuple[int, Optional[int]]:
    if not text:
        return 0, None
    a, sep, b = text.partition(":")
    try:
        start = int(a) if a.strip() else 0
        stop = int(b) if b.strip() else None
    except ValueError:
        raise ConfigError(f"--frames takes A:B (source frame numbers, from 0); got {text!r}") from None
    if not sep or start < 0 or (stop is not None and stop <= start):
        raise ConfigError(f"--frames takes A:B with 0 <= A < B; got {text!r}")
    return start, stop


@dataclasses.dataclass(frozen=True)
class VideoRun:
    """The video job's own settings, resolved from the arguments once (with the config, what the
    library is given): the method and its numbers, the flow, the seed and colour match, devices."""

    method: str
    flow: str
    long_term: tuple[int, ...]
    passes: int
    blend: float
    seed: int
    color_match: str
    devices: Optional[int]
    spatial: int
    progress: bool


def _video_run(args: argparse.Namespace, parsed: Any) -> VideoRun:
    """Options the video job would ignore, refused in one line rather than accepted and ignored; the
    others checked and resolved (multi-pass defaults filled in)."""
    from ..program.presets import preset
    from . import common

    cfg = parsed.cfg
    if parsed.sweep or len(parsed.seeds) > 1:
        raise ConfigError("a video runs one set of values and one seed (no comma lists)")
    if parsed.init_path is not None:
        raise ConfigError("--init takes content, noise, ... for a video, not an image file")
    own = preset(args.preset)
    given = {"--passes": args.passes is not None, "--blend": args.blend is not None,
             "--batch-size": args.batch_size is not None, "--long-term": args.long_term != (1,)}
    for name, methods in (("--passes", "multipass"), ("--blend", "multipass"), ("--batch-size", "multipass"),
                          ("--long-term", "sequential")):
        if given[name] and args.method != methods:
            raise ConfigError(f"{name} applies to --method {methods} only, not {args.method}")
    refused = [name for name, used in (
        ("--content-mask", bool(args.content_mask)),
        ("--scales", bool(args.scales)),
        ("--iterations-per-scale", args.iterations_per_scale is not None),
        ("--original-size", cfg.original_size and not own.original_size),
    ) if used]
    if refused:
        raise ConfigError(f"{', '.join(refused)}: `nst-jax video` does not apply {'these' if len(refused) > 1 else 'this'} "
                          "yet (each frame is painted in one scale, without masks); run without "
                          f"{'them' if len(refused) > 1 else 'it'}, or paint frames one by one with `nst-jax stylize`")
    for name in ("every", "passes", "batch_size", "max_frames"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "passes" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be positive; got {value}")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise ConfigError(f"--fps must be in (0, 1000]; got {args.fps}")
    blend = 0.75 if args.blend is None else args.blend
    if not 0.0 <= blend <= 1.0:
        raise ConfigError(f"--blend must be in [0, 1]; got {blend}")
    devices, spatial = common.resolve_mesh(args, batched=args.method == "multipass")
    return VideoRun(args.method, args.flow, tuple(args.long_term), 4 if args.passes is None else args.passes, blend,
                    parsed.seeds[0], parsed.color_match, devices, spatial, not args.no_progress)


class _Output(NamedTuple):
    """Where the job writes: -o, whether it is a video file, the frame folder, the flow cache, its
    frame rate, and whether -o existed before."""

    out: pathlib.Path
    to_file: bool
    work: pathlib.Path
    cache_root: pathlib.Path
    rate: Any
    exists_before: bool


def _plan_output(args: argparse.Namespace, clip: Any) -> _Output:
    """Every path the job writes or clears, checked against every input before any work (with
    --overwrite too): -o, the frame folder (restarting a job empties it), the flow cache."""
    from .. import files
    from ..video import io as video_io

    out = pathlib.Path(args.output).expanduser()
    to_file = video_io.is_video_path(out)
    rate = video_io.frame_rate(args.fps if args.fps is not None else clip.fps / args.every) if to_file else None
    work = out.with_name(out.name + ".frames") if to_file else out
    cache_root = out.parent / ".nst-flow"
    inputs = {"IN": args.input, **{f"style {i + 1}": s for i, s in enumerate(args.styles)}, "--weights": args.weights}
    files.refuse_clashes(inputs, {"-o": out, "the frame folder": work if to_file else None})
    files.refuse_inside(inputs, {"the frame folder": work, "the flow cache": cache_root})
    if cache_root.exists() and not cache_root.is_dir():
        raise ImageError(f"{cache_root}: exists and is not a folder; nst-jax keeps its optical-flow cache there "
                         "(move the file, or give -o another folder)")
    for place in (work / workdir.JOB_FILE, cache_root / "key.json", out):  # each folder the job will write in
        files.probe_writable(place)
    exists_before = to_file and (out.exists() or out.is_symlink())
    if exists_before and not args.overwrite and not workdir.held_job(work)[0]:
        raise ImageError(f"{out}: already exists; pass --overwrite to replace it")
    if to_file and not video_io.have_pyav():
        raise ImageError(f"writing a video file needs PyAV: {video_io.VIDEO_EXTRA} (or give -o a folder)")
    return _Output(out, to_file, work, cache_root, rate, exists_before)


def _audio(args: argparse.Namespace, clip: Any, out: _Output) -> tuple[Any, Optional[str]]:
    """(the file whose audio is copied, or None; a note when it is dropped), decided before any frame is painted."""
    from ..video import io as video_io

    if not (out.to_file and clip.kind == "file" and clip.has_audio):
        return None, None
    if args.fps is not None and abs(args.fps - float(clip.fps / args.every)) > 1e-3:
        return None, "audio dropped: --fps changes the clip's timing"
    why = video_io.audio_copy_problem(clip.path, out.out)
    return (clip.path, None) if not why else (None, f"audio dropped: {why}")


def _style_shapes(style_paths: list[str], shape: tuple[int, int], cfg: Any, limit: int) -> list:
    from .. import image
    from ..control.scales import style_working_shape

    shapes = []
    for path in style_paths:
        sh, sw = image.image_size(path, max_pixels=limit)
        try:
            shapes.append(style_working_shape((sh, sw), shape, cfg))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return shapes


def _finish(args: argparse.Namespace, clip: Any, out: _Output, count: int, start: int, stop: Optional[int],
            audio: Any, audio_note: Optional[str]) -> None:
    """The video file encoded from the frame folder (with the audio), or the folder's summary."""
    from ..video import io as video_io

    if out.to_file:
        assert out.rate is not None  # (planned with the output's kind, before any work)
        if audio_note:
            print(f"note: {audio_note}", file=sys.stderr)
        begin = start / float(clip.fps)
        end = None if stop is None else stop / float(clip.fps)
        notes = video_io.write_video(out.out, [out.work / workdir.frame_name(t) for t in range(count)], out.rate,
                                     audio_from=audio, audio_start=begin, audio_stop=end, overwrite=True)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"{out.out}: {count} frames at {float(out.rate):.3g} fps{' with audio' if audio and not notes else ''} "
              f"(the frames stay in {out.work})")
    else:
        if clip.kind == "file" and clip.has_audio:
            print("note: audio dropped: the output is a folder of frames", file=sys.stderr)
        print(f"{out.out}: {count} frames")


def _job(args: argparse.Namespace, run: VideoRun, clip: Any, cfg: Any, style_paths: list[str], net: Any,
         span: tuple[int, Optional[int]]) -> dict:
    """What ``job.json`` records: a re-run with the same job resumes; another job restarts the folder."""
    from ..video import flow

    return {"input": workdir.file_key(args.input) if clip.kind == "file" else flow.FlowCache.key_for(args.input),
            "styles": [workdir.file_key(s) for s in style_paths], "config": json.loads(json.dumps(cfg.to_dict(), default=str)),
            "frames": [span[0], span[1], args.every], "method": run.method, "flow": run.flow, "seed": run.seed,
            "weights": net.fingerprint, "color_match": run.color_match,
            **({"passes": run.passes, "blend": run.blend} if run.method == "multipass" else {}),
            **({"long_term": list(run.long_term)} if run.long_term != (1,) else {})}


def _flow_cache(args: argparse.Namespace, run: VideoRun, clip: Any, cfg: Any, out: _Output,
                span: tuple[int, Optional[int]], shape: tuple[int, int]) -> Any:
    """The optical-flow cache of this clip, frames, size and flow method (under ``.nst-flow/``)."""
    from ..video import flow

    key = flow.FlowCache.key_for(args.input, frames=[span[0], span[1], args.every], shape=list(shape),
                                 method=run.flow, resample=cfg.resample)
    folder = f"{clip.path.stem[:40]}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]}"
    return flow.FlowCache(out.cache_root / folder, key, shape)


def cmd_video(args: argparse.Namespace) -> int:
    """Run ``nst-jax video`` (see the module docstring)."""
    from .. import image
    from ..video import io as video_io
    from . import common, plan
    from .options import config_from_args

    parsed = config_from_args(args)
    run = _video_run(args, parsed)
    cfg = parsed.cfg
    start, stop = _selection(args.frames)
    limit = args.max_pixels or image.DEFAULT_MAX_PIXELS
    _check_target(args)
    clip = video_io.probe(args.input, fps=args.fps, max_pixels=limit,
                          max_frames=args.max_frames or video_io.DEFAULT_MAX_FRAMES)
    out = _plan_output(args, clip)
    shape = plan.content_working_shape(cfg, clip.height, clip.width)
    if out.to_file:  # yuv420p needs even sizes
        shape = (max(2, shape[0] // 2 * 2), max(2, shape[1] // 2 * 2))
    cfg = cfg.replace(shape=shape)
    style_paths = list(args.styles)
    style_shapes = _style_shapes(style_paths, shape, cfg, limit)
    n_sel = len(range(start, min(stop or clip.frames, clip.frames), args.every))
    if n_sel == 0:
        raise ImageError(f"{clip.path}: --frames {args.frames} selects no frames of its {clip.frames}")
    audio, audio_note = _audio(args, clip, out)
    net = common.load_network(cfg, args.weights, download=not args.no_download)
    common.warn_not_pretrained(net)
    batch = _check_memory(args, run, cfg, clip, style_shapes, n_sel)
    job = _job(args, run, clip, cfg, style_paths, net, (start, stop))
    if out.exists_before and not args.overwrite and workdir.held_job(out.work)[1] != job:
        raise ImageError(f"{out.out}: already exists; pass --overwrite to replace it")
    done = workdir.prepare_work_dir(out.work, job, args.overwrite, "remove it or give another -o")
    cache = _flow_cache(args, run, clip, cfg, out, (start, stop), shape)
    styles = [image.resize(image.load_image(path, max_pixels=limit), st_shape, cfg.resample)
              for path, st_shape in zip(style_paths, style_shapes)]
    blend = cfg.style_blend_weights
    style_arg: Any = styles if blend is None else list(zip(styles, blend))
    devices = common.devices(run.devices)
    frames = video_io.read_frames(clip, start=start, stop=stop, every=args.every, shape=shape, resample=cfg.resample,
                                  max_pixels=limit, max_frames=args.max_frames or video_io.DEFAULT_MAX_FRAMES)
    t0 = time.time()
    with common.Signals() as signals:
        if run.method == "multipass":
            status, count, ran = _multipass(run, cfg, net, frames, style_arg, cache, out.work, done, batch, devices,
                                            signals)
        else:
            status, count, ran = _frame_by_frame(run, cfg, net, frames, style_arg, cache, out.work, done, devices,
                                                 signals, n_sel)
    if status == "stopped":
        print(f"stopped: {count} frames are done in {out.work}; run the same command again to resume", file=sys.stderr)
        return signals.exit_code
    if count == 0:
        raise ImageError(f"{clip.path}: --frames {args.frames} selects no frames")
    if ran:
        print(f"{ran} frames painted in {time.time() - t0:.1f} s ({(time.time() - t0) / ran:.2f} s a frame)",
              file=sys.stderr)
    _finish(args, clip, out, count, start, stop, audio, audio_note)
    return 0


def _check_target(args: argparse.Namespace) -> None:
    """-o is a video file or a folder of frames; --fps only with a video file."""
    from .. import image
    from ..video import io as video_io

    target = pathlib.Path(args.output).expanduser()
    if args.fps is not None and not video_io.is_video_path(target):
        raise ConfigError("--fps sets the frame rate of a video file; -o is a folder of frames (they have none)")
    if not video_io.is_video_path(target) and target.suffix.lower() in image.IMAGE_EXTENSIONS:
        raise ConfigError(f"{target}: -o is a video file ({', '.join(sorted(video_io.VIDEO_EXTENSIONS))}) or a folder")


def _check_memory(args: argparse.Namespace, run: VideoRun, cfg: StyleConfig, clip: Any, style_shapes: list,
                  n_sel: int) -> int:
    """Refuse a run that does not fit (before any frame is decoded); returns the frames painted at once."""
    from . import plan

    shape = cfg.shape
    assert shape is not None
    batch, held = 1, 0
    if run.method == "multipass":
        from ..engine.batching import default_batch_size

        batch = args.batch_size or default_batch_size(shape[0], shape[1], cfg, n_sel)
        # multi-pass holds every working-size frame, both flows, the last pass, its start images
        # and temporal targets: 17 floats a pixel a frame, and the batch's results
        held = n_sel * shape[0] * shape[1] * 4 * MULTIPASS_FLOATS_PER_PIXEL
    sizes = plan.Plan(shape, tuple(style_shapes), (clip.height, clip.width), clip.height * clip.width)
    plan.check_memory(sizes, cfg, skip=args.skip_memory_check, devices=run.devices, batch=batch, held_bytes=held)
    return batch


def _frame_by_frame(run: VideoRun, cfg, net, frames, style_arg, cache, work, done, devices, signals, total):
    """The sequential (or independent) method: the library's stream (``video.iter_frames``), each
    frame written as it comes; returns (status, frames done, frames run)."""
    from tqdm import tqdm

    from .. import image
    from ..video.frames import iter_frames

    bar = tqdm(total=total, initial=min(done, total), disable=not run.progress, unit="frame", dynamic_ncols=True,
               file=sys.stderr)

    def flows(t: int, j: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tag = "" if j == 1 else str(j)  # the long-term pairs (t, t - j) are cached beside the short ones
        return cache.flow(f"back{tag}", t, a, b, run.flow), cache.flow(f"fwd{tag}", t, b, a, run.flow)

    def keep(picture: np.ndarray) -> np.ndarray:  # the picture as written (8-bit), as a resumed run reads it
        return image.to_uint8(picture, cfg.save_rounding).astype(np.float32) / 255.0

    def callback(_progress) -> bool:
        return signals.received is not None

    stream = iter_frames((f for _, f in frames), style_arg, net, cfg,
                         None if run.method == "independent" else flows, long_term=run.long_term,
                         seed=run.seed, color_match_method=run.color_match, devices=devices, start=done,
                         earlier=lambda t: image.load_image(work / workdir.frame_name(t)), keep=keep, callback=callback)
    count = min(done, total)
    ran = 0
    for f in stream:
        assert f.result is not None  # (iter_frames paints every frame it yields)
        if f.result.status == "nonfinite":
            raise NSTError(f"frame {f.t}: the loss became NaN or infinite; lower --lr or the weights")
        if f.result.status == "stopped" or signals.received is not None:
            return "stopped", f.t, ran
        image.save_image(work / workdir.frame_name(f.t), f.output, overwrite=True, rounding=cfg.save_rounding)
        ran += 1
        count = f.t + 1
        bar.update(1)
        last = {name: v[np.isfinite(v)][-1] for name, v in f.result.parts().items() if np.isfinite(v).any()}
        bar.set_postfix(loss=f"{f.result.final_loss:.4g}", **{name: f"{v:.3g}" for name, v in last.items()})
    bar.close()
    return "done", count, ran


def _multipass(run: VideoRun, cfg, net, frames, style_arg, cache, work, done, batch, devices, signals):
    """The multi-pass method: every working-size frame in memory, a pass a batch; resumable by pass."""
    from .. import files, image
    from ..video.frames import stylize_multipass

    contents = [f for _, f in frames]
    n = len(contents)
    if n == 0:
        return "done", 0, 0
    back: list = [None] + [cache.flow("back", t, contents[t], contents[t - 1], run.flow) for t in range(1, n)]
    fwd: list = [None] + [cache.flow("fwd", t, contents[t - 1], contents[t], run.flow) for t in range(1, n)]
    if done >= n:
        return "done", n, 0
    start = None
    saved = work / "pass.npy"
    if saved.is_file():
        got = workdir.read_pass(saved, (n, *contents[0].shape))
        if got is not None:
            start = got
            print(f"resuming after pass {start[0]} of {run.passes + 1}", file=sys.stderr)
    stopped = [False]

    def callback(p: int, images: np.ndarray) -> bool:
        header = np.asarray([p + 1], np.int64)
        def write(f) -> None:  # two .npy records: passes done, then the frames
            np.lib.format.write_array(f, header, allow_pickle=False)
            np.lib.format.write_array(f, images.astype("<f4"), allow_pickle=False)

        files.atomic_write(saved, write, overwrite=True)
        print(f"pass {p + 1}/{run.passes + 1} done", file=sys.stderr)
        stopped[0] = signals.received is not None
        return stopped[0]

    results = stylize_multipass(contents, style_arg, net, cfg, back, fwd, passes=run.passes, blend=run.blend,
                                seed=run.seed, batch_size=batch, devices=devices, start=start, spatial=run.spatial,
                                callback=callback, color_match_method=run.color_match)
    if stopped[0]:
        return "stopped", 0, 0
    images = np.stack([r.output for r in results])
    for t in range(n):
        image.save_image(work / workdir.frame_name(t), images[t], overwrite=True, rounding=cfg.save_rounding)
    saved.unlink(missing_ok=True)
    return "done", n, n
