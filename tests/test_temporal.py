"""Warping, consistency masks and the temporal loss (nst_jax.objective.temporal) against numpy transcriptions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.objective import temporal

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


def test_true_flow_of_the_synthetic_clip_and_its_masks():
    """make_clip's flow is exact: warping frame t−1 by it reproduces frame t wherever the mask is
    1; the mask is 0 exactly on the pixels the occluding square has just uncovered or covered."""
    from make_clip import make_clip

    from nst_jax.video import frames as video

    frames, back, fwd = make_clip(5, 48, 64, seed=2)
    masks = video.frame_masks(list(back), list(fwd))
    assert masks[0] is None
    for t in range(1, 5):
        warped = np.asarray(temporal.warp(jnp.asarray(frames[t - 1]), jnp.asarray(back[t])))
        m = masks[t] > 0
        assert 0.8 < m.mean() < 1.0
        np.testing.assert_array_equal(warped[m], frames[t][m])
        # where the warped previous frame is wrong (a pixel newly uncovered), the mask is 0
        wrong = np.abs(warped - frames[t]).max(axis=2) > 1e-6
        assert wrong.any() and not (m & wrong).any()


def test_the_temporal_term_in_the_objective_matches_numpy(vgg19_params):
    from nst_jax import StyleConfig
    from nst_jax.network import backbones as network, vgg
    from nst_jax.objective import terms as objective
    from nst_jax.objective.targets import compute_targets

    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1",), size=32, temporal_weight=37.0)
    p, spec = network.net_spec(vgg19_params, vgg.CAFFE)
    content, image = RNG.random((24, 32, 3)).astype(np.float32), RNG.random((24, 32, 3)).astype(np.float32)
    warped = RNG.random((24, 32, 3)).astype(np.float32)
    mask = (RNG.random((24, 32)) > 0.5).astype(np.float32)
    targets = compute_targets(p, spec, content, content, cfg.program())
    base, parts0 = objective.objective(p, targets, jnp.asarray(image), cfg.values(), program=cfg.program(), spec=spec)
    with_t = targets._replace(temporal=(jnp.asarray(warped), jnp.asarray(mask)))
    total, parts = objective.objective(p, with_t, jnp.asarray(image), cfg.values(), program=cfg.program(), spec=spec)
    # Ruder et al.'s artistic_video.lua: both frames preprocessed (Caffe: BGR, 0-255, minus the
    # mean) before the masked MSE; the mean cancels, the channel order does not matter to a sum
    want = 37.0 * np.sum(mask[..., None] * (255.0 * (image.astype(np.float64) - warped)) ** 2) / image.size
    np.testing.assert_allclose(float(parts["temporal"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(total), float(base) + want, rtol=1e-5)
    assert "temporal" not in parts0
    # torchvision weights: the network's input is (rgb - mean) / std, per channel
    p2, spec2 = network.net_spec(vgg19_params, vgg.TORCHVISION)
    targets2 = compute_targets(p2, spec2, content, content, cfg.program())._replace(
        temporal=(jnp.asarray(warped), jnp.asarray(mask)))
    _, parts2 = objective.objective(p2, targets2, jnp.asarray(image), cfg.values(), program=cfg.program(), spec=spec2)
    std = np.array([0.229, 0.224, 0.225])
    want2 = 37.0 * np.sum(mask[..., None] * ((image.astype(np.float64) - warped) / std) ** 2) / image.size
    np.testing.assert_allclose(float(parts2["temporal"]), want2, rtol=1e-5)


def test_sequential_frames_flicker_less_than_independent_ones(vgg19_params):
    from make_clip import make_clip

    from nst_jax import StyleConfig
    from nst_jax.video import frames as video
    from nst_jax.network import vgg

    frames, back, fwd = make_clip(4, 32, 40, seed=0)
    style = RNG.random((32, 40, 3)).astype(np.float32)
    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), optimizer="adam",
                      learning_rate=0.02, iterations=20, chunk_size=20, size=40, temporal_weight=200.0)
    masks = video.frame_masks(list(back), list(fwd))
    ind = video.stylize_independent(frames, style, vgg19_params, cfg, convention=vgg.CAFFE)
    seq = video.stylize_sequential(frames, style, vgg19_params, cfg, list(back), flows_fwd=list(fwd),
                                   convention=vgg.CAFFE)
    e_ind = video.temporal_errors([r.output for r in ind], list(back), masks)
    e_seq = video.temporal_errors([r.output for r in seq], list(back), masks)
    assert e_seq.mean() < e_ind.mean() / 2, (e_seq, e_ind)
    # frame 0's temporal term has weights 0: its losses are the independent frame's
    np.testing.assert_allclose(seq[0].result.losses, ind[0].result.losses, rtol=1e-5)


def test_temporal_frames_share_one_compiled_chunk_and_its_weight_is_a_value(vgg19_params):
    """Every frame of a sequential run (frame 0 with a temporal term of weight 0), and another
    ``temporal_weight``, share one compiled program."""
    from make_clip import make_clip

    from conftest import CompileCounter
    from nst_jax import StyleConfig
    from nst_jax.video import frames as video
    from nst_jax.network import vgg

    frames, back, fwd = make_clip(4, 32, 40, seed=1)
    style = RNG.random((32, 40, 3)).astype(np.float32)
    # a chunk length no other test uses: both programs are traced here
    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1",), optimizer="adam",
                      learning_rate=0.02, iterations=3, chunk_size=13, size=40)
    with CompileCounter() as count:
        video.stylize_sequential(frames, style, vgg19_params, cfg, list(back), flows_fwd=list(fwd),
                                 convention=vgg.CAFFE)
        assert count.traces == 1  # frame 0 and frames 1..3 alike
        video.stylize_sequential(frames[:2], style, vgg19_params, cfg.replace(temporal_weight=5.0), list(back[:2]),
                                 flows_fwd=list(fwd[:2]), convention=vgg.CAFFE)
        assert count.traces == 1


def test_long_term_target_is_the_papers_sum_over_earlier_frames():
    """``long_term_target`` against Ruder et al.'s long-term loss written out in numpy:
    Σ_j (1/D) Σ c_long_j (x − ω_j)², c_long_j = max(c_j − Σ_{l<j} c_l, 0)."""
    h, w, c = 6, 7, 3
    warped = [RNG.random((h, w, c)).astype(np.float32) for _ in range(3)]
    x = RNG.random((h, w, c)).astype(np.float32)
    for binary in (True, False):
        masks = [((RNG.random((h, w)) > 0.4) if binary else RNG.random((h, w))).astype(np.float32) for _ in range(3)]
        value, grad = 0.0, np.zeros((h, w, c))
        for j in range(3):
            c_long = np.zeros((h, w))
            for yy in range(h):
                for xx in range(w):
                    c_long[yy, xx] = max(masks[j][yy, xx] - sum(masks[l][yy, xx] for l in range(j)), 0.0)
            diff = x.astype(np.float64) - warped[j]
            value += np.sum(c_long[..., None] * diff ** 2) / x.size
            grad += 2 * c_long[..., None] * diff / x.size
        target, weights = temporal.long_term_target(warped, masks)
        got, got_grad = jax.value_and_grad(temporal.temporal_loss)(jnp.asarray(x), jnp.asarray(target),
                                                                  jnp.asarray(weights))
        np.testing.assert_allclose(np.asarray(got_grad), grad, rtol=1e-5, atol=1e-7)
        if binary:  # disjoint c_long: the value too (else it differs by a constant in x)
            np.testing.assert_allclose(float(got), value, rtol=1e-5)
    target, weights = temporal.long_term_target(warped[:1], masks[:1])  # J = (1,): the short-term term
    np.testing.assert_array_equal(target, warped[0])
    np.testing.assert_array_equal(weights, masks[0])


def _compose(a, b):
    """The flow of two steps: ``a`` from frame t to t−1, ``b`` from t−1 to t−2 (as ``warp`` takes them)."""
    return np.asarray(jnp.asarray(a) + temporal.warp(jnp.asarray(b), jnp.asarray(a)))


def test_long_term_sequential_holds_frames_to_two_frames_back(vgg19_params, monkeypatch):
    from make_clip import make_clip

    from nst_jax import StyleConfig
    from nst_jax.video import frames as video
    from nst_jax.network import vgg

    frames, back, fwd = make_clip(4, 32, 40, seed=0)
    style = RNG.random((32, 40, 3)).astype(np.float32)
    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), optimizer="adam",
                      learning_rate=0.02, iterations=20, chunk_size=20, size=40, temporal_weight=200.0)

    def pair_flows(t, j):
        assert j == 2 and t >= 2
        return _compose(back[t], back[t - 1]), _compose(fwd[t - 1], fwd[t])

    # The clip's shapes never cover a pixel for just one frame, so the paper's c_long_2 would be 0
    # everywhere; make the pairs (t, t−1) report an occlusion in a block (a forward flow that does
    # not come back), which the pairs (t, t−2) see through: there the long-term term holds frame t
    # to frame t−2, and the short-term run leaves it free.
    fwd_occluded = [None] + [f.copy() for f in fwd[1:]]
    for f in fwd_occluded[1:]:
        f[8:20, 10:24] += 5.0
    common = dict(flows_fwd=fwd_occluded, convention=vgg.CAFFE)
    short = video.stylize_sequential(frames, style, vgg19_params, cfg, list(back), **common)
    seen = []
    original = video.stylize

    def capture(*a, **k):
        seen.append(k["temporal"])
        return original(*a, **k)

    monkeypatch.setattr(video, "stylize", capture)
    from conftest import CompileCounter

    with CompileCounter() as count:  # the combined term is a value: the short-term run's program
        long = video.stylize_sequential(frames, style, vgg19_params, cfg, list(back), long_term=(1, 2),
                                        pair_flows=pair_flows, **common)
    assert count.traces == 0 and "jit(chunk)" not in count.compiles, (count.traces, count.compiles)
    for t in (0, 1):  # nothing reaches two frames back yet: the short-term run's frames
        np.testing.assert_array_equal(long[t].output, short[t].output)
    # frame t's term, built here from the paper's definition: the pair (t, t−1) where it is
    # consistent, else the pair (t, t−2) where that one is
    for t in (2, 3):
        target, weights = seen[t]
        c1 = np.asarray(temporal.consistency_mask(jnp.asarray(back[t]), jnp.asarray(fwd_occluded[t])))
        f2, b2 = pair_flows(t, 2)
        c2 = np.asarray(temporal.consistency_mask(jnp.asarray(f2), jnp.asarray(b2)))
        w1 = np.asarray(temporal.warp(jnp.asarray(long[t - 1].output), jnp.asarray(back[t])))
        w2 = np.asarray(temporal.warp(jnp.asarray(long[t - 2].output), jnp.asarray(f2)))
        assert ((c1 == 0) & (c2 == 1)).sum() > 50  # the block, seen through two frames back
        np.testing.assert_array_equal(weights, np.maximum(c1, c2))
        use2 = (c1 == 0) & (c2 == 1)
        np.testing.assert_allclose(target[use2], w2[use2], atol=1e-6)
        np.testing.assert_allclose(target[c1 == 1], w1[c1 == 1], atol=1e-6)
    assert np.abs(long[3].output - short[3].output).max() > 0  # and the frames follow it
