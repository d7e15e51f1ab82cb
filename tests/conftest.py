"""Shared fixtures: synthetic weights (the converted format's params) and tiny random images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Tests run on the CPU, single precision, deterministic.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLI's persistent compilation cache stays off in tests (hermetic, nothing written to ~/.cache).
os.environ.setdefault("NST_JAX_CACHE_DIR", "")

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # torch_reference lives in scripts/, shared with the benchmark


@pytest.fixture(scope="session")
def vgg19_params():
    from nst_jax.weights import synthetic_params

    return synthetic_params("vgg19", seed=0)


@pytest.fixture(scope="session")
def vgg16_params():
    from nst_jax.weights import synthetic_params

    return synthetic_params("vgg16", seed=0)


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish random RGB image in [0, 1] (blurred noise, so features are not pure noise)."""
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 3)).astype(np.float32)
    for axis in (0, 1):
        img = (img + np.roll(img, 1, axis) + np.roll(img, -1, axis)) / 3
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.fixture
def images():
    """(content, style, image) at 48×64."""
    return random_image(48, 64, 1), random_image(48, 64, 2), random_image(48, 64, 3)


class CompileCounter:
    """Counts the engine chunk's traces (``loop.chunk``: one image or a batch) and every backend compilation, through ``jax.monitoring``."""

    def __init__(self, fun_name: str = "chunk"):
        self.fun_name, self.traces, self.compiles = fun_name, 0, []

    def __call__(self, event, duration, **kw):
        if event == "/jax/core/compile/jaxpr_trace_duration" and kw.get("fun_name") == self.fun_name:
            self.traces += 1
        if event == "/jax/core/compile/backend_compile_duration":
            self.compiles.append(kw.get("fun_name"))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)
