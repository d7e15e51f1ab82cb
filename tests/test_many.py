"""stylize_many: N runs in one vmapped program equal N single runs; sharding over devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nst_jax import StyleConfig, stylize, stylize_many
from nst_jax.network import vgg
from nst_jax.engine.batching import CPU_MAX_BATCH, default_batch_size
from nst_jax.engine.memory import estimate_bytes_per_result

from conftest import random_image

SMALL = dict(content_layers=("relu3_2",), style_layers=("relu1_1", "relu2_1", "relu3_1"), size=64)


@pytest.mark.parametrize(
    "changes",
    [
        dict(optimizer="sgd", learning_rate=1e-5),
        dict(optimizer="adam", learning_rate=0.02, init="noise"),
        dict(optimizer="lbfgs", learning_rate=1.0),
        dict(optimizer="lbfgs", lbfgs_linesearch="zoom"),
    ],
    ids=["sgd", "adam", "lbfgs", "lbfgs-zoom"],
)
def test_many_equals_single_runs(changes, vgg19_params):
    content = random_image(40, 48, 1)
    # mixed sizes and aspect ratios: each style's Gram is taken at its own size
    styles = [random_image(40, 48, 2), random_image(32, 64, 3), random_image(56, 40, 4)]
    seeds = [0, 1, 2]
    cfg = StyleConfig(**SMALL, **changes, iterations=7, chunk_size=4)
    many = stylize_many(content, styles, vgg19_params, cfg, seeds=seeds, convention=vgg.CAFFE)
    assert many.images.shape == (3, 40, 48, 3) and many.losses.shape == (3, 7)
    for i, (style, seed) in enumerate(zip(styles, seeds)):
        single = stylize(content, style, vgg19_params, cfg, seed=seed, convention=vgg.CAFFE)
        np.testing.assert_allclose(many.losses[i], single.losses, rtol=2e-4)
        # Batched convolutions sum in another order (~1e-7 relative); L-BFGS's curvature pairs amplify
        # that over the steps, so its images get a looser (still sub-1/255) pixel tolerance.
        atol = 1e-3 if cfg.optimizer == "lbfgs" else 2e-4
        np.testing.assert_allclose(many.images[i], single.image, atol=atol)
        assert many.evaluations[i] == single.evaluations
        assert many[i].final_loss == pytest.approx(single.final_loss, rel=2e-4)


def test_members_with_their_own_iteration_counts(vgg19_params):
    """Configs that differ in iterations run as one batch (a job server's mixed requests): each
    member stops at its own count, with the single run's losses and image; L-BFGS rounds, whose
    schedule the batch shares, refuse it."""
    from nst_jax.errors import ConfigError

    content = random_image(40, 48, 1)
    styles = [random_image(40, 48, 2), random_image(32, 64, 3)]
    cfg = StyleConfig(**SMALL, optimizer="adam", learning_rate=0.02, iterations=7, chunk_size=4)
    configs = [cfg.replace(iterations=3), cfg.replace(iterations=7, style_weight=2e4)]
    many = stylize_many(content, styles, vgg19_params, cfg, configs=configs, seeds=[0, 1], convention=vgg.CAFFE)
    assert list(many.steps) == [3, 7] and np.isnan(many.losses[0, 3:]).all()
    for i, c in enumerate(configs):
        single = stylize(content, styles[i], vgg19_params, c, seed=i, convention=vgg.CAFFE)
        np.testing.assert_allclose(many.losses[i, :c.iterations], single.losses, rtol=2e-4)
        np.testing.assert_allclose(many.images[i], single.image, atol=2e-4)
    rounds = [c.replace(optimizer="lbfgs", lbfgs_round=2) for c in configs]
    with pytest.raises(ConfigError, match="differs in iterations"):
        stylize_many(content, styles, vgg19_params, rounds[0], configs=rounds, convention=vgg.CAFFE)


def test_batch_size_groups_equal_one_batch(vgg19_params):
    content = random_image(40, 48, 1)
    styles = [random_image(40, 48, s) for s in (2, 3, 4)]
    cfg = StyleConfig(**SMALL, optimizer="adam", iterations=4)
    a = stylize_many(content, styles, vgg19_params, cfg, convention=vgg.CAFFE, batch_size=3)
    b = stylize_many(content, styles, vgg19_params, cfg, convention=vgg.CAFFE, batch_size=2)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)


SHARDED = textwrap.dedent(
    """
    import os, sys, json
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    from conftest import random_image
    from nst_jax import StyleConfig, stylize_many
    from nst_jax.network import vgg
    from nst_jax.weights import synthetic_params
    assert jax.device_count() == 4, jax.devices()
    params = synthetic_params("vgg19", 0)
    cfg = StyleConfig(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), size=64,
                      optimizer="adam", learning_rate=0.02, iterations=3)
    content = random_image(32, 40, 1)
    styles = [random_image(32, 40, 10 + i) for i in range(6)]
    seen = []

    def spread(p):  # the loop state between chunks: the batch axis split over the 4 devices
        v = p.state.v
        seen.append((len(v.sharding.device_set), sorted(tuple(s.data.shape) for s in v.addressable_shards),
                     len({{s.device for s in v.addressable_shards}})))

    sharded = stylize_many(content, styles, params, cfg, seeds=list(range(6)), convention=vgg.CAFFE, callback=spread)
    # the CPU batch cap (4) runs 6 styles as batches of 4 and 2 (padded to 4): one result per device
    assert len(seen) >= 2 and all(x == (4, [(1, 32, 40, 3)] * 4, 4) for x in seen), seen
    plain = stylize_many(content, styles, params, cfg, seeds=list(range(6)), convention=vgg.CAFFE,
                         devices=jax.devices()[:1])
    np.testing.assert_allclose(sharded.losses, plain.losses, rtol=1e-5)
    np.testing.assert_allclose(sharded.images, plain.images, atol=1e-5)
    print("OK", sharded.images.shape)
    """
)


def test_four_cpu_devices_shard_a_batch_of_six():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    code = SHARDED.format(tests=os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK (6, 32, 40, 3)" in proc.stdout


def test_default_batch_size_caps_at_cpu_max_and_memory(monkeypatch):
    import jax

    from nst_jax.engine import memory
    from nst_jax import preset

    cfg = preset("default")
    monkeypatch.setattr(memory, "free_device_memory", lambda device=None: 1 << 40)  # plenty
    expected = CPU_MAX_BATCH if jax.default_backend() == "cpu" else 8
    assert default_batch_size(256, 256, cfg, 8) == expected
    assert default_batch_size(256, 256, cfg, 2) == 2
    per = estimate_bytes_per_result(256, 256, cfg)
    monkeypatch.setattr(memory, "free_device_memory", lambda device=None: int(2.5 * per / 0.7))
    assert default_batch_size(256, 256, cfg, 8) == 2  # what fits in 70 % of free memory
    monkeypatch.setattr(memory, "free_device_memory", lambda device=None: 1)
    assert default_batch_size(256, 256, cfg, 8) == 1


@pytest.mark.parametrize("optimizer, precision, remat", [
    ("lbfgs", "default", False),  # (Adam's state is L-BFGS's minus the history: measured once)
    ("adam", "bf16", False),
    ("adam", "default", True),
])
def test_memory_estimate_against_xlas_compiled_peak(optimizer, precision, remat, vgg19_params):
    """The per-result estimate against the buffers XLA assigns the real compiled chunk of the
    default preset (``memory_analysis``: temporaries + arguments + outputs − donated aliases), at
    two sizes. Per pixel the estimate is an upper bound within 1.5× of the measured slope; what
    does not grow with the image (the weights, their transposed copies for the backward pass) is
    within ``RUN_OVERHEAD_BYTES``."""
    import jax.numpy as jnp

    from nst_jax.engine import driver, loop
    from nst_jax.network import backbones as network
    from nst_jax import preset
    from nst_jax.engine.memory import RUN_OVERHEAD_BYTES
    from nst_jax.objective.targets import compute_targets

    cfg = preset("default").replace(optimizer=optimizer, conv_algorithm="direct", precision=precision, remat=remat)
    program, values = cfg.program(), cfg.values()
    p, spec = network.net_spec(vgg19_params, vgg.CAFFE)
    peak = {}
    for side in (64, 128):
        content = jnp.asarray(random_image(side, side, 1))
        targets = compute_targets(network.direct_params(p, spec), spec, content, content, program)
        state = loop.init_state(loop.from_rgb(content, program, spec), program, values)
        run_p = network.engine_params(p, program, spec, content.shape)
        batch = driver.stack([(targets, values, state)])  # a batch of one: the one-image program
        m = loop.run_chunk.lower(run_p, *batch, jnp.asarray([1], jnp.int32), program=program,
                                   spec=spec, length=program.chunk_size).compile().memory_analysis()
        peak[side] = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
                      - m.alias_size_in_bytes)
    pixels = {side: side * side for side in peak}
    measured_slope = (peak[128] - peak[64]) / (pixels[128] - pixels[64])
    estimated_slope = (estimate_bytes_per_result(128, 128, cfg) - estimate_bytes_per_result(64, 64, cfg)) / (
        pixels[128] - pixels[64])
    assert 1.0 <= estimated_slope / measured_slope <= 1.5, (estimated_slope, measured_slope)
    constant = peak[64] - measured_slope * pixels[64]
    assert 0 < constant <= RUN_OVERHEAD_BYTES, constant
