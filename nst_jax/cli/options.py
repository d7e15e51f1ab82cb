"""The command line's config options, generated from ``StyleConfig``'s fields.

One place for names, types, defaults and help: every field's metadata (``config._f``) says its
part, its help line, its choices, how its text parses and which option sets it. ``--set FIELD=VALUE``
reaches every field with the same parser. A value option marked ``sweep`` takes a comma list; the
values then run as one vmapped program (``cli.batch``).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, NamedTuple, Optional

from ..program.config import INITS, NOISE_INITS, PICTURES, PROGRAM, RUN, VALUES, StyleConfig, field_names
from ..errors import ConfigError
from ..program.presets import preset

SEED_MAX = 2**32 - 1


def floats(text: str) -> tuple[float, ...]:
    """``"1,2.5"`` -> ``(1.0, 2.5)`` (an argparse type)."""
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def ints(text: str) -> tuple[int, ...]:
    """``"1,2"`` -> ``(1, 2)`` (an argparse type)."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def names(text: str) -> tuple[str, ...]:
    """``"relu1_1, relu2_1"`` -> ``("relu1_1", "relu2_1")``."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def shape(text: str) -> tuple[int, int]:
    """``"384x512"`` -> ``(384, 512)`` (an argparse type)."""
    try:
        h, w = (int(t) for t in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 384x512, got {text!r}") from None
    return h, w


def mesh(text: str) -> tuple[int, int]:
    """``"2x4"`` -> ``(2, 4)``: a batch × spatial device mesh (an argparse type)."""
    try:
        b, sp = (int(t) for t in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCHxSPATIAL such as 2x4, got {text!r}") from None
    if b < 1 or sp < 1:
        raise argparse.ArgumentTypeError(f"both sides of --mesh must be at least 1, got {text!r}")
    return b, sp


def seeds(text: str) -> tuple[int, ...]:
    """One seed or a comma list (a batch of seeds), each 0 to 2^32 - 1."""
    values = ints(text)
    if not values:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    for value in values:
        if not 0 <= value <= SEED_MAX:
            raise argparse.ArgumentTypeError(f"seeds are 0 to {SEED_MAX}; got {value}")
    return values


def sweep_floats(text: str) -> tuple[float, ...]:
    """One number, or a comma list of them (a sweep)."""
    values = floats(text)
    if not values:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}")
    return values


_TYPES: dict[str, Callable[[str], Any]] = {"float": float, "int": int, "floats": floats, "names": names, "shape": shape, "str": str}


def parse_field(field: dataclasses.Field, text: str) -> Any:
    """A field's value from text (``--set``), by the field's ``kind``.

    Args:
      field: a ``StyleConfig`` field.
      text: the text; "none" / "null" is None (the config then says whether None is valid).

    Returns:
      The parsed value (validated later, when the config is built).
    """
    if text.lower() in ("none", "null"):
        return None
    kind = field.metadata["kind"]
    if kind == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{field.name} takes true or false; got {text!r}")
    try:
        return _TYPES[kind](text)
    except (ValueError, argparse.ArgumentTypeError):
        what = {"float": "a number", "int": "an integer", "floats": "comma-separated numbers",
                "shape": "HxW such as 384x512"}.get(kind, "a value")
        raise ConfigError(f"{field.name} takes {what}; got {text!r}") from None


_GROUPS = {
    PROGRAM: "network, loss formulas and optimiser (the compiled program)",
    VALUES: "weights and rates (traced values: a comma list sweeps them in one program, e.g. --style-weight 1e2,1e3)",
    RUN: "run",
    PICTURES: "size and colour",
}


def add_config_options(p: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One option per field whose metadata names one, grouped by part; every other field is
    ``--set FIELD=VALUE``. Returns the groups (the CLI adds its own options to them)."""
    groups = {part: p.add_argument_group(title) for part, title in _GROUPS.items()}
    for f in dataclasses.fields(StyleConfig):
        meta = f.metadata
        if not meta.get("option"):
            continue
        kw: dict[str, Any] = {"dest": f.name, "help": meta["help"], "default": None}
        if meta["kind"] == "bool":
            kw["action"] = "store_true"
        elif meta["sweep"]:
            kw.update(type=sweep_floats, metavar="X[,X...]")
        else:
            kw["type"] = _TYPES[meta["kind"]]
            if meta["choices"] is not None:
                kw["choices"] = list(meta["choices"])
            if meta["metavar"]:
                kw["metavar"] = meta["metavar"]
        groups[meta["part"]].add_argument(*meta["option"], **kw)
    groups[RUN].add_argument("--init", help="the start image: " + ", ".join(INITS) + ", or an image file")
    groups[RUN].add_argument("--seed", type=seeds, default=None, metavar="N[,N...]",
                             help="seeds the start image's noise (0 to 2^32-1; --init noise, randn or blend); a comma "
                                  "list runs one result per seed")
    groups[RUN].add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                             help="set any config field (see 'nst-jax presets NAME'); repeatable")
    g = groups[PICTURES]
    g.add_argument("--size", type=int, help="long side of the working image in pixels (aspect ratio kept)")
    g.add_argument("--shape", type=shape, metavar="HxW", help="fixed working size, e.g. 384x512")
    g.add_argument("--style-scale", type=float, help="style size relative to the content's working size")
    return groups


class Parsed(NamedTuple):
    """What a run's options say, resolved once (the arguments are never changed after parsing).

    ``cfg``: the preset with the overrides (each swept field at its first value); ``init_path``:
    an init image or None; ``sweep``: field -> values for every value option given a comma list
    of two or more; ``seeds``: the seeds (``(0,)`` when not given); ``color_match``: the colour
    transfer of ``--preserve-colors match`` ("chol" when not given).
    """

    cfg: StyleConfig
    init_path: Optional[str]
    sweep: dict[str, tuple[float, ...]]
    seeds: tuple[int, ...]
    color_match: str


def config_from_args(args: argparse.Namespace) -> Parsed:
    """The preset with the command line's overrides, and the run's own options resolved.

    Returns:
      ``Parsed``.
    """
    cfg = preset(args.preset)
    changes: dict[str, Any] = {}
    sweep: dict[str, tuple[float, ...]] = {}
    fields = {f.name: f for f in dataclasses.fields(StyleConfig)}
    for f in fields.values():
        if not f.metadata.get("option"):
            continue
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.metadata["sweep"]:
            if len(value) > 1:
                sweep[f.name] = tuple(value)
            value = value[0]
        changes[f.name] = value
    # Changing the layers without new layer weights: equal weights, not the preset's.
    if "style_layers" in changes and "style_layer_weights" not in changes:
        changes["style_layer_weights"] = None
    if "content_layers" in changes and "content_layer_weights" not in changes:
        changes["content_layer_weights"] = None
    if getattr(args, "size", None) is not None:
        changes.update(size=args.size, size_side="long", shape=None)
    if getattr(args, "shape", None) is not None:
        changes["shape"] = args.shape
    if getattr(args, "style_scale", None) is not None:
        changes.update(style_scale=args.style_scale, style_size="scale")
    init_path = None
    if getattr(args, "init", None):
        if args.init in INITS:
            changes["init"] = args.init
        else:
            init_path = args.init
    for item in getattr(args, "set", []) or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--set takes FIELD=VALUE; got {item!r}")
        if key not in fields:
            raise ConfigError(f"unknown config field {key!r}; valid: {', '.join(field_names())}")
        changes[key] = parse_field(fields[key], text)
        sweep.pop(key, None)
    cfg = cfg.replace(**changes)
    seeds, color_match = _refuse_ignored(args, cfg, init_path)
    return Parsed(cfg, init_path, sweep, seeds, color_match)


def _refuse_ignored(args: argparse.Namespace, cfg: StyleConfig, init_path: Optional[str]) -> tuple[tuple[int, ...], str]:
    """Run options that this config would ignore, refused in one line.

    Returns:
      (the seeds, the colour-match method), their defaults filled in.
    """
    if getattr(args, "seed", None) is not None and (init_path is not None or cfg.init not in NOISE_INITS):
        raise ConfigError(f"--seed seeds the start image's noise, and this run starts from "
                          f"{init_path or 'the ' + cfg.init + ' image'} without noise; give --init noise (or randn, "
                          "blend) or leave --seed out")
    if getattr(args, "color_match", None) is not None and cfg.preserve_colors != "match":
        raise ConfigError("--color-match picks the colour transfer of --preserve-colors match; this run has "
                          f"--preserve-colors {cfg.preserve_colors}")
    if getattr(args, "command", None) != "video" and cfg.temporal_weight != preset(args.preset).temporal_weight:
        raise ConfigError("--temporal-weight weighs the temporal term of `nst-jax video`; a still image has none")
    seed = getattr(args, "seed", None)
    return (tuple(seed) if seed is not None else (0,)), (getattr(args, "color_match", None) or "chol")
