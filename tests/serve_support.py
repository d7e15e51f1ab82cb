"""What the server's tests share: the inputs, the CLI run a job must equal, a test client, and a real
server process on 127.0.0.1 (every wait bounded)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from nst_jax import cli, weights

from conftest import random_image

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Adam: a batch member's result is the single run's, bit for bit (README, "Many results")
ADAM = {"preset": "default", "optimizer": "adam", "learning-rate": "0.02", "size": "48", "chunk-size": "2",
        "style-layers": "relu1_1,relu2_1", "content-layers": "relu2_2"}


def make_inputs(d: pathlib.Path) -> pathlib.Path:
    """Synthetic weights and three small pictures in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    Image.fromarray((random_image(60, 80, 1) * 255).astype(np.uint8)).save(d / "content.png")
    Image.fromarray((random_image(50, 50, 2) * 255).astype(np.uint8)).save(d / "style.png")
    Image.fromarray((random_image(40, 70, 3) * 255).astype(np.uint8)).save(d / "style2.png")
    return d


def files(d: pathlib.Path, style: str = "style.png") -> list:
    return [("content", ("content.png", (d / "content.png").read_bytes(), "image/png")),
            ("style", (style, (d / style).read_bytes(), "image/png"))]


def cli_result(d: pathlib.Path, options: dict, out: pathlib.Path, style: str = "style.png") -> bytes:
    """The PNG ``nst-jax stylize`` writes with these options (the job's reference)."""
    argv = ["stylize", str(d / "content.png"), str(d / style), "-o", str(out), "--weights", str(d / "syn.h5"),
            "--no-progress"]
    for k, v in options.items():
        argv.append(f"--{k}={v}")
    assert cli.main(argv) == 0
    return out.read_bytes()


def wait(predicate, seconds: float, what: str, step: float = 0.1):
    """Poll ``predicate`` until it returns something truthy, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``nst-jax serve`` as its own process on 127.0.0.1."""

    def __init__(self, d: pathlib.Path, data: pathlib.Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data.parent / f"server-{self.port}.log", "wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nst_jax", "serve", "--port", str(self.port), "--data-dir", str(data),
             "--weights", str(d / "syn.h5"), *extra], stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def ready(self, client, seconds: float = 180) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}): {self.output()[-2000:]}")
            try:
                return client.get(self.url + "/healthz", timeout=2).status_code == 200
            except Exception:
                return False

        wait(up, seconds, "the server's /healthz", step=0.25)

    def output(self) -> str:
        self.log.flush()
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def stop(self, sig: int = signal.SIGKILL, seconds: float = 60) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(seconds)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.log.close()


@contextlib.contextmanager
def server(d: pathlib.Path, data: pathlib.Path, client, *extra: str) -> Iterator[Server]:
    s = Server(d, data, *extra)
    try:
        s.ready(client)
        yield s
    finally:
        s.stop()
