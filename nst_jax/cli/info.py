"""The CLI's information commands: ``nst-jax presets`` (the seed programs as data) and ``nst-jax bench``
(``scripts/benchmark.py`` from a source checkout)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import Any, Sequence

from ..errors import NSTError
from ..program.presets import DESCRIPTIONS, PRESETS, preset


def _short_value(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(_short_value(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def cmd_presets(args: argparse.Namespace) -> int:
    """``nst-jax presets [NAME] [--json]``."""
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
    """``nst-jax bench``: ``scripts/benchmark.py`` of a source checkout, run as its own process (the
    package never imports from ``scripts/``; the benchmark needs torch, the bench extra)."""
    import subprocess

    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"
    if not script.is_file():
        raise NSTError("nst-jax bench runs scripts/benchmark.py from a source checkout: clone the repository and "
                       "pip install -e '.[bench]'")
    return subprocess.call([sys.executable, str(script), *bench_args])


def add_parser(sub: Any) -> None:
    """The ``presets`` and ``bench`` commands' options."""
    pr = sub.add_parser("presets", help="list the presets and their settings")
    pr.add_argument("name", nargs="?", help="show every field of one preset")
    pr.add_argument("--json", action="store_true")
    bn = sub.add_parser("bench", help="benchmark against PyTorch (scripts/benchmark.py; needs a checkout and torch)",
                        description="Run scripts/benchmark.py: the same recipe in nst-jax and PyTorch, side by side.",
                        add_help=False)
    bn.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for scripts/benchmark.py (--help lists them)")
