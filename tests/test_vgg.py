"""Tests for ``nst_jax.network.vgg``: the feature function against an independent PyTorch reference.

The reference below does not use nst_jax's layer table: it walks torchvision's ``cfgs`` lists
(hard-coded here) the way ``torchvision.models.vgg.make_layers`` does, names the activations
itself and preprocesses with hard-coded ImageNet numbers. Weights are random (He init), built
with numpy; both sides get the very same float32 values.

Numerical criterion (``assert_close``): for every compared array,
``||jax - torch||_F <= 1e-4 * ||torch||_F`` (norm-relative error) **and** elementwise
``|jax - torch| <= 1e-4 * |torch| + 1e-4 * max|torch|`` (allclose with rtol 1e-4 and an atol
scaled to the layer's magnitude, so that near-zero entries of a layer whose values are O(100)
are judged against the layer's scale, not against zero).
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nst_jax.network import vgg

RTOL = 1e-4
HIGHEST = jax.lax.Precision.HIGHEST  # a no-op on CPU; keeps the tests valid where TF32 exists

# torchvision.models.vgg.cfgs["E"] (VGG19) and ["D"] (VGG16), written out independently.
TORCH_CFGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}  # fmt: skip

# ImageNet numbers, hard-coded so the test also checks vgg.CAFFE / vgg.TORCHVISION.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TV_MEAN_RGB = (0.485, 0.456, 0.406)
TV_STD_RGB = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- reference helpers


def torch_layout(arch: str) -> list[tuple[str, str, int]]:
    """Walk a torchvision cfg: (our name, kind, ``features.N`` index) for every module.

    kind is "conv", "relu" or "pool". Names: block b counts pools seen + 1, n counts convs
    within the block.
    """
    layout: list[tuple[str, str, int]] = []
    index, block, n = 0, 1, 0
    for v in TORCH_CFGS[arch]:
        if v == "M":
            layout.append((f"pool{block}", "pool", index))
            index += 1
            block, n = block + 1, 0
        else:
            n += 1
            layout.append((f"conv{block}_{n}", "conv", index))
            layout.append((f"relu{block}_{n}", "relu", index + 1))
            index += 2
    return layout


def random_params(arch: str, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """He-initialised float32 params {"convB_N": {"kernel": HWIO, "bias": (C,)}} from the cfg."""
    rng = np.random.default_rng(seed)
    params: dict[str, dict[str, np.ndarray]] = {}
    cin = 3
    conv_names = [name for name, kind, _ in torch_layout(arch) if kind == "conv"]
    widths = [v for v in TORCH_CFGS[arch] if v != "M"]
    for name, cout in zip(conv_names, widths):
        std = np.sqrt(2.0 / (9 * cin))
        params[name] = {
            "kernel": (rng.standard_normal((3, 3, cin, cout)) * std).astype(np.float32),
            "bias": (rng.standard_normal(cout) * 0.1).astype(np.float32),
        }
        cin = cout
    return params


def torch_preprocess(rgb_nchw: torch.Tensor, convention: str) -> torch.Tensor:
    """RGB in [0, 1], NCHW -> network input, from the hard-coded ImageNet numbers."""
    if convention == "caffe":
        bgr = rgb_nchw[:, [2, 1, 0]] * 255.0
        return bgr - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    mean = torch.tensor(TV_MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(TV_STD_RGB).view(1, 3, 1, 1)
    return (rgb_nchw - mean) / std


def torch_features(
    arch: str,
    params: dict[str, dict[str, np.ndarray]],
    x_nchw: torch.Tensor,
    pooling: str,
) -> dict[str, torch.Tensor]:
    """Every named activation of the reference network (NCHW), computed with torch.nn.functional."""
    out: dict[str, torch.Tensor] = {}
    h = x_nchw
    for name, kind, _ in torch_layout(arch):
        if kind == "conv":
            w = torch.from_numpy(np.ascontiguousarray(params[name]["kernel"].transpose(3, 2, 0, 1)))
            h = F.conv2d(h, w, torch.from_numpy(params[name]["bias"]), padding=1)
        elif kind == "relu":
            h = F.relu(h)
        else:
            h = F.max_pool2d(h, 2, 2) if pooling == "max" else F.avg_pool2d(h, 2, 2)
        out[name] = h
    return out


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    """NCHW torch tensor -> NHWC numpy array."""
    return t.detach().permute(0, 2, 3, 1).numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Norm-relative error <= RTOL and allclose(rtol=RTOL, atol=RTOL * max|expected|)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    ref_norm = np.linalg.norm(expected)
    err = np.linalg.norm(actual - expected)
    assert err <= RTOL * ref_norm, f"{what}: relative error {err / ref_norm:.3g} > {RTOL}"
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def random_image(shape: Sequence[int], seed: int = 1) -> np.ndarray:
    """A float32 RGB image (or batch) in [0, 1]."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.fixture(scope="module")
def params19() -> dict[str, dict[str, np.ndarray]]:
    return random_params("vgg19", seed=0)


@pytest.fixture(scope="module")
def params16() -> dict[str, dict[str, np.ndarray]]:
    return random_params("vgg16", seed=1)


def count_primitive(jaxpr: jax.extend.core.Jaxpr, name: str) -> int:
    """Number of equations named ``name`` in a jaxpr, sub-jaxprs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            total += 1
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += count_primitive(sub, name)
    return total


# --------------------------------------------------------------------------- the layer table


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_layer_table_matches_torchvision_layout(arch: str) -> None:
    """Names in order, torchvision indices and channel counts agree with the reference walk."""
    layout = torch_layout(arch)
    assert vgg.layer_names(arch) == tuple(name for name, _, _ in layout)
    ref_convs = [(name, idx) for name, kind, idx in layout if kind == "conv"]
    specs = vgg.conv_specs(arch)
    assert [(s.name, s.torch_index) for s in specs] == ref_convs
    widths = [v for v in TORCH_CFGS[arch] if v != "M"]
    assert [s.out_channels for s in specs] == widths
    assert [s.in_channels for s in specs] == [3] + widths[:-1]
    assert vgg.arch_of(random_params(arch)) == arch


def test_convention_constants() -> None:
    """The conventions hold the ImageNet numbers and round-trip."""
    assert vgg.CAFFE.channel_order == "BGR" and vgg.CAFFE.scale == 255.0
    assert vgg.CAFFE.mean == CAFFE_MEAN_BGR and vgg.CAFFE.std == (1.0, 1.0, 1.0)
    assert vgg.TORCHVISION.channel_order == "RGB" and vgg.TORCHVISION.scale == 1.0
    assert vgg.TORCHVISION.mean == TV_MEAN_RGB and vgg.TORCHVISION.std == TV_STD_RGB
    img = random_image((5, 7, 3))
    for conv in (vgg.CAFFE, vgg.TORCHVISION, vgg.CAFFE.with_scale(256)):
        np.testing.assert_allclose(conv.from_network(conv.to_network(img)), img, atol=1e-5)


# --------------------------------------------------------------------------- forward vs torch


@pytest.mark.parametrize("convention", ["caffe", "torchvision"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_every_layer_matches_torch(
    arch: str, pooling: str, convention: str, params19: dict, params16: dict
) -> None:
    """All conv/relu/pool activations equal torch's, for both archs, poolings and conventions.

    40x56 input: the last pooling sees 2x3 -> 1x1, so odd sizes (floor) are exercised too.
    """
    params = params19 if arch == "vgg19" else params16
    img = random_image((1, 40, 56, 3), seed=2)
    names = vgg.layer_names(arch)

    x = vgg.CONVENTIONS[convention].to_network(jnp.asarray(img))
    ours = vgg.features(params, x, names, pooling=pooling, precision=HIGHEST)
    with torch.no_grad():
        t_in = torch_preprocess(torch.from_numpy(img).permute(0, 3, 1, 2), convention)
        assert_close(x, to_nhwc(t_in), "preprocessed input")
        ref = torch_features(arch, params, t_in, pooling)

    assert list(ours) == list(names) and set(ref) == set(names)
    for name in names:
        assert_close(ours[name], to_nhwc(ref[name]), f"{arch}/{pooling}/{convention}/{name}")


# --------------------------------------------------------------------------- shapes and batching


def test_hwc_equals_nhwc_batch_of_one(params19: dict) -> None:
    layers = ["conv1_1", "relu3_2", "pool4"]
    img = jnp.asarray(random_image((32, 32, 3)))
    single = vgg.features(params19, img, layers)
    batched = vgg.features(params19, img[None], layers)
    for name in layers:
        assert single[name].ndim == 3 and batched[name].shape == (1,) + single[name].shape
        np.testing.assert_array_equal(single[name], batched[name][0])


def test_batch_of_two_equals_singles_and_vmap(params19: dict) -> None:
    layers = ("relu1_2", "conv4_1", "pool5")
    imgs = jnp.asarray(random_image((2, 32, 32, 3), seed=3))
    batched = vgg.features(params19, imgs, layers)
    singles = [vgg.features(params19, imgs[i], layers) for i in range(2)]
    mapped = jax.vmap(lambda im: vgg.features(params19, im, layers))(imgs)
    for name in layers:
        ref = batched[name]
        assert ref.shape[0] == 2
        for i in range(2):
            assert_close(singles[i][name], ref[i], f"single {i} {name}")
        assert mapped[name].shape == ref.shape
        assert_close(mapped[name], ref, f"vmap {name}")


# --------------------------------------------------------------------------- work done


@pytest.mark.parametrize(
    ("layers", "n_convs", "n_pools"),
    [(["relu2_1"], 3, 1), (["conv5_4"], 16, 4), (["pool1", "relu1_1"], 2, 1), (["pool5"], 16, 5)],
)
def test_only_layers_up_to_deepest_are_computed(
    params19: dict, layers: list[str], n_convs: int, n_pools: int
) -> None:
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    closed = jax.make_jaxpr(lambda p, im: vgg.features(p, im, layers))(params19, x)
    assert count_primitive(closed.jaxpr, "conv_general_dilated") == n_convs
    assert count_primitive(closed.jaxpr, "reduce_window_max") == n_pools
    out = vgg.features(params19, x, layers)
    assert set(out) == set(layers)


def test_empty_layer_list_computes_nothing(params19: dict) -> None:
    x = jnp.zeros((32, 32, 3), jnp.float32)
    closed = jax.make_jaxpr(lambda p, im: vgg.features(p, im, []))(params19, x)
    assert count_primitive(closed.jaxpr, "conv_general_dilated") == 0
    assert vgg.features(params19, x, []) == {}


# --------------------------------------------------------------------------- jit caching


def test_jit_does_not_retrace_on_same_shapes(params19: dict) -> None:
    """Closed-over layer list: same shapes -> one trace; a new shape traces once more."""
    traces: list[tuple[int, ...]] = []
    layers = ("relu1_1", "relu2_1")

    def feats(p: dict, im: jax.Array) -> dict[str, jax.Array]:
        traces.append(im.shape)
        return vgg.features(p, im, layers)

    jitted = jax.jit(feats)
    a = jnp.asarray(random_image((1, 32, 32, 3), seed=4))
    b = jnp.asarray(random_image((1, 32, 32, 3), seed=5))
    jitted(params19, a)["relu2_1"].block_until_ready()
    jitted(params19, b)["relu2_1"].block_until_ready()
    assert len(traces) == 1
    # Fresh numpy params (new objects, same shapes/dtypes) do not retrace either.
    jitted(random_params("vgg19", seed=9), a)["relu2_1"].block_until_ready()
    assert len(traces) == 1
    jitted(params19, jnp.asarray(random_image((1, 48, 32, 3))))
    assert len(traces) == 2


def test_jit_static_layers_max_traces(params19: dict) -> None:
    """Layer list as a static argument: an equal tuple hits the cache (chex.assert_max_traces)."""

    @jax.jit
    @chex.assert_max_traces(n=1)
    def first(p: dict, im: jax.Array) -> dict[str, jax.Array]:
        return vgg.features(p, im, ("relu2_1",), pooling="avg")

    im = jnp.asarray(random_image((1, 32, 32, 3)))
    first(params19, im)
    first(params19, im + 1.0)  # same shape: no new trace (would raise AssertionError)

    @chex.assert_max_traces(n=2)
    def feats(p: dict, im: jax.Array, layers: tuple[str, ...]) -> dict[str, jax.Array]:
        return vgg.features(p, im, layers)

    jitted = jax.jit(feats, static_argnames="layers")
    jitted(params19, im, layers=("relu1_1", "pool1"))
    jitted(params19, im * 0.5, layers=tuple(["relu1_1", "pool1"]))  # equal tuple: cached
    jitted(params19, jnp.zeros((1, 40, 32, 3)), layers=("relu1_1", "pool1"))  # new shape
    with pytest.raises(AssertionError):
        jitted(params19, jnp.zeros((1, 48, 32, 3)), layers=("relu1_1", "pool1"))  # third trace


# --------------------------------------------------------------------------- input gradient


def window_argmax(x: np.ndarray) -> np.ndarray:
    """Which element of each 2x2/2 pooling window (NHWC, odd edges floored) is the maximum."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    windows = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    return windows.reshape(n, h // 2, w // 2, c, 4).argmax(-1)


def branch_mismatches(
    ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], names: Sequence[str], pooling: str
) -> list[str]:
    """Where the two forward passes take different branches of the piecewise-linear network.

    A pre-ReLU value within float32 rounding of 0 (or a max-pooling near-tie) can fall on
    different sides in two correct implementations; the input gradients then legitimately
    differ by O(1) at a few pixels (a few % of random images at 32x48; we measured the same
    effect between torch float32 and float64). Gradients are only compared where this is empty.
    """
    out = []
    for prev, name in zip(names, names[1:]):
        if name.startswith("relu"):
            n = int(np.sum((np.asarray(ours[prev]) > 0) != (ref[prev] > 0)))
        elif name.startswith("pool") and pooling == "max":
            n = int(np.sum(window_argmax(np.asarray(ours[prev])) != window_argmax(ref[prev])))
        else:
            continue
        if n:
            out.append(f"{name}: {n}")
    return out


def _torch_input_grad(
    arch: str, params: dict, img: np.ndarray, layer: str, pooling: str, convention: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """d sum(layer) / d rgb image by torch autograd, and every activation (NHWC)."""
    rgb = torch.from_numpy(img).permute(0, 3, 1, 2).clone().requires_grad_(True)
    acts = torch_features(arch, params, torch_preprocess(rgb, convention), pooling)
    acts[layer].sum().backward()
    return to_nhwc(rgb.grad), {name: to_nhwc(a) for name, a in acts.items()}


def check_input_gradient(
    arch: str,
    params: dict,
    shape: tuple[int, ...],
    layer: str,
    pooling: str,
    convention: str,
    seeds: Sequence[int] = range(6, 16),
) -> None:
    """jax.grad of sum(layer) w.r.t. the RGB image (through preprocessing) equals torch's.

    Uses the first image (by seed) on which both forward passes take the same ReLU / max-pool
    branches everywhere (see ``branch_mismatches``); fails if none of ``seeds`` does.
    """
    conv = vgg.CONVENTIONS[convention]
    names = vgg.layer_names(arch)
    names = names[: names.index(layer) + 1]

    def loss(rgb: jax.Array) -> jax.Array:
        acts = vgg.features(params, conv.to_network(rgb), [layer], pooling=pooling,
                            precision=HIGHEST)  # fmt: skip
        return jnp.sum(acts[layer])

    grad_fn = jax.jit(jax.grad(loss))
    rejected = {}
    for seed in seeds:
        img = random_image(shape, seed=seed)
        ref, ref_acts = _torch_input_grad(arch, params, img, layer, pooling, convention)
        ours_acts = vgg.features(params, conv.to_network(jnp.asarray(img)), names,
                                 pooling=pooling, precision=HIGHEST)  # fmt: skip
        bad = branch_mismatches(ours_acts, ref_acts, names, pooling)
        if bad:
            rejected[seed] = bad
            continue
        assert np.linalg.norm(ref) > 0
        assert_close(grad_fn(jnp.asarray(img)), ref, f"grad {arch}/{layer}/{pooling}/{convention}")
        return
    pytest.fail(f"every image hit a ReLU/max-pool branch difference: {rejected}")


@pytest.mark.parametrize(
    ("layer", "pooling", "convention"),
    [("relu5_1", "max", "caffe"), ("conv5_4", "avg", "torchvision"), ("pool4", "max", "torchvision")],
)
def test_input_gradient_matches_torch(
    params19: dict, layer: str, pooling: str, convention: str
) -> None:
    check_input_gradient("vgg19", params19, (1, 32, 48, 3), layer, pooling, convention)


def test_input_gradient_vgg16_matches_torch(params16: dict) -> None:
    check_input_gradient("vgg16", params16, (1, 32, 32, 3), "relu5_3", "max", "caffe")


def test_branch_mismatches_detects_flips() -> None:
    """The guard itself: a sign flip before a ReLU and a changed pooling winner are reported."""
    names = ["conv1_1", "relu1_1", "pool1"]
    a = np.arange(1.0, 1.0 + 2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
    b = a.copy()
    assert branch_mismatches({"conv1_1": a, "relu1_1": a}, {"conv1_1": b, "relu1_1": b},
                             names, "max") == []  # fmt: skip
    b[0, 0, 0, 0] = -1.0  # crosses zero before relu1_1
    b[1, 0, 0, 1] = 1e3  # new max-pool winner fed to pool1
    found = branch_mismatches({"conv1_1": a, "relu1_1": a}, {"conv1_1": b, "relu1_1": b},
                              names, "max")  # fmt: skip
    assert found == ["relu1_1: 1", "pool1: 1"]
    assert branch_mismatches({"conv1_1": a, "relu1_1": a}, {"conv1_1": a, "relu1_1": b},
                             names, "avg") == []  # fmt: skip


# --------------------------------------------------------------------------- errors


def test_unknown_layer_raises_listing_valid_names(params19: dict, params16: dict) -> None:
    x = jnp.zeros((32, 32, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"'relu6_1'.*valid:.*conv1_1.*relu5_1.*pool5") as info:
        vgg.features(params19, x, ["relu1_1", "relu6_1"])
    assert "'relu1_1'" not in str(info.value).split("valid:")[0]
    # conv5_4 exists in VGG19 only.
    with pytest.raises(ValueError, match=r"'conv5_4'.*valid:.*conv5_3"):
        vgg.features(params16, x, ["conv5_4"])
    with pytest.raises(ValueError, match="valid"):
        vgg.features(params19, x, ["block1_conv1"])  # Keras names are not accepted


def test_unknown_pooling_and_bad_params_raise(params19: dict) -> None:
    x = jnp.zeros((32, 32, 3), jnp.float32)
    with pytest.raises(ValueError, match="pooling"):
        vgg.features(params19, x, ["relu1_1"], pooling="mean")
    partial = {k: v for k, v in params19.items() if k != "conv5_4"}
    with pytest.raises(ValueError, match="params do not match"):
        vgg.features(partial, x, ["relu1_1"])
    with pytest.raises(ValueError, match="architecture"):
        vgg.conv_specs("vgg11")


@pytest.mark.parametrize("custom_vjp", [False, True])
def test_remat_gives_the_same_features_and_gradients(params19: dict, custom_vjp: bool) -> None:
    """jax.checkpoint per block changes what is stored for the backward pass, not the values."""
    x = jnp.asarray(np.random.default_rng(3).uniform(-100, 100, (2, 32, 40, 3)).astype(np.float32))
    layers = ["relu1_1", "conv3_2", "pool3", "relu4_2"]

    f = lambda remat: jax.jit(jax.value_and_grad(  # noqa: E731
        lambda x_: sum(jnp.sum(jnp.tanh(v / 100.0)) for v in
                       vgg.features(params19, x_, layers, custom_vjp=custom_vjp, remat=remat).values())))
    v0, g0 = f(False)(x)
    v1, g1 = f(True)(x)
    np.testing.assert_allclose(float(v1), float(v0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(g0))))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x_: jnp.sum(
        vgg.features(params19, x_, ["relu4_2"], custom_vjp=custom_vjp, remat=True)["relu4_2"])))(x))
    assert "checkpoint" in jaxpr or "remat" in jaxpr
