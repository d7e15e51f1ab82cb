"""Each total-variation formula against a numpy transcription written out pixel by pixel."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.program import losses


def _reference(x: np.ndarray, kind: str) -> float:
    """The formulas as their programs state them, in loops (float64)."""
    h, w, c = x.shape
    total = 0.0
    if kind == "l1":  # neural-style-pt's TVLoss: |x[i+1,j] - x[i,j]| over every row pair, and columns
        for i in range(h - 1):
            for j in range(w):
                total += np.abs(x[i + 1, j] - x[i, j]).sum()
        for i in range(h):
            for j in range(w - 1):
                total += np.abs(x[i, j + 1] - x[i, j]).sum()
        return total
    for i in range(h - 1):  # the Keras example's crop: pixels with both a lower and a right neighbour
        for j in range(w - 1):
            a = (x[i, j] - x[i + 1, j]) ** 2
            b = (x[i, j] - x[i, j + 1]) ** 2
            total += ((a + b) ** 1.25).sum() if kind == "pow1.25" else 0.5 * (a + b).sum()
    return total


@pytest.mark.parametrize("kind", ["l1", "l2", "pow1.25"])
def test_tv_formulas_against_numpy(kind):
    rng = np.random.default_rng(7)
    x = rng.random((5, 7, 3))
    got = float(losses.tv_loss(jnp.asarray(x, jnp.float32), kind))
    want = _reference(x, kind)
    assert got == pytest.approx(want, rel=1e-5)
    # each direction counts on its own: an image that varies only down the rows, then only across
    for one_way in (np.repeat(x[:, :1], 7, axis=1), np.repeat(x[:1], 5, axis=0)):
        got = float(losses.tv_loss(jnp.asarray(one_way, jnp.float32), kind))
        assert got == pytest.approx(_reference(one_way, kind), rel=1e-5) and got > 0


def test_no_tv_is_zero():
    assert float(losses.tv_loss(jnp.ones((4, 4, 3)), "none")) == 0.0
