"""The ``nst-jax`` command line: arguments -> config -> library -> files.

The package ``nst_jax.cli`` holds the only modules that parse arguments or print: this thin ``main``
and its command table, ``common`` (what commands share), one module per command (``stylize`` with
``batch`` for many results, ``demo``, ``video``, ``weights``, ``info``: presets and bench), and
``options`` (options generated from the config's fields) and ``plan`` (sizes from headers, the
memory check). Imports point down: ``main`` -> commands -> ``common`` -> ``options``/``plan`` ->
the library. Exit codes: 0 success; 2 usage and input errors (one line on stderr, no traceback
unless ``--debug``); 1 internal errors; 130 / 143 after SIGINT / SIGTERM (the best image so far
is saved first).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from typing import Optional, Sequence

from . import common, demo, info, serve, stylize, stylize_args, video, weights
from ..errors import NSTError, NSTWarning

def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each command module adds its own sub-parser."""
    p = common.Parser(prog="nst-jax", description="Neural style transfer on JAX (Gatys et al.), with presets "
                      "that reproduce the classic programs.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=common.Parser)
    sub.required = True
    stylize_args.add_parser(sub)
    demo.add_parser(sub)
    info.add_parser(sub)
    video.add_parser(sub, common.add_config_options)
    weights.add_parser(sub)
    serve.add_parser(sub)
    return p


# The commands by name (``bench`` and ``weights`` take their arguments their own way, in ``main``).
COMMANDS = {"stylize": stylize.cmd_stylize, "demo": demo.cmd_demo, "presets": info.cmd_presets,
            "video": video.cmd_video, "serve": serve.cmd_serve}


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


def _on_signal(signum, frame) -> None:
    common.EARLY_SIGNALS.append(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else common.Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``nst-jax`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    warnings.showwarning = _show_warning
    common.EARLY_SIGNALS.clear()
    try:
        old_handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (a library caller): leave signals alone
        old_handlers = {}
    try:
        if argv[:1] == ["bench"]:  # everything after it belongs to scripts/benchmark.py
            return info.cmd_bench(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "weights":
            return weights.run(args)
        if args.command in ("stylize", "demo", "video", "serve"):
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
    except common.Terminated:
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
