"""Warping, consistency masks and the temporal loss (nst_jax.temporal) against numpy transcriptions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import temporal

RNG = np.random.default_rng(0)


def _bilinear_numpy(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward bilinear warp, borders extended, written with loops over float64."""
    h, w, c = img.shape
    out = np.zeros((h, w, c))
    for y in range(h):
        for x in range(w):
            sy = min(max(y + flow[y, x, 1], 0.0), h - 1.0)
            sx = min(max(x + flow[y, x, 0], 0.0), w - 1.0)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            out[y, x] = ((1 - fy) * (1 - fx) * img[y0, x0] + (1 - fy) * fx * img[y0, x1]
                         + fy * (1 - fx) * img[y1, x0] + fy * fx * img[y1, x1])
    return out


def test_integer_translation_is_exact():
    img = RNG.random((9, 11, 3)).astype(np.float32)
    flow = np.zeros((9, 11, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2, -1  # sample 2 right, 1 up
    got = np.asarray(temporal.warp(jnp.asarray(img), jnp.asarray(flow)))
    np.testing.assert_array_equal(got[1:, :-2], img[:-1, 2:])
    valid = np.asarray(temporal.warp_valid(jnp.asarray(flow)))
    assert valid[1:, :-2].all() and not valid[0].any() and not valid[:, -2:].any()


def test_subpixel_flow_matches_a_numpy_bilinear_reference():
    img = RNG.random((7, 8, 3)).astype(np.float32)
    flow = (RNG.random((7, 8, 2)) * 4 - 2).astype(np.float32)
    got = np.asarray(temporal.warp(jnp.asarray(img), jnp.asarray(flow)))
    np.testing.assert_allclose(got, _bilinear_numpy(img.astype(np.float64), flow.astype(np.float64)), atol=1e-6)


def test_masks_on_an_occluding_square():
    # a 6x6 square moves 4 px right over a still background between frame t-1 and frame t
    h, w, s = 24, 24, 6
    fwd = np.zeros((h, w, 2), np.float32)  # t-1 -> t
    fwd[8:8 + s, 6:6 + s, 0] = 4
    back = np.zeros((h, w, 2), np.float32)  # t -> t-1
    back[8:8 + s, 10:10 + s, 0] = -4
    c = np.asarray(temporal.consistency_mask(jnp.asarray(back), jnp.asarray(fwd)))
    # background the square has just uncovered (columns 6..9 of its rows): in frame t it is seen,
    # its backward flow (0) lands where frame t-1 had the square moving +4: inconsistent
    assert not c[8:8 + s, 6:10].any()
    # the moving square's interior and the far background are consistent
    assert c[9:8 + s - 1, 11:10 + s - 1].all()
    assert c[:5].all() and c[-5:].all()
    # its edges are motion boundaries
    assert not c[8:8 + s, 9].any() and not c[7, 10:10 + s].any()


def test_temporal_loss_and_gradient_match_numpy():
    x = RNG.random((5, 6, 3)).astype(np.float32)
    prev = RNG.random((5, 6, 3)).astype(np.float32)
    mask = (RNG.random((5, 6)) > 0.3).astype(np.float32)
    loss, grad = jax.value_and_grad(temporal.temporal_loss)(jnp.asarray(x), jnp.asarray(prev), jnp.asarray(mask))
    d = x.astype(np.float64) - prev
    np.testing.assert_allclose(float(loss), np.sum(mask[..., None] * d**2) / x.size, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), 2 * mask[..., None] * d / x.size, rtol=1e-5, atol=1e-9)


def test_warp_is_differentiable_in_the_image():
    img = RNG.random((6, 6, 3)).astype(np.float32)
    flow = (RNG.random((6, 6, 2)) - 0.5).astype(np.float32)
    w = RNG.random((6, 6, 3)).astype(np.float32)
    g = jax.grad(lambda im: jnp.sum(temporal.warp(im, jnp.asarray(flow)) * w))(jnp.asarray(img))
    # the warp is linear in the image: its gradient is the transpose applied to w, checked by
    # <warp(e_k), w> for a few basis images e_k
    for k in [(0, 0, 0), (2, 3, 1), (5, 5, 2)]:
        e = np.zeros_like(img)
        e[k] = 1
        np.testing.assert_allclose(float(g[k]), np.sum(_bilinear_numpy(e, flow) * w), rtol=1e-5, atol=1e-6)
