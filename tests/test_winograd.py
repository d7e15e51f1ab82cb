"""Winograd F(4x4, 3x3) convolutions (``vgg.with_winograd``, ``conv_algorithm``).

References are independent of the Winograd code: ``torch.nn.functional.conv2d`` in float64 for
one convolution, and the torch VGG walk of ``test_vgg`` for whole networks. Winograd F(4x4, 3x3)
rounds differently from a direct convolution (its transforms multiply by up to 8 and 1/24), so
single convolutions are held to 2e-5 of the output's largest value (direct float32: ~1e-7), and
whole networks to the same 1e-4 criterion as the direct path (``test_vgg.assert_close``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_vgg import assert_close, random_params, torch_features, to_nhwc, torch_preprocess

from nst_jax.network import backbones as network, convolutions, vgg
from nst_jax.program.config import StyleConfig
from nst_jax.errors import ConfigError
from nst_jax.engine.single import stylize
from nst_jax.network.backbones import engine_params, uses_winograd


def _torch_conv64(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """NHWC x, HWIO k -> NHWC, float64, padding 1 (the reference)."""
    xt = torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2)
    kt = torch.from_numpy(k.astype(np.float64)).permute(3, 2, 0, 1)
    return F.conv2d(xt, kt, padding=1).permute(0, 2, 3, 1).numpy()


@pytest.fixture
def everywhere(monkeypatch):
    """Winograd for every convolution with >= 64 channels at any size (tests use tiny images)."""
    monkeypatch.setattr(convolutions, "WINOGRAD_MIN_CHANNELS", 64)
    monkeypatch.setattr(convolutions, "WINOGRAD_MAX_ELEMENTS", 1 << 40)
    monkeypatch.setattr(convolutions, "WINOGRAD_MAX_PIXELS_WIDE", 1 << 40)


@pytest.mark.parametrize(("n", "h", "w", "c", "k"), [(1, 8, 8, 3, 5), (2, 7, 9, 4, 6), (1, 13, 5, 16, 8), (1, 16, 16, 64, 32)])
def test_winograd_conv_matches_float64_conv(n, h, w, c, k):
    rng = np.random.default_rng(h * w + c)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    kern = rng.standard_normal((3, 3, c, k)).astype(np.float32)
    ref = _torch_conv64(x, kern)
    ours = np.asarray(convolutions.winograd_conv(jnp.asarray(x), convolutions.winograd_kernel(kern), None), np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def test_traced_kernel_transform_equals_host_transform():
    kern = np.random.default_rng(0).standard_normal((3, 3, 6, 7)).astype(np.float32)
    host = np.asarray(convolutions.winograd_kernel(kern))
    traced = np.asarray(jax.jit(convolutions.winograd_kernel)(jnp.asarray(kern)))
    assert host.shape == (36, 6, 7)
    np.testing.assert_allclose(traced, host, rtol=1e-6, atol=1e-6 * np.abs(host).max())


def test_with_winograd_adds_kernels_only_to_wide_layers(vgg19_params):
    out = vgg.with_winograd(vgg19_params)
    for name, p in out.items():
        wide = min(p["kernel"].shape[2:]) >= convolutions.WINOGRAD_MIN_CHANNELS
        assert ("winograd" in p) == wide, name
        if wide:
            cin, cout = p["kernel"].shape[2:]
            assert p["winograd"].shape == (36, cin, cout) and p["winograd_t"].shape == (36, cout, cin)
    assert vgg.arch_of(out) == "vgg19"
    assert "winograd" in out["conv3_1"] and "winograd" not in out["conv1_2"]


def test_winograd_wanted_rule():
    assert convolutions.winograd_wanted(64, 64, 256, 256)  # measured 1.7x faster
    assert convolutions.winograd_wanted(96, 96, 512, 512)  # measured 1.85x faster
    assert convolutions.winograd_wanted(32, 32, 128, 128)  # measured 1.5x faster
    assert not convolutions.winograd_wanted(256, 256, 64, 64)  # measured 3x slower
    assert not convolutions.winograd_wanted(128, 128, 128, 128)  # measured 1.25x slower
    assert not convolutions.winograd_wanted(128, 128, 128, 256)  # measured 1.33x slower
    assert not convolutions.winograd_wanted(256, 256, 512, 512)  # larger than measured
    assert not convolutions.winograd_wanted(8, 8, 64, 512)  # too few channels on one side


@pytest.mark.usefixtures("everywhere")
@pytest.mark.parametrize("convention", ["caffe", "torchvision"])
def test_features_with_winograd_match_torch(convention):
    params = random_params("vgg19", seed=3)
    rgb = np.random.default_rng(5).random((1, 32, 40, 3), dtype=np.float32)
    ref = torch_features("vgg19", params, torch_preprocess(torch.from_numpy(rgb).permute(0, 3, 1, 2), convention), "max")
    conv = vgg.CONVENTIONS[convention]
    # Through pool3: every Winograd shape class (64, 128 and 256 channels; the 512-channel layers run
    # the same code, and the engine test below covers them against the direct path). Compiling all
    # 16 Winograd convolutions took 45 s of the suite.
    order = vgg.layer_names("vgg19")
    names = [n for n in order[: order.index("pool3") + 1] if n.startswith(("conv", "pool"))]
    ours = vgg.features(vgg.with_winograd(params), conv.to_network(jnp.asarray(rgb)), names, custom_vjp=True)
    for name in names:
        assert_close(ours[name], to_nhwc(ref[name]), f"winograd {name}")


@pytest.mark.usefixtures("everywhere")
def test_input_gradient_with_winograd_equals_direct(vgg19_params):
    """The engine's gradient (w.r.t. the image) against the direct convolutions', which test_vgg
    checks against torch."""
    x = jnp.asarray(np.random.default_rng(1).uniform(-100, 100, (1, 16, 24, 3)).astype(np.float32))

    def f(p, x, custom):
        return jnp.sum(vgg.features(p, x, ["relu4_1"], custom_vjp=custom)["relu4_1"] ** 2)

    ref = jax.grad(f, argnums=1)(vgg19_params, x, False)
    ours = jax.jit(jax.grad(f, argnums=1), static_argnums=2)(vgg.with_winograd(vgg19_params), x, True)
    assert float(jnp.linalg.norm(ours - ref) / jnp.linalg.norm(ref)) < 1e-4


def test_kernel_gradient_through_the_transform_equals_direct():
    """Differentiating w.r.t. the kernel through ``winograd_kernel`` (traced) gives the direct
    convolution's kernel gradient: the transformed kernels carry the gradient, ``winograd_t`` none."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 9, 10, 8)).astype(np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, 8, 6)).astype(np.float32))

    def direct(k):
        return jnp.sum(jnp.sin(convolutions.conv3x3(x, k, None)))

    def wino(k):
        flipped = jnp.transpose(jnp.flip(k, (0, 1)), (0, 1, 3, 2))
        y = convolutions.winograd_custom_vjp(x, convolutions.winograd_kernel(k), convolutions.winograd_kernel(flipped), None)
        return jnp.sum(jnp.sin(y))

    ref, ours = jax.jit(jax.grad(direct))(k), jax.jit(jax.grad(wino))(k)
    assert float(jnp.linalg.norm(ours - ref) / jnp.linalg.norm(ref)) < 1e-5


def _cfg(**kw) -> StyleConfig:
    base = dict(shape=(32, 32), size=None, optimizer="adam", learning_rate=0.02, iterations=6, chunk_size=3)
    return StyleConfig(**{**base, **kw})


@pytest.mark.usefixtures("everywhere")
def test_engine_with_winograd_matches_direct(vgg19_params):
    content = np.random.default_rng(2).random((32, 32, 3), dtype=np.float32)
    style = np.random.default_rng(3).random((32, 32, 3), dtype=np.float32)
    direct = stylize(content, style, vgg19_params, _cfg(conv_algorithm="direct"), convention=vgg.CAFFE)
    wino = stylize(content, style, vgg19_params, _cfg(conv_algorithm="winograd"), convention=vgg.CAFFE)
    np.testing.assert_allclose(wino.losses, direct.losses, rtol=1e-4)
    # Adam's first steps are about lr * sign(gradient): a pixel whose gradient is within rounding of
    # zero may step either way (lr 0.02), so the images are held to 5e-3, not to the losses' 1e-4.
    diff = np.abs(np.asarray(wino.image) - np.asarray(direct.image))
    assert diff.max() < 5e-3 and diff.mean() < 1e-4


def test_prepared_params_follow_the_config(vgg19_params):
    """Params that already hold Winograd kernels run direct when the config says direct (bit for
    bit the plain run), and are not transformed again when it says winograd."""
    content = np.random.default_rng(2).random((32, 32, 3), dtype=np.float32)
    style = np.random.default_rng(3).random((32, 32, 3), dtype=np.float32)
    prepared = vgg.with_winograd(vgg19_params)
    a = stylize(content, style, vgg19_params, _cfg(iterations=3), convention=vgg.CAFFE)
    b = stylize(content, style, prepared, _cfg(iterations=3), convention=vgg.CAFFE)
    np.testing.assert_array_equal(a.losses, b.losses)
    again = engine_params(prepared, _cfg(conv_algorithm="winograd"), vgg.CAFFE)
    assert again["conv4_2"]["winograd"] is prepared["conv4_2"]["winograd"]
    assert "winograd" not in vgg.without_winograd(prepared)["conv4_2"]


def test_auto_picks_winograd_only_where_it_pays():
    cfg = _cfg(conv_algorithm="auto")
    big, small = (512, 512, 3), (64, 64, 3)
    assert uses_winograd(cfg, vgg.CAFFE, big) == (jax.default_backend() == "cpu")
    assert not uses_winograd(cfg, vgg.CAFFE, small)  # compilation would cost more than it saves
    assert not uses_winograd(cfg.replace(precision="bf16"), vgg.CAFFE, big)
    assert not uses_winograd(_cfg(), vgg.CAFFE, big)  # "direct", the seed presets' setting
    assert uses_winograd(_cfg(conv_algorithm="winograd"), vgg.CAFFE, small)
    with pytest.raises(ConfigError, match="float32"):
        _cfg(conv_algorithm="winograd", precision="bf16")
    with pytest.raises(ConfigError, match="conv_algorithm"):
        _cfg(conv_algorithm="fft")


def test_cli_conv_option_sets_the_config():
    from nst_jax import cli

    args = cli.build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", "--conv", "winograd"])
    cfg = cli.config_from_args(args).cfg
    assert cfg.conv_algorithm == "winograd"
    args = cli.build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", "--preset", "keras"])
    assert cli.config_from_args(args)[0].conv_algorithm == "direct"


def test_cli_compilation_cache_folder(monkeypatch, tmp_path):
    from nst_jax import cli

    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.setenv("NST_JAX_CACHE_DIR", "")
        assert cli.enable_compilation_cache() is None
        monkeypatch.setenv("NST_JAX_CACHE_DIR", str(tmp_path / "xla"))
        assert cli.enable_compilation_cache() == str(tmp_path / "xla")
        assert (tmp_path / "xla").is_dir() and jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        monkeypatch.setenv("NST_JAX_CACHE_DIR", str(blocker / "xla"))
        assert cli.enable_compilation_cache() is None  # unusable: no cache, no error
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_the_automatic_winograd_threshold():
    """README: `auto` uses Winograd on CPUs in float32 from 160x160 px on, for the layers where it
    was measured faster (>= 256 channels up to 128x128; 128-channel layers up to 2^20 elements)."""
    import jax

    from nst_jax import preset

    auto = preset("default")
    assert auto.conv_algorithm == "auto"
    cpu = jax.default_backend() == "cpu"
    assert uses_winograd(auto, vgg.CAFFE, (160, 160)) is cpu
    assert uses_winograd(auto, vgg.CAFFE, (200, 128)) is cpu  # 25,600 px: the threshold is in pixels
    assert uses_winograd(auto, vgg.CAFFE, (159, 160)) is False
    assert uses_winograd(auto.replace(precision="bf16"), vgg.CAFFE, (512, 512)) is False
    assert uses_winograd(auto.replace(conv_algorithm="direct"), vgg.CAFFE, (512, 512)) is False
    assert uses_winograd(auto.replace(conv_algorithm="winograd"), vgg.CAFFE, (32, 32)) is True
    assert uses_winograd(auto, network.NetSpec("resnet50", vgg.CAFFE), (512, 512)) is False
    # the per-layer rule
    assert convolutions.winograd_wanted(128, 128, 256, 256) and not convolutions.winograd_wanted(129, 128, 256, 256)
    assert convolutions.winograd_wanted(64, 64, 128, 256) and not convolutions.winograd_wanted(128, 128, 128, 128)
    assert not convolutions.winograd_wanted(32, 32, 64, 64)  # narrow layers never
