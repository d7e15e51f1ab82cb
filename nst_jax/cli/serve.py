"""``nst-jax serve``: the job server and its page (``nst_jax.serve``), run by uvicorn.

It binds 127.0.0.1 by default; any other address needs ``--token`` (every request then carries
it). The weights are loaded once, before the port opens; ``/healthz`` answers 200 from then on.
SIGTERM or Ctrl-C drains: no new jobs, the running batch stops at its next chunk boundary after
writing its checkpoint, and the next start finishes it.
"""

from __future__ import annotations

import argparse
import ipaddress
import pathlib
import sys
from typing import Any

from ..errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_parser(sub: Any) -> None:
    """The ``serve`` command's options."""
    s = sub.add_parser("serve", help="serve the page and the job API (extra: nst-jax[serve])",
                       description="A web page to paint and watch, and a job server that batches requests of one "
                                   "program and shape into one compiled run.")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    s.add_argument("--weights", help="converted weights file (default: the weights directory)")
    s.add_argument("--no-download", action="store_true", help="never fetch weights")
    s.add_argument("--data-dir", default="nst-jax-data", help="inputs, results and the job database "
                   "(default ./nst-jax-data)")
    s.add_argument("--max-batch", type=int, default=4, help="jobs painted at once in one program (default 4)")
    s.add_argument("--token", help="a secret every request must carry (needed off 127.0.0.1)")
    s.add_argument("--max-pending", type=int, default=16, help="a client's queued and running jobs (default 16)")
    s.add_argument("--max-size", type=int, default=1024, help="a job's working long side at most (default 1024)")
    s.add_argument("--max-iterations", type=int, default=5000, help="a job's iterations at most (default 5000)")
    s.add_argument("--max-upload-mb", type=int, default=64, help="one request's size at most (default 64 MB)")


def check_bind(host: str, token: Any) -> None:
    """Refuse to bind anything but a loopback address without a token."""
    try:
        loopback = host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise ConfigError(f"--host {host}: serving beyond this machine needs --token SECRET (every request must carry "
                          "it)")
    if token is not None and len(token) < 16:
        raise ConfigError("--token: use at least 16 characters")


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM / Ctrl-C."""
    try:
        import uvicorn

        from ..serve.app import Settings, create_app
    except ImportError as err:
        raise ConfigError(f"nst-jax serve needs its extra: pip install 'nst-jax[serve]' ({err.name} is missing)") \
            from None
    from ..program.presets import preset
    from ..serve.jobs import Limits
    from . import common

    check_bind(args.host, args.token)
    data = pathlib.Path(args.data_dir).expanduser()
    if data.exists() and not data.is_dir():
        raise ConfigError(f"--data-dir {data}: exists and is not a folder (the server keeps its jobs, inputs and "
                          "results there)")
    if args.weights and pathlib.Path(args.weights).expanduser().resolve().is_relative_to(data.resolve()):
        raise ConfigError(f"--weights {args.weights}: inside --data-dir {data}, which the server writes; keep the "
                          "weights elsewhere")
    for name in ("max_batch", "max_pending", "max_size", "max_iterations", "max_upload_mb"):
        common.positive_option("--" + name.replace("_", "-"), getattr(args, name))
    net = common.load_network(preset("default"), args.weights, download=not args.no_download)
    common.warn_not_pretrained(net)
    settings = Settings(data, token=args.token, max_batch=args.max_batch,
                        max_pending=args.max_pending, max_body=args.max_upload_mb * 2**20,
                        limits=Limits(max_size=args.max_size, max_iterations=args.max_iterations))
    app = create_app(settings, net)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5,
                            lifespan="on")
    server = uvicorn.Server(config)
    print(f"nst-jax serve: http://{args.host}:{args.port}/ (data in {settings.data_dir})", file=sys.stderr, flush=True)
    server.run()
    return 0
