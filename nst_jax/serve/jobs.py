"""A request's options as a job: parsed and checked by the CLI's own parser and readers, and the
key of the compiled program it needs.

A job is the command line ``nst-jax stylize CONTENT STYLE... -o result.png OPTIONS``, with the
uploaded files at paths the server chose. The options are the CLI's long names without dashes
and its value syntax (``size=64``, ``style-weight=1e3``, ``preserve-colors=lum``); a flag takes
``true`` or ``false``. Options that name files or devices, or make several results, are the
server's to decide and are refused with one line, as the CLI refuses what it cannot do.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import pathlib
from typing import Any, Optional

from ..cli import common as cli_common
from ..cli import stylize_args
from ..cli import plan
from ..cli.options import Parsed, config_from_args
from ..errors import ConfigError, NSTError
from ..program.config import VALUES, StyleConfig

# The options a job takes besides the config's own fields: the preset, the seed, the scales and
# ``set`` (any config field, ``set=tv_loss=l1``; repeatable, as on the command line).
RUN_OPTIONS = ("preset", "seed", "scales", "iterations_per_scale", "color_match", "set")
REPEATABLE = ("set",)
TRUE, FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no", "")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one job may ask of the server (the CLI's own readers check the files against ``max_pixels``)."""

    max_pixels: int = 40_000_000
    max_size: int = 1024  # working long side
    max_iterations: int = 5000


@dataclasses.dataclass(frozen=True)
class Job:
    """A checked request: its command line, its parsed options, its working shape and program key."""

    argv: list[str]
    args: argparse.Namespace
    parsed: Parsed
    shape: tuple[int, int]
    key: str

    @property
    def cfg(self) -> StyleConfig:
        return self.parsed.cfg


@functools.lru_cache(maxsize=1)
def _stylize_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.Action]]:
    """The CLI's parser and the ``stylize`` options a job may set, by their long name without dashes."""
    parser = cli_common.Parser(prog="nst-jax")
    sub = parser.add_subparsers(dest="command", parser_class=cli_common.Parser)
    stylize_args.add_parser(sub)  # the command's own options, messages and checks
    fields = {f.name for f in dataclasses.fields(StyleConfig)}
    allowed = {}
    for action in sub.choices["stylize"]._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and (action.dest in fields or action.dest in RUN_OPTIONS):
            for o in longs:
                allowed[o[2:]] = action
    return parser, allowed


def option_names() -> list[str]:
    """Every option a job takes (for the page and the error messages)."""
    return sorted(_stylize_parser()[1])


def command_line(options: list[tuple[str, str]], content: str, styles: list[str], output: str) -> list[str]:
    """``nst-jax stylize`` arguments for a request's options, in order (each refused with one line
    when it is not a job's to set, given twice, or a flag given a value other than true/false)."""
    _, allowed = _stylize_parser()
    argv = ["stylize", content, *styles, "-o", output]
    names = [name for name, _ in options]
    twice = sorted({n for n in names if names.count(n) > 1 and n not in REPEATABLE})
    if twice:
        raise ConfigError(f"{twice[0][:60]!r}: give an option once (only {', '.join(REPEATABLE)} repeats)")
    for name, value in options:
        action = allowed.get(name)
        if action is None:
            raise ConfigError(f"{name[:60]!r} is not an option a job takes (the server chooses files, weights and "
                              f"devices); see GET /options")
        if action.nargs == 0:  # a flag
            if value.strip().lower() not in TRUE + FALSE:
                raise ConfigError(f"{name} is a flag: give true or false, not {value[:40]!r}")
            if value.strip().lower() in TRUE:
                argv.append(f"--{name}")
        else:  # one argument: a value that starts with dashes stays a value, never another option
            argv.append(f"--{name}={value}")
    return argv


def parse_job(argv: list[str], limits: Limits) -> Job:
    """Parse and check a job's command line as ``nst-jax stylize`` does, and read its files' headers
    (sizes, before any decoding). Raises ``NSTError`` with the CLI's one-line messages."""
    parser, _ = _stylize_parser()
    args = parser.parse_args(argv)
    parsed = config_from_args(args)
    if parsed.sweep or len(parsed.seeds) > 1:
        raise ConfigError("one result a job: give one value to each option and one seed (send several jobs; the "
                          "server batches them)")
    if parsed.init_path is not None:
        raise ConfigError("init: a job starts from content, style, noise, randn or blend (no file)")
    cfg = parsed.cfg
    if cfg.iterations > limits.max_iterations:
        raise ConfigError(f"iterations {cfg.iterations}: this server runs at most {limits.max_iterations} a job")
    styles = plan.style_list(args)
    blend = cfg.style_blend_weights
    if blend is not None and len(blend) != len(styles):
        raise ConfigError(f"{len(blend)} style blend weights for {len(styles)} styles")
    scales = cli_common.parse_scales(args.scales)
    sizes = plan.plan_sizes(args.content, styles, cfg, limits.max_pixels, scales=scales)
    if max(sizes.content_shape) > limits.max_size:
        raise ConfigError(f"a working size of {sizes.content_shape[1]}x{sizes.content_shape[0]}: this server paints "
                          f"at most {limits.max_size} pixels on the long side")
    plan.check_memory(sizes, cfg)
    shape = (int(sizes.content_shape[0]), int(sizes.content_shape[1]))
    return Job(argv, args, parsed, shape, program_key(cfg, shape, args))


def program_key(cfg: StyleConfig, shape: tuple[int, int], args: argparse.Namespace) -> str:
    """What jobs must share to run as one batch: every field that is not a traced value (the program,
    the run settings, the picture settings the control stage applies to the whole batch), the
    working shape, the scales and the colour-match method. Iterations may differ (each member
    stops at its own) except with several scales or L-BFGS rounds, whose schedule a batch shares."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.metadata["part"] != VALUES}
    if not (args.scales or cfg.lbfgs_round):
        fields.pop("iterations")
    data = json.dumps([fields, list(shape), args.scales, args.iterations_per_scale, args.color_match],
                      sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:24]


def config_json(cfg: StyleConfig) -> dict[str, Any]:
    """The config as JSON-able data (``GET /jobs/{id}``)."""
    return json.loads(json.dumps(cfg.to_dict(), default=str))


def error_message(err: Exception) -> str:
    """One line for a client, as the CLI prints it after ``error:``."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:500]


def check_files(paths: list[pathlib.Path], limits: Limits) -> Optional[str]:
    """None when every upload is an image the CLI's reader accepts by its header, else the message."""
    from .. import image

    for p in paths:
        try:
            image.image_size(str(p), max_pixels=limits.max_pixels)
        except NSTError as err:
            return error_message(err)
    return None
