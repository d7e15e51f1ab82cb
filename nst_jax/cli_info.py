"""The CLI's information commands: ``nst-jax presets`` (the seed programs as data) and ``nst-jax bench``
(``scripts/benchmark.py`` from a source checkout)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import Any, Sequence

from .errors import NSTError
from .presets import DESCRIPTIONS, PRESETS, preset


def _short_value(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(_short_value(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def cmd_presets(args: argparse.Namespace) -> int:
    if args.name:
        cfg = preset(args.name)
        if args.json:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        print(f"{args.name}: {DESCRIPTIONS.get(args.name, '')}")
        for f in dataclasses.fields(cfg):
            print(f"  {f.name:22s} {_short_value(getattr(cfg, f.name))}")
        return 0
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in PRESETS.items()}, indent=2))
        return 0
    keys = ["optimizer", "iterations", "content_layers", "style_layers", "content_weight", "style_weight", "tv_weight", "pooling"]
    for name, cfg in PRESETS.items():
        print(f"{name:14s} {DESCRIPTIONS.get(name, '')}")
        print(" " * 15 + "  ".join(f"{k}={_short_value(getattr(cfg, k))}" for k in keys))
    print("\n'nst-jax presets NAME' shows every field; override any with --set FIELD=VALUE.")
    return 0


def cmd_bench(bench_args: Sequence[str]) -> int:
    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
    if not script.exists():
        raise NSTError("nst-jax bench runs scripts/benchmark.py from a source checkout: clone the repository and "
                       "pip install -e '.[bench]'")
    sys.path.insert(0, str(script.parent))
    try:
        import benchmark  # noqa: PLC0415 - lives in scripts/, with torch as its dependency
    except ImportError as err:
        raise NSTError(f"the benchmark needs the bench extra ({err}): pip install -e '.[bench]'") from None
    return int(benchmark.main(list(bench_args)) or 0)
