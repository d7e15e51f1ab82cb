"""``nst-jax stylize --web``: the server's page, watching one CLI run.

The run's progress callback writes what a server's worker writes (the iteration, the losses, a
preview with the colours restored) into a one-job store in a temporary folder, and a view-only
app (``app.create_app`` without a network: no worker, no new jobs) serves the page and the
read-only API over it on 127.0.0.1, from a thread of the CLI's process. The view lives as long as
the command (a few seconds more while a page still follows the run, so it sees the end).
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import threading
import time
from typing import Any, Optional

import numpy as np

from .. import image
from .app import Settings, create_app
from .store import JobStore
from .worker import Paths


class LiveView:
    """One run's live view. ``update`` between chunks, ``finish`` with the result, ``close`` at the end."""

    def __init__(self, argv: list[str], config: dict, iterations: int, port: int = 0) -> None:
        import uvicorn

        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="nst-jax-web-"))
        self.store = JobStore(self.dir / "jobs.sqlite3")
        self.paths = Paths(self.dir)
        self.job_id = self.store.add(client="cli", argv=argv, key="cli", config=config, iterations=iterations)
        self.store.start([self.job_id], "cli")
        self.paths.job(self.job_id).mkdir(parents=True)
        self.app = create_app(Settings(self.dir), None, store=self.store)
        # log_config=None: uvicorn leaves the CLI's logging (and its stderr) alone
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_config=None,
                                                   lifespan="on", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, name="nst-jax-web", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise OSError(f"the live view could not listen on 127.0.0.1:{port}")
        bound = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{bound}/?job={self.job_id}"

    def update(self, iteration: int, losses: np.ndarray, parts: dict[str, float], picture: np.ndarray) -> None:
        """A chunk boundary: the preview, the iteration, the finite losses so far and the latest parts."""
        image.save_image(self.paths.preview(self.job_id), picture, overwrite=True)
        finite = [float(x) for x in np.asarray(losses, np.float64).reshape(-1) if np.isfinite(x)]
        self.store.progress([(self.job_id, iteration, finite, {k: float(v) for k, v in parts.items()})])

    def finish(self, output: pathlib.Path, status: str, error: Optional[str] = None) -> None:
        """The run's output file becomes the view's result (PNG); the job ends with ``status``
        (done, failed or cancelled)."""
        picture = image.load_image(str(output))
        image.save_image(self.paths.result(self.job_id), picture, overwrite=True)
        self.store.finish(self.job_id, status, error)

    def close(self, linger: float = 3.0) -> None:
        """Stop serving (after up to ``linger`` seconds while a page still follows the run)."""
        api: Any = self.app.state.api
        deadline = time.monotonic() + linger
        while api.streams and time.monotonic() < deadline:
            time.sleep(0.05)
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)
