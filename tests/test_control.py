"""Colour preservation, coarse-to-fine scales and style scale (nst_jax.control.runs)."""

from __future__ import annotations


import numpy as np
import pytest

from nst_jax import StyleConfig, image
from nst_jax.image import color
from nst_jax.control import colors, runs as control, scales
from nst_jax.engine import batching
from nst_jax.engine.batching import ManyResult
from nst_jax.network import vgg
from nst_jax.errors import ConfigError
from nst_jax.program.presets import PRESETS
from nst_jax.engine.single import stylize
from nst_jax import make_loss_fn

from conftest import random_image

# A shallow network and a 2-step chunk: every real run below uses this config (the colour mode aside:
# see control._engine_config) and the two shapes of the 34 -> 48 schedule (23x34 and 32x48), so
# the engine compiles each shape once.
SMALL = StyleConfig(content_layers=("relu1_2",), style_layers=("relu1_1", "relu1_2"), optimizer="adam",
                    learning_rate=0.02, iterations=4, chunk_size=2, size=48, style_size="scale", style_scale=0.75)
CONTENT = random_image(32, 48, 1)
STYLE = random_image(40, 40, 2)
SCALES = [34, 48]  # scale_schedule(48, start=32): shapes (23, 34), (32, 48)


def yiq(x):
    return np.asarray(color.rgb_to_yiq(x))


# --------------------------------------------------------------------------------------------
# sizes


def test_scale_schedule_hand_checked():
    # 512/√2 = 362.04, 512/2 = 256, 512/(2√2) = 181 < 256
    assert scales.scale_schedule(512) == [256, 362, 512]
    # 600/√2 = 424.26, 600/2 = 300, 600/(2√2) = 212 < 256: equal steps, first scale in [256, 362)
    assert scales.scale_schedule(600) == [300, 424, 600]
    assert scales.scale_schedule(1024, start=128) == [128, 181, 256, 362, 512, 724, 1024]
    assert scales.scale_schedule(256) == [256]
    assert scales.scale_schedule(100) == [100]
    assert scales.scale_schedule(48, start=32) == [34, 48]  # 48/√2 = 33.9
    assert scales.scale_schedule(64, start=1) == [16, 23, 32, 45, 64]  # never under 16
    assert scales.scale_schedule(512, start=256, factor=2) == [256, 512]
    with pytest.raises(ConfigError, match="factor"):
        scales.scale_schedule(512, factor=1.0)


def test_plan_shapes_keeps_aspect_and_ends_at_the_final_shape():
    assert scales.plan_shapes(48, 32, [34, 48]) == [(34, 23), (48, 32)]  # 32·34/48 = 22.67
    assert scales.plan_shapes(300, 400, [256, 400]) == [(192, 256), (300, 400)]
    assert scales.plan_shapes(100, 10, [50, 100]) == [(50, 16), (100, 16)]  # min 16 a side
    h, w = 333, 517
    assert scales.plan_shapes(h, w, scales.scale_schedule(w))[-1] == (h, w)


def test_scale_iterations_rule():
    cfg = SMALL.replace(iterations=1000)
    assert scales.scale_iterations(cfg, 3) == [1000, 500, 500]
    assert scales.scale_iterations(SMALL.replace(iterations=1), 2) == [1, 1]
    assert scales.scale_iterations(cfg, 2, 7) == [7, 7]
    assert scales.scale_iterations(cfg, 2, [3, 0]) == [3, 0]
    with pytest.raises(ConfigError, match="2 scales"):
        scales.scale_iterations(cfg, 2, [1, 2, 3])
    with pytest.raises(ConfigError, match=">= 0"):
        scales.scale_iterations(cfg, 2, [1, -1])


def test_style_working_shape():
    content_shape = (40, 60)
    cfg = SMALL.replace(style_size="content")
    assert scales.style_working_shape((100, 50), content_shape, cfg) == (40, 60)
    scale = SMALL.replace(style_size="scale")
    assert scales.style_working_shape((100, 50), content_shape, scale.replace(style_scale=1.0)) == (60, 30)
    assert scales.style_working_shape((100, 50), (64, 96), scale.replace(style_scale=0.5)) == (48, 24)
    assert scales.style_working_shape((50, 100), content_shape, scale.replace(style_scale=0.75)) == (23, 45)  # 22.5 up
    # 0.5 · 61 = 30.5 → 31 (halves up); 50 · 31/100 = 15.5 → 16
    assert scales.style_working_shape((100, 50), (40, 61), scale.replace(style_scale=0.5)) == (31, 16)
    with pytest.raises(ConfigError, match=r"would be 30x15 .*16 pixels"):
        scales.style_working_shape((100, 50), content_shape, scale.replace(style_scale=0.5))


# --------------------------------------------------------------------------------------------
# colour


def _colour_image(mean, mix, seed, shape=(48, 64)):
    """Correlated Gaussian colours (std ≈ 0.1) around ``mean``: well inside [0, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape + (3,)) @ np.asarray(mix).T + np.asarray(mean)
    assert 0 < x.min() and x.max() < 1
    return x.astype(np.float32)


def _mean_cov(x):
    flat = np.asarray(x, np.float64).reshape(-1, 3)
    return flat.mean(0), np.cov(flat.T, bias=True)


@pytest.mark.parametrize("method", ["chol", "pca", "sym"])
def test_match_gives_the_style_the_contents_colour_statistics(method):
    content = _colour_image([0.5, 0.45, 0.4], [[0.08, 0.03, 0.0], [0.02, 0.07, 0.02], [0.0, 0.03, 0.06]], 0)
    style = _colour_image([0.35, 0.5, 0.5], [[0.05, -0.04, 0.02], [0.0, 0.09, 0.0], [0.03, 0.0, 0.1]], 1, (40, 40))
    cfg = SMALL.replace(preserve_colors="match")
    c_in, s_in, restore = colors.prepare_colors(content, [style], cfg, color_match_method=method)
    np.testing.assert_array_equal(c_in, content)
    (matched,) = s_in
    unclipped = np.asarray(color.match_color(style, content, method))
    assert 0 < unclipped.min() and unclipped.max() < 1  # so the clipping did nothing
    np.testing.assert_allclose(matched, unclipped, atol=1e-7)
    mu_m, cov_m = _mean_cov(matched)
    mu_c, cov_c = _mean_cov(content)
    np.testing.assert_allclose(mu_m, mu_c, atol=1e-5)
    np.testing.assert_allclose(cov_m, cov_c, atol=1e-3)
    np.testing.assert_allclose(cov_m, cov_c, rtol=2e-3, atol=1e-4)  # cov entries ~1e-2
    np.testing.assert_array_equal(restore(CONTENT), CONTENT)


def test_prepare_colors_keeps_the_style_structure_and_rejects_unknown_methods():
    cfg = SMALL.replace(preserve_colors="match")
    _, styles, _ = colors.prepare_colors(CONTENT, [(STYLE, 2.0), (STYLE[:32], 1.0)], cfg)
    assert [w for _, w in styles] == [2.0, 1.0] and styles[1][0].shape == (32, 40, 3)
    for mode in ("none", "swap"):
        c_in, s_in, _ = colors.prepare_colors(CONTENT, STYLE, SMALL.replace(preserve_colors=mode))
        np.testing.assert_array_equal(c_in, CONTENT)
        np.testing.assert_array_equal(s_in, STYLE)
    with pytest.raises(ConfigError, match="color_match_method"):
        colors.prepare_colors(CONTENT, STYLE, cfg, color_match_method="lab")


def test_lum_inputs_are_grey_with_the_contents_luminance_statistics():
    content = _colour_image([0.5, 0.45, 0.4], np.eye(3) * 0.1, 3)
    c_in, s_in, _ = colors.prepare_colors(content, [STYLE], SMALL.replace(preserve_colors="lum"))
    y = np.asarray(color.luminance(content))
    np.testing.assert_allclose(c_in, np.repeat(y[..., None], 3, -1), atol=1e-7)
    (s,) = s_in
    np.testing.assert_array_equal(s[..., 0], s[..., 1])
    np.testing.assert_array_equal(s[..., 0], s[..., 2])
    assert s[..., 0].mean() == pytest.approx(y.mean(), abs=1e-5)
    assert s[..., 0].std() == pytest.approx(y.std(), rel=1e-4)


def test_swap_keeps_the_results_luminance_and_the_contents_chroma():
    result = random_image(32, 48, 7)
    _, _, restore = colors.prepare_colors(CONTENT, STYLE, SMALL.replace(preserve_colors="swap"), clip=False)
    out = restore(result)
    np.testing.assert_allclose(yiq(out)[..., 0], yiq(result)[..., 0], atol=1e-5)
    np.testing.assert_allclose(yiq(out)[..., 1:], yiq(CONTENT)[..., 1:], atol=1e-5)
    _, _, restore_clipped = colors.prepare_colors(CONTENT, STYLE, SMALL.replace(preserve_colors="swap"))
    np.testing.assert_allclose(restore_clipped(result), np.clip(out, 0, 1), atol=1e-7)
    # at another size (a preview at a coarse scale) the content is resized to the result's shape
    assert restore(result[:21, :32]).shape == (21, 32, 3)


def test_lum_run_keeps_the_contents_chroma_and_changes_the_luminance(vgg19_params):
    cfg = SMALL.replace(preserve_colors="lum")
    r = control.stylize_controlled(CONTENT, STYLE, vgg19_params, cfg, scales=SCALES, convention=vgg.CAFFE)
    assert r.image.shape == CONTENT.shape and r.status == "done"
    raw = r.result.image  # the engine's result (started grey; the optimiser moves each channel)
    _, _, restore = colors.prepare_colors(CONTENT, STYLE, cfg, clip=False)
    unclipped = restore(raw)
    np.testing.assert_allclose(r.image, np.clip(unclipped, 0, 1), atol=1e-7)
    inside = np.all((unclipped > 0) & (unclipped < 1), axis=-1)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(yiq(r.image)[inside][:, 1:], yiq(CONTENT)[inside][:, 1:], atol=1e-5)
    np.testing.assert_allclose(yiq(unclipped)[..., 1:], yiq(CONTENT)[..., 1:], atol=1e-5)
    # the optimised luminance is the result's, not the content's
    np.testing.assert_allclose(yiq(unclipped)[..., 0], np.asarray(color.luminance(raw)), atol=1e-5)
    assert np.abs(yiq(r.image)[..., 0] - yiq(CONTENT)[..., 0]).max() > 1e-2


# --------------------------------------------------------------------------------------------
# coarse-to-fine


def _record(monkeypatch):
    """Record every scale's engine call (``batching.stylize_many``, a single run being a batch of
    one) as member 0 sees it."""
    calls = []
    real = batching.stylize_many

    def recording(content, styles, params, config, **kw):
        res = real(content, styles, params, config, **kw)
        init = kw.get("init_images")
        calls.append(dict(content=np.asarray(content), style=styles[0], init=None if init is None else init[0],
                          result=res[0], iterations=kw.get("iterations"), config=config))
        return res

    monkeypatch.setattr(batching, "stylize_many", recording)
    return calls


def test_each_scale_starts_from_the_previous_result_upsampled(vgg19_params, monkeypatch):
    calls = _record(monkeypatch)
    cfg = SMALL.replace(preserve_colors="swap")
    seen = []
    r = control.stylize_controlled(CONTENT, STYLE, vgg19_params, cfg, scales=SCALES,
                                   convention=vgg.CAFFE, callback=lambda p: seen.append(p) and False)
    assert r.scales == [(23, 34), (32, 48)] == [c["content"].shape[:2] for c in calls]
    assert [c["iterations"] for c in calls] == r.iterations_per_scale == [4, 2]
    # the coarse content is the full one downsized; styles follow style_size="scale" at each scale
    np.testing.assert_array_equal(calls[0]["content"], image.resize(CONTENT, (23, 34), "bicubic"))
    assert calls[0]["style"].shape == (26, 26, 3) and calls[1]["style"].shape == (36, 36, 3)  # 0.75·34, 0.75·48
    assert calls[0]["init"] is None  # config.init on the first scale
    np.testing.assert_array_equal(calls[1]["init"], image.resize(calls[0]["result"].output, (32, 48), "bicubic"))
    # and the fine scale's first loss is the loss of that start image
    start_loss = make_loss_fn(vgg19_params, calls[1]["content"], calls[1]["style"], calls[1]["config"],
                                       convention=vgg.CAFFE)(calls[1]["init"])[0]
    assert r.losses_per_scale[1][0] == pytest.approx(float(start_loss), rel=1e-4)
    # results: final shape, all losses, colours restored on the final scale's image
    assert r.image.shape == CONTENT.shape
    np.testing.assert_array_equal(r.result.image, calls[-1]["result"].image)
    np.testing.assert_array_equal(r.losses, np.concatenate([c["result"].losses for c in calls]))
    assert r.iterations == 6 and r.evaluations == 6 and r.config is cfg
    restored = np.asarray(color.transfer_chroma(r.result.image, CONTENT, clip=True))
    np.testing.assert_allclose(r.image, restored, atol=1e-7)
    # the callback saw every scale, with where it stands
    assert [(p.scale_index, p.scale_shape, p.iteration, p.overall_iteration) for p in seen] == [
        (0, (23, 34), 2, 2), (0, (23, 34), 4, 4), (1, (32, 48), 2, 6)]
    assert all(p.num_scales == 2 and p.total_iterations == 6 for p in seen)
    assert seen[-1].restored_image().shape == (32, 48, 3) and seen[1].image().shape == (23, 34, 3)


def test_one_scale_without_colour_control_is_stylize(vgg19_params):
    style = random_image(36, 36, 9)  # already at its working shape: 0.75 · 48
    r = control.stylize_controlled(CONTENT, style, vgg19_params, SMALL, convention=vgg.CAFFE, seed=3)
    ref = stylize(CONTENT, style, vgg19_params, SMALL, convention=vgg.CAFFE, seed=3)
    np.testing.assert_array_equal(r.image, ref.image)
    np.testing.assert_array_equal(r.losses, ref.losses)
    assert r.scales == [(32, 48)] and r.final_loss == ref.final_loss


def test_a_stop_at_a_coarse_scale_returns_the_final_shape(vgg19_params):
    r = control.stylize_controlled(CONTENT, STYLE, vgg19_params, SMALL, scales=SCALES, convention=vgg.CAFFE,
                                   callback=lambda p: True)
    assert r.status == "stopped" and len(r.losses_per_scale) == 1 and r.iterations == 2
    assert r.image.shape == r.best_image.shape == CONTENT.shape


def test_auto_scales():
    assert scales.run_shapes((300, 400), "auto") == [(212, 283), (300, 400)]  # 400/√2 = 282.8; 300·283/400
    assert scales.run_shapes((32, 48), "auto") == [(32, 48)]  # under 256: one scale
    assert scales.run_shapes((32, 48), None) == [(32, 48)]


def test_scales_errors():
    with pytest.raises(ConfigError, match="last scale must be the content's long side 48"):
        control.stylize_controlled(CONTENT, STYLE, {}, SMALL, scales=[32, 40], convention=vgg.CAFFE)
    with pytest.raises(ConfigError, match="'auto'"):
        control.stylize_controlled(CONTENT, STYLE, {}, SMALL, scales="fast", convention=vgg.CAFFE)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("colors", ["lum", "match"])
def test_every_preset_plans_its_scales(name, colors, monkeypatch):
    """The plumbing for every preset (a stand-in engine; the real one is exercised above)."""
    calls = []

    def fake(content, styles, params, config, **kw):
        style = styles[0]
        init = kw["init_images"]
        calls.append((content.shape, [np.shape(s) for s in style] if isinstance(style, list) else np.shape(style),
                      dict(kw, init_image=None if init is None else init[0])))
        out = np.asarray(init if init is not None else content[None])
        n = kw["iterations"]
        return ManyResult(out, out, np.ones((1, n), np.float32), np.asarray([n]), n, ["done"], config, kw["seeds"])

    monkeypatch.setattr(batching, "stylize_many", fake)
    cfg = PRESETS[name].replace(preserve_colors=colors, iterations=6)
    content = random_image(48, 64, 4)
    r = control.stylize_controlled(content, [STYLE, random_image(30, 60, 5)], {}, cfg, scales=[32, 45, 64],
                                   convention=vgg.CAFFE)
    assert [c[0][:2] for c in calls] == r.scales == [(24, 32), (34, 45), (48, 64)]
    for (_shape, styles, _), scale in zip(calls, r.scales):
        want = [scales.style_working_shape(s, scale, cfg) + (3,) for s in ((40, 40), (30, 60))]
        assert styles == want
    assert r.losses.shape == (12,) and r.image.shape == (48, 64, 3)
    assert calls[0][2]["init_image"] is None and calls[1][2]["init_image"].shape == (34, 45, 3)


# --------------------------------------------------------------------------------------------
# batches


def test_many_controlled_equals_single_controlled_runs(vgg19_params):
    styles = [STYLE, [random_image(32, 48, 5), random_image(48, 32, 6)]]
    cfg = SMALL.replace(preserve_colors="lum")
    many = control.stylize_many_controlled(CONTENT, styles, vgg19_params, cfg, scales=SCALES, seeds=[0, 1],
                                           convention=vgg.CAFFE)
    assert len(many) == 2 and many.images.shape == (2, 32, 48, 3) and many.losses.shape == (2, 6)
    assert many.scales == [(23, 34), (32, 48)] and many.status == ["done", "done"]
    for i, style in enumerate(styles):
        single = control.stylize_controlled(CONTENT, style, vgg19_params, cfg, scales=SCALES, seed=i,
                                            convention=vgg.CAFFE)
        np.testing.assert_allclose(many.losses[i], single.losses, rtol=2e-4)
        np.testing.assert_allclose(many.images[i], single.image, atol=2e-4)
        assert many[i].evaluations == single.evaluations == 6


@pytest.mark.parametrize("changes", [dict(), dict(optimizer="lbfgs", lbfgs_linesearch="zoom")],
                         ids=["adam", "lbfgs-zoom"])
def test_coarse_to_fine_resume_equals_the_uninterrupted_run(vgg19_params, tmp_path, changes):
    """A checkpoint taken in the middle of the second scale (state, every scale's losses, each
    finished scale's evaluations), loaded and resumed, ends where the uninterrupted run ends."""
    from nst_jax.engine import checkpoint
    from nst_jax.engine.loop import init_state

    cfg = SMALL.replace(init="noise", iterations=8, **changes)  # 8 iterations, then 4 on the second scale
    full = control.stylize_controlled(CONTENT, STYLE, vgg19_params, cfg, scales=SCALES, seed=3, convention=vgg.CAFFE)
    meta = dict(config=cfg, seed=3, weights_fingerprint="abc", content_shape=CONTENT.shape)
    ckpt = tmp_path / "run.ckpt.npz"

    def stop_in_scale_2(p):
        if p.scale_index == 1 and p.iteration == 2:
            checkpoint.save(ckpt, p.state, np.concatenate([l for l, _ in p.finished] + [p.losses]),
                            scales_done=[(len(l), e) for l, e in p.finished], **meta)
            return True
        return False

    first = control.stylize_controlled(CONTENT, STYLE, vgg19_params, cfg, scales=SCALES, seed=3,
                                       convention=vgg.CAFFE, callback=stop_in_scale_2)
    assert first.status == "stopped"
    shapes = scales.run_shapes(CONTENT.shape[:2], SCALES)
    state, losses, header = checkpoint.load(
        ckpt, lambda k: init_state(np.zeros((*shapes[k], 3), np.float32), cfg.program(), cfg.values()), **meta)
    assert header["scale"] == 1
    (n0, e0), = header["scales_done"]
    assert n0 == len(full.losses_per_scale[0]) and e0 > 0
    resumed = control.stylize_controlled(CONTENT, STYLE, vgg19_params, cfg, scales=SCALES, seed=3,
                                         convention=vgg.CAFFE, resume=state, resume_losses=losses[n0:],
                                         resume_scales=[(losses[:n0], e0)])
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for a, b in zip(resumed.losses_per_scale, full.losses_per_scale, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.image, full.image)
    np.testing.assert_array_equal(resumed.output, full.output)
    assert (resumed.iterations, resumed.evaluations) == (full.iterations, full.evaluations)
    # a state of the wrong scale is refused by name
    with pytest.raises(ConfigError, match="scale 1 of this run"):
        control.stylize_controlled(CONTENT, STYLE, vgg19_params, cfg, scales=SCALES, seed=3, convention=vgg.CAFFE,
                                   resume=state, resume_losses=losses[n0:])


def test_a_batch_resumed_at_a_later_scale_needs_one_group():
    """Groups after the resumed one would start from the previous scale's results, which a
    ManyResume does not hold: refused, not run from the wrong start."""
    import jax.numpy as jnp

    from nst_jax.engine import driver, loop
    from nst_jax.engine.batching import ManyResume

    one = loop.init_state(jnp.zeros((32, 48, 3), jnp.float32), SMALL.program(), SMALL.values())
    resume = ManyResume(None, driver.stack([one]), np.zeros((1, 0, loop.row_size()), np.float32))
    scale0 = [(np.ones((2, 4), np.float32), np.full(2, 4))]
    with pytest.raises(ConfigError, match="every member in one group"):
        control.stylize_many_controlled(CONTENT, [STYLE, STYLE], {}, SMALL, scales=SCALES, convention=vgg.CAFFE,
                                        batch_size=1, resume=resume, resume_scales=scale0)
