"""The command line's sizes, read from the files' headers before any pixel is decoded, and the memory check.

``plan_sizes`` gives every working size from the headers; ``check_memory`` refuses a run that will not
fit before anything is decoded; ``working_images`` then loads and resizes the inputs as the config says.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Optional, Sequence

from ..program.config import StyleConfig
from ..errors import ConfigError, ImageError, NSTError


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes a run will use, read from the files' headers before any pixel is decoded."""

    content_shape: tuple[int, int]
    style_shapes: tuple[tuple[int, int], ...]
    original_hw: tuple[int, int]
    decoded_pixels: int  # the largest input, decoded at full size before resizing


def plan_sizes(content_path: str, style_paths: Sequence[str], cfg: StyleConfig, max_pixels: Optional[int],
               init_path: Optional[str] = None, scales=None) -> Plan:
    """Working sizes from the image headers alone, each checked against ``max_pixels``.

    Under ``scales`` (coarse-to-fine) every scale's shape is planned and checked too (the
    schedule must rise to the final size, so the final scale is the largest).

    Raises:
      ImageError: an input is missing, unreadable or over ``max_pixels``.
      ConfigError: a working size (``--size``, ``--shape``, ``--style-scale``) over ``max_pixels``.
    """
    from .. import image
    from ..control.scales import run_shapes, style_working_shape

    limit = image.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    h0, w0 = image.image_size(content_path, max_pixels=limit)
    shape = content_working_shape(cfg, h0, w0)
    _check_working(shape, "the working image", "--size/--shape", limit)
    for scale_shape in run_shapes(shape, scales):
        _check_working(scale_shape, "a scale's image", "--scales", limit)
    styles, biggest = [], h0 * w0
    for path in style_paths:
        sh, sw = image.image_size(path, max_pixels=limit)
        try:
            st_shape = style_working_shape((sh, sw), shape, cfg)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        _check_working(st_shape, f"style {path}", "--style-scale", limit)
        styles.append(st_shape)
        biggest = max(biggest, sh * sw)
    if init_path is not None:
        ih, iw = image.image_size(init_path, max_pixels=limit)
        biggest = max(biggest, ih * iw)
    return Plan((shape[0], shape[1]), tuple(styles), (h0, w0), biggest)


def content_working_shape(cfg: StyleConfig, h0: int, w0: int) -> tuple[int, int]:
    """The content's working (H, W): the fixed shape, or ``size`` on ``size_side`` (aspect kept)."""
    from .. import image

    if cfg.shape is not None:
        return cfg.shape
    assert cfg.size is not None  # StyleConfig refuses a config with neither
    return image.working_shape(h0, w0, cfg.size, cfg.size_side)


def _check_working(shape: Sequence[int], what: str, option: str, limit: int) -> None:
    h, w = int(shape[0]), int(shape[1])
    if h * w > limit:
        raise ConfigError(f"{option} make {what} {h}x{w} = {h * w:,} pixels, over the limit of {limit:,}; "
                          f"use a smaller {option.split('/')[0]} (or raise --max-pixels)")


def working_images(content_path: str, style_paths: Sequence[str], cfg: StyleConfig, max_pixels: Optional[int],
                   init_path: Optional[str] = None):
    """Load and resize the content, styles and init image as the config says.

    Returns:
      (content, styles, init, original content (H, W)).
    """
    from .. import image

    kw = {} if max_pixels is None else {"max_pixels": max_pixels}
    content_full = image.load_image(content_path, **kw)
    h0, w0 = content_full.shape[:2]
    shape = content_working_shape(cfg, h0, w0)
    content = image.resize(content_full, shape, cfg.resample)
    from ..control.scales import style_working_shape

    styles = []
    for path in style_paths:
        st = image.load_image(path, **kw)
        try:
            st_shape = style_working_shape(st.shape[:2], shape, cfg)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        styles.append(image.resize(st, st_shape, cfg.resample))
    init = None
    if init_path is not None:
        init = image.resize(image.load_image(init_path, **kw), shape, cfg.resample)
    return content, styles, init, (h0, w0)


# --------------------------------------------------------------------------------------------
# commands


def check_memory(plan: Plan, cfg: StyleConfig, *, skip: bool = False, devices: Optional[int] = None, batch: int = 1,
                 regions: int = 0, held_bytes: int = 0) -> None:
    """A clear error before the run (before any image is decoded) when it will not fit in free memory.

    Counts everything image-sized the run holds: the content's optimisation (times the batch),
    each style's forward pass at its own size, the decoded inputs, masks and the losses, and
    ``held_bytes`` that the command keeps besides (video multi-pass: every frame and its flows).
    ``skip``: ``--skip-memory-check``; ``devices``: the devices the image is split over.
    """
    from ..engine import memory

    if skip:
        return
    height, width = plan.content_shape
    devices = devices or 1
    import jax

    if jax.default_backend() == "cpu":
        devices = 1  # host "devices" share this machine's memory: splitting the image saves none of it
    short = memory.memory_shortfall(height, width, cfg, style_shapes=plan.style_shapes, batch=batch,
                                      regions=regions, decoded_pixels=plan.decoded_pixels, devices=devices,
                                      held_bytes=held_bytes)
    if short is not None:
        need, free, fits = short

        def size(b: int) -> str:
            return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"

        advice = (f"use --size {fits} or smaller" if fits >= 16 else "use a smaller --size or free some memory")
        if held_bytes:
            advice += ", fewer frames (--frames A:B) or --method sequential (it holds one frame at a time)"
        elif batch > 1:
            advice += " or a smaller --batch-size"
        elif jax.default_backend() != "cpu" and len(jax.local_devices()) > devices:
            advice += f" or --devices {len(jax.local_devices())} (the image split over them)"
        what = f"a {height}x{width} run" + (f" of {batch} results at once" if batch > 1 else "")
        raise ConfigError(f"{what} needs about {size(need)}, but only {size(free)} is free; "
                          f"{advice} (or --skip-memory-check to try anyway)")


def style_list(args: argparse.Namespace) -> list[str]:
    from .. import image

    styles = list(args.styles)
    if args.styles_dir:
        d = pathlib.Path(args.styles_dir)
        if not d.is_dir():
            raise ImageError(f"{d}: not a directory")
        found = sorted(str(f) for f in d.iterdir() if f.suffix.lower() in image.IMAGE_EXTENSIONS or f.suffix.lower() == ".gif")
        if not found:
            raise ImageError(f"{d}: no images found (looked for {', '.join(sorted(image.IMAGE_EXTENSIONS))})")
        styles += found
    if not styles:
        raise NSTError("give at least one STYLE image (or --styles-dir DIR)")
    return styles
