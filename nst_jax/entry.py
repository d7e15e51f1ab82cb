"""The ``nst-jax`` console script: signal handling from the first instruction, then ``cli.main``.

Importing the command line pulls in JAX and XLA (a second or more). A Ctrl-C or SIGTERM in that
time must end the process like one during a run: one line and exit 130 / 143, never a traceback
or a bare death by signal. So this module imports nothing heavy: it installs handlers that end
the process at once, then imports ``cli``, whose ``main`` installs the run's own. After ``cli.main`` returns, both signals are ignored while the interpreter shuts
down (JAX's ``atexit`` hooks run then; a second Ctrl-C there would print their traceback).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional, Sequence


def _exit_now(signum, frame) -> None:
    """While the command line is still importing nothing is written yet, so nothing needs cleaning up:
    end at once. (Raising KeyboardInterrupt here instead can land in a garbage-collection callback
    of JAX's, where Python prints it as "Exception ignored" with a traceback and carries on.)"""
    try:
        sys.stdout.flush()  # (what a finished command printed, if the signal comes as it returns)
    except Exception:  # noqa: BLE001 - a closed pipe: nothing to keep
        pass
    os.write(2, b"interrupted\n" if signum == signal.SIGINT else b"terminated (SIGTERM)\n")
    os._exit(128 + signum)


def _quiet_exit() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Args:
      argv: the arguments after the program name.

    Returns:
      0, 1 (internal error), 2 (a user's error), 130 / 143 (SIGINT / SIGTERM).
    """
    for sig in (signal.SIGINT, signal.SIGTERM):  # until cli.main installs its own (no gap between)
        signal.signal(sig, _exit_now)
    from . import cli

    try:
        code = cli.main(argv)
    except KeyboardInterrupt:  # (a second Ctrl-C as cli.main returns)
        _quiet_exit()
        print("interrupted", file=sys.stderr)
        return 130
    _quiet_exit()
    return code


def run() -> None:
    """``sys.exit(main())``, with the signals ignored from the moment the code is known."""
    sys.exit(main())
