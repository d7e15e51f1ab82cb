"""Tests of nst_jax.network.resnet and the ResNet50 paths of nst_jax.weights.

The reference is written here with ``torch.nn.functional`` (conv2d, batch_norm in eval mode,
relu, max_pool2d) in float64, from a state dict with torchvision's key layout and loops over
torchvision's block counts [3, 4, 6, 3]; it does not use ``resnet.conv_specs``. Weights are
random, batch-norm statistics included (non-trivial mean, variance, gamma and beta). Keras files
are built with h5py in both naming generations; torchvision files with the real ``torch.save``.
"""

from __future__ import annotations

import collections
import functools
import shutil

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nst_jax.network import resnet, vgg
from nst_jax import weights
from nst_jax.errors import WeightsError

BLOCKS = (3, 4, 6, 3)  # torchvision's layer1..layer4
WIDTHS = (64, 128, 256, 512)  # bottleneck widths; outputs are 4x
BLOG_LAYERS = ["res3a_branch2a", "res4a_branch2a", "res5a_branch2a", "res5b_branch2a"]
BLOCK_LAYERS = ["res2a", "res2c", "res3a", "res3d", "res4a", "res4f", "res5a", "res5c"]
# Post-BN activations only: with these requested, every convolution runs folded.
POST_BN_LAYERS = ["bn_conv1", "conv1_relu", "pool1", "bn2a_branch1", "res2b_branch2b_relu", "bn3a_branch2c",
                  "res4c_branch2a_relu", "bn5a_branch1", *BLOCK_LAYERS]  # fmt: skip
H, W = 48, 40  # non-square: catches H/W mix-ups; 48x40 -> res5 at 2x2


# ---------------------------------------------------------------------------------------------
# Random torchvision-layout weights and the torch.nn.functional reference
# ---------------------------------------------------------------------------------------------


def torch_convs():
    """(conv prefix, bn prefix, position) in network order; position None for the stem, else
    (stage 2..5, block index, j) with j = 1, 2, 3 for conv1..conv3 and 0 for the downsample."""
    yield "conv1", "bn1", None
    for li, n in enumerate(BLOCKS, start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            for j in (1, 2, 3):
                yield f"{p}.conv{j}", f"{p}.bn{j}", (li + 1, b, j)
            if b == 0:
                yield f"{p}.downsample.0", f"{p}.downsample.1", (li + 1, b, 0)


def old_keras_names(pos) -> tuple[str, str]:
    """(conv, bn) layer names of old Keras (resnet50.py) -- also our layer names."""
    if pos is None:
        return "conv1", "bn_conv1"
    stage, b, j = pos
    tag = f"{stage}{'abcdef'[b]}_branch{ {1: '2a', 2: '2b', 3: '2c', 0: '1'}[j] }"
    return f"res{tag}", f"bn{tag}"


def new_keras_names(pos) -> tuple[str, str]:
    """(conv, bn) layer names of new Keras (resnet.py)."""
    if pos is None:
        return "conv1_conv", "conv1_bn"
    stage, b, j = pos
    return f"conv{stage}_block{b + 1}_{j}_conv", f"conv{stage}_block{b + 1}_{j}_bn"


def conv_shape(pos) -> tuple[int, int, int, int]:
    """OIHW shape of a conv, from the position alone."""
    if pos is None:
        return (64, 3, 7, 7)
    stage, b, j = pos
    mid = WIDTHS[stage - 2]
    cin = (64 if stage == 2 else 2 * mid) if b == 0 else 4 * mid
    return {1: (mid, cin, 1, 1), 2: (mid, mid, 3, 3), 3: (4 * mid, mid, 1, 1), 0: (4 * mid, cin, 1, 1)}[j]


@functools.lru_cache(maxsize=None)
def random_state_dict(seed: int, conv_bias: bool) -> dict:
    """Real ResNet50 shapes, float32 numpy, torchvision keys (+ ``.bias`` on convs if asked)."""
    rng = np.random.default_rng(seed)
    sd = collections.OrderedDict()
    for conv, bn, pos in torch_convs():
        o, i, kh, kw = conv_shape(pos)
        sd[f"{conv}.weight"] = (rng.standard_normal((o, i, kh, kw), dtype=np.float32) * np.sqrt(2.0 / (i * kh * kw))).astype(np.float32)
        if conv_bias:
            sd[f"{conv}.bias"] = (0.1 * rng.standard_normal(o)).astype(np.float32)
        last = pos is not None and pos[2] == 3
        sd[f"{bn}.weight"] = rng.uniform(0.2, 0.5, o).astype(np.float32) if last else rng.uniform(0.5, 1.5, o).astype(np.float32)
        sd[f"{bn}.bias"] = (0.1 * rng.standard_normal(o)).astype(np.float32)
        sd[f"{bn}.running_mean"] = (0.3 * rng.standard_normal(o)).astype(np.float32)
        sd[f"{bn}.running_var"] = rng.uniform(0.3, 3.0, o).astype(np.float32)
    return sd


def torch_reference(sd, x_nhwc, *, eps: float, stride_on: str, pool_pad: int = 1) -> dict[str, np.ndarray]:
    """Every named activation (our names), NHWC float64, by torch.nn.functional on ``sd``."""

    def t(key):
        return torch.from_numpy(np.asarray(sd[key], np.float64))

    out = {}

    def conv_bn(h, pos, stride, pad, relu):
        conv, bn = next((c, b) for c, b, r in torch_convs() if r == pos)
        name, bn_name = old_keras_names(pos)
        bias = t(f"{conv}.bias") if f"{conv}.bias" in sd else None
        y = F.conv2d(h, t(f"{conv}.weight"), bias, stride=stride, padding=pad)
        out[name] = y
        z = F.batch_norm(y, t(f"{bn}.running_mean"), t(f"{bn}.running_var"), t(f"{bn}.weight"), t(f"{bn}.bias"),
                         training=False, eps=eps)  # fmt: skip
        out[bn_name] = z
        if relu:
            z = F.relu(z)
            out[f"{name}_relu"] = z
        return z

    x = torch.from_numpy(np.asarray(x_nhwc, np.float64)).permute(0, 3, 1, 2)
    h = conv_bn(x, None, 2, 3, True)
    h = F.max_pool2d(h, 3, 2, padding=pool_pad)
    out["pool1"] = h
    for li, n in enumerate(BLOCKS, start=1):
        stage = li + 1
        for b in range(n):
            stride = 2 if (b == 0 and stage > 2) else 1
            s1, s3 = (stride, 1) if stride_on == "1x1" else (1, stride)
            z = conv_bn(h, (stage, b, 1), s1, 0, True)
            z = conv_bn(z, (stage, b, 2), s3, 1, True)
            z = conv_bn(z, (stage, b, 3), 1, 0, False)
            shortcut = conv_bn(h, (stage, b, 0), stride, 0, False) if b == 0 else h
            h = F.relu(z + shortcut)
            out[f"res{stage}{'abcdef'[b]}"] = h
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


def our_params(sd, eps: float) -> dict:
    """The params pytree built by hand from a torchvision-layout state dict."""
    params = {}
    for conv, bn, pos in torch_convs():
        name = old_keras_names(pos)[0]
        w = sd[f"{conv}.weight"]
        scale, shift = resnet.bn_affine(sd[f"{bn}.weight"], sd[f"{bn}.bias"], sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], eps)
        params[name] = {
            "kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
            "bias": sd.get(f"{conv}.bias", np.zeros(w.shape[0], np.float32)),
            "bn_scale": scale,
            "bn_shift": shift,
        }
    return params


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def assert_matches(out: dict, ref: dict, rtol: float = 1e-4, *, batched: bool = True) -> None:
    for name, value in out.items():
        expected = ref[name] if batched else ref[name][0]
        assert np.max(np.abs(expected)) > 1e-3, name  # not a trivially zero activation
        err = rel_err(value, expected)
        assert err < rtol, f"{name}: relative error {err:.2e}"


def image(seed: int, convention: vgg.Convention, batch: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = rng.random((batch, H, W, 3)).astype(np.float32)
    return np.asarray(convention.to_network(jnp.asarray(rgb)))


@pytest.fixture
def bigdir(tmp_path):
    """tmp_path, emptied afterwards: the ResNet50 files are ~95 MB each."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The layer table
# ---------------------------------------------------------------------------------------------


def test_layer_table():
    specs = resnet.conv_specs()
    assert len(specs) == 53  # 1 + 16 * 3 + 4 projection shortcuts
    names = resnet.layer_names()
    assert len(names) == len(set(names)) == 53 * 2 + 17 + 1 + 16 + 16  # conv, bn; relus; pool1; blocks; ...
    assert names[:4] == ("conv1", "bn_conv1", "conv1_relu", "pool1")
    assert names[-1] == "res5c" and set(BLOG_LAYERS + BLOCK_LAYERS + POST_BN_LAYERS) <= set(names)
    # Same order and shapes as the independent enumeration above.
    assert [s.name for s in specs] == [old_keras_names(pos)[0] for _, _, pos in torch_convs()]
    assert [s.keras_conv for s in specs] == [new_keras_names(pos)[0] for _, _, pos in torch_convs()]
    assert [s.torch_conv for s in specs] == [c for c, _, _ in torch_convs()]
    for s, (_, _, pos) in zip(specs, torch_convs()):
        o, i, kh, kw = conv_shape(pos)
        assert s.kernel_shape == (kh, kw, i, o)
    shapes = resnet.param_shapes()
    total = sum(int(np.prod(shape)) for parts in shapes.values() for shape in parts.values())
    assert total == 23_534_592  # Keras' ResNet50(include_top=False) trainable parameters
    kernels = sum(int(np.prod(parts["kernel"])) for parts in shapes.values())
    channels = sum(parts["bias"][0] for parts in shapes.values())
    assert kernels + 2 * channels == 25_557_032 - 2048 * 1000 - 1000  # torchvision resnet50 without fc
    # Stride placement: Keras on branch2a, torchvision on branch2b; branch1 on both.
    by_name = {s.name: s for s in specs}
    assert (by_name["res3a_branch2a"].stride("1x1"), by_name["res3a_branch2b"].stride("1x1")) == (2, 1)
    assert (by_name["res3a_branch2a"].stride("3x3"), by_name["res3a_branch2b"].stride("3x3")) == (1, 2)
    assert by_name["res4a_branch1"].stride("1x1") == by_name["res4a_branch1"].stride("3x3") == 2
    assert by_name["res2a_branch2a"].stride("1x1") == by_name["res2a_branch1"].stride("3x3") == 1


# ---------------------------------------------------------------------------------------------
# Features against torch.nn.functional
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stride_on,eps,conv_bias,pool_pad,batched",
    [
        ("1x1", resnet.EPS_KERAS_NEW, True, 1, True),  # Keras / Caffe weights
        ("3x3", resnet.EPS_TORCHVISION, False, 1, False),  # torchvision
        ("1x1", resnet.EPS_KERAS_OLD, True, 0, True),  # Keras 2.0-2.2 resnet50.py (the blog's)
    ],
)
def test_features_match_torch(stride_on, eps, conv_bias, pool_pad, batched):
    sd = random_state_dict(1 if conv_bias else 2, conv_bias)
    params = our_params(sd, eps)
    x = image(3, vgg.CAFFE if stride_on == "1x1" else vgg.TORCHVISION, batch=2)
    ref = torch_reference(sd, x, eps=eps, stride_on=stride_on, pool_pad=pool_pad)
    arg = x if batched else x[0]
    kw = dict(stride_on=stride_on, pool1_pad=pool_pad)

    # The blog's layers are pre-BN conv outputs (as Keras defines res5b_branch2a): those convs
    # run unfolded, the others folded.
    out = resnet.features(params, arg, BLOG_LAYERS + BLOCK_LAYERS + ["conv1", "pool1"], **kw)
    assert_matches(out, ref, batched=batched)
    assert out["res5b_branch2a"].shape == ((2,) if batched else ()) + (2, 2, 512)

    # Every convolution folded, and every convolution unfolded (conv, then the BN affine map).
    folded = resnet.features(params, arg, POST_BN_LAYERS, fold_bn=True, **kw)
    unfolded = resnet.features(params, arg, POST_BN_LAYERS, fold_bn=False, **kw)
    assert_matches(folded, ref, batched=batched)
    assert_matches(unfolded, ref, batched=batched)
    for name in POST_BN_LAYERS:
        assert rel_err(folded[name], unfolded[name]) < 1e-5, name


def test_pool1_padding_shapes():
    # At 64 px conv1 gives 32x32; the 3x3 stride-2 pool then gives 16x16 padded (current Keras,
    # torchvision) and 15x15 unpadded (Keras 2.0-2.2): the same difference as 56 against 55 at 224 px.
    params = weights.synthetic_params("resnet50", 0)
    x = np.zeros((64, 64, 3), np.float32)
    assert resnet.features(params, x, ["pool1"], stride_on="1x1")["pool1"].shape == (16, 16, 64)
    assert resnet.features(params, x, ["pool1"], stride_on="1x1", pool1_pad=0)["pool1"].shape == (15, 15, 64)


def count_convs(fn, *args) -> int:
    return str(jax.make_jaxpr(fn)(*args)).count("conv_general_dilated")


def test_only_deepest_computed_jit_and_vmap():
    params = weights.synthetic_params("resnet50", 1)
    x = image(4, vgg.CAFFE, batch=3)

    def convs_for(layers):
        return count_convs(lambda v: resnet.features(params, v, layers, stride_on="1x1"), x)

    assert convs_for(["pool1"]) == 1
    assert convs_for(["conv1", "res2a_branch2b_relu"]) == 3
    assert convs_for(["res2a"]) == 5  # 2a, 2b, 2c and the shortcut
    assert convs_for(["res5c"]) == 53
    assert convs_for([]) == 0

    layers = ("res2a_branch2b", "res3a")
    eager = resnet.features(params, x, layers, stride_on="3x3")
    jitted = jax.jit(resnet.features, static_argnames=("layers", "stride_on"))(params, x, layers=layers, stride_on="3x3")
    mapped = jax.vmap(lambda v: resnet.features(params, v, layers, stride_on="3x3"))(x)
    for name in layers:
        assert rel_err(jitted[name], eager[name]) < 1e-5
        assert rel_err(mapped[name], eager[name]) < 1e-5
    # Gradients flow to the image (what style transfer needs).
    g = jax.grad(lambda v: jnp.sum(resnet.features(params, v, ["res3a"], stride_on="1x1")["res3a"] ** 2))(x[0])
    assert g.shape == x[0].shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_feature_errors():
    params = weights.synthetic_params("resnet50", 0)
    x = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"unknown resnet50 layer\(s\) 'res6a'.*valid: conv1, bn_conv1"):
        resnet.features(params, x, ["res5c", "res6a"], stride_on="1x1")
    with pytest.raises(ValueError, match="stride_on"):
        resnet.features(params, x, ["res2a"], stride_on="3x1")
    with pytest.raises(ValueError, match="pool1_pad"):
        resnet.features(params, x, ["res2a"], stride_on="1x1", pool1_pad=2)
    missing = {k: v for k, v in params.items() if k != "res4b_branch2b"}
    with pytest.raises(ValueError, match="missing: res4b_branch2b"):
        resnet.features(missing, x, ["res2a"], stride_on="1x1")
    folded_only = {**params, "conv1": {"kernel": params["conv1"]["kernel"], "bias": params["conv1"]["bias"]}}
    with pytest.raises(ValueError, match="conv1 lacks bn_scale, bn_shift"):
        resnet.features(folded_only, x, ["res2a"], stride_on="1x1")
    vgg_params = weights.synthetic_params("vgg16", 0)
    with pytest.raises(ValueError, match="do not match the resnet50 layer table"):
        resnet.features(vgg_params, x, ["res2a"], stride_on="1x1")


def test_synthetic_params():
    a, b = weights.synthetic_params("resnet50", 5), weights.synthetic_params("resnet50", 5)
    shapes = resnet.param_shapes()
    assert set(a) == set(shapes)
    for name, parts in shapes.items():
        for part, shape in parts.items():
            assert a[name][part].shape == shape and a[name][part].dtype == np.float32
            np.testing.assert_array_equal(a[name][part], b[name][part])
    assert not np.array_equal(a["conv1"]["kernel"], weights.synthetic_params("resnet50", 6)["conv1"]["kernel"])
    out = resnet.features(a, image(1, vgg.CAFFE)[0], ["res5c"], stride_on="1x1")["res5c"]
    assert bool(jnp.all(jnp.isfinite(out))) and 1e-2 < float(out.max()) < 1e3


# ---------------------------------------------------------------------------------------------
# Converters: Keras HDF5 (both generations) and torchvision state dicts
# ---------------------------------------------------------------------------------------------


def write_keras_resnet(path, sd, *, generation: str, full_model: bool = False, only=None) -> None:
    """A Keras legacy HDF5 ResNet50 (``model.save_weights`` / ``model.save``) built with h5py.

    old: layer names ``res2a_branch2a`` / ``bn2a_branch2a``, Keras 1 style weight names
    (``res2a_branch2a_W:0``, ``bn2a_branch2a_running_std:0``, which holds the variance), and the
    BN weights listed out of order so only their names say which is which. new: ``conv2_block1_1_conv``
    / ``conv2_block1_1_bn`` with ``.../kernel:0`` and ``.../moving_variance:0`` (nested groups).
    Non-weight layers and the classifier are there too, as in the real files.
    """
    naming = old_keras_names if generation == "old" else new_keras_names
    with h5py.File(path, "w") as f:
        root = f
        if full_model:
            f.attrs["keras_version"] = b"2.3.1"
            root = f.create_group("model_weights")
        names = ["input_1", "conv1_pad"]
        layers = {}
        for i, (conv, bn, pos) in enumerate(torch_convs()):
            if only is not None and i not in only:
                continue
            cname, bname = naming(pos)
            w = sd[f"{conv}.weight"].transpose(2, 3, 1, 0)
            if generation == "old":
                layers[cname] = [(f"{cname}_W:0", w), (f"{cname}_b:0", sd[f"{conv}.bias"])]
                layers[bname] = [(f"{bname}_beta:0", sd[f"{bn}.bias"]), (f"{bname}_gamma:0", sd[f"{bn}.weight"]),
                                 (f"{bname}_running_std:0", sd[f"{bn}.running_var"]),
                                 (f"{bname}_running_mean:0", sd[f"{bn}.running_mean"])]  # fmt: skip
            else:
                layers[cname] = [(f"{cname}/kernel:0", w), (f"{cname}/bias:0", sd[f"{conv}.bias"])]
                layers[bname] = [(f"{bname}/{k}:0", sd[f"{bn}.{t}"]) for k, t in
                                 (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))]  # fmt: skip
            names += [cname, bname, f"activation_{i + 1}"]
        top = "fc1000" if generation == "old" else "probs"
        rng = np.random.default_rng(0)
        layers[top] = [(f"{top}/kernel:0", rng.standard_normal((2048, 10), dtype=np.float32)), (f"{top}/bias:0", np.zeros(10, np.float32))]
        names += ["avg_pool", top]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            g = root.create_group(name)
            for wname, value in layers.get(name, []):
                g.create_dataset(wname, data=np.asarray(value, np.float32))
            wnames = [w.encode() for w, _ in layers.get(name, [])]
            g.attrs["weight_names"] = np.array(wnames, dtype="S") if wnames else np.array([], dtype="S1")


@pytest.mark.parametrize("generation,full_model", [("old", False), ("new", True)])
def test_keras_resnet_round_trip(bigdir, generation, full_model):
    sd = random_state_dict(1, True)
    src = bigdir / f"resnet50_{generation}.h5"
    write_keras_resnet(src, sd, generation=generation, full_model=full_model)
    net = weights.convert(src, bigdir / "converted.h5")
    eps = resnet.EPS_KERAS_OLD if generation == "old" else resnet.EPS_KERAS_NEW
    assert (net.arch, net.stride_on, net.bn_epsilon, net.convention) == ("resnet50", "1x1", eps, vgg.CAFFE)
    src.unlink()
    loaded = weights.load_weights(bigdir / "converted.h5")
    assert (loaded.arch, loaded.stride_on, loaded.bn_epsilon, loaded.convention) == ("resnet50", "1x1", eps, vgg.CAFFE)
    assert loaded.fingerprint == net.fingerprint and loaded.source_name == src.name
    for name, parts in our_params(sd, eps).items():  # the conversion only moves bytes (+ the BN fold)
        for part, expected in parts.items():
            np.testing.assert_array_equal(loaded.params[name][part], expected, err_msg=f"{name}.{part}")
    x = image(5, loaded.convention)
    ref = torch_reference(sd, x, eps=eps, stride_on=loaded.stride_on)
    out = resnet.features(loaded.params, x, BLOG_LAYERS + ["res2c", "res4f", "res5c"], stride_on=loaded.stride_on)
    assert_matches(out, ref)


def test_torchvision_resnet_round_trip(bigdir):
    sd = random_state_dict(2, False)
    tsd = collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in sd.items())
    for key in [k for k in sd if k.endswith("running_var")]:
        tsd[key.replace("running_var", "num_batches_tracked")] = torch.tensor(1000)
    tsd["fc.weight"], tsd["fc.bias"] = torch.zeros(10, 2048), torch.zeros(10)  # real key names, small shapes
    src = bigdir / "resnet50-random.pth"
    torch.save(tsd, src)
    net = weights.convert(src, bigdir / "converted.h5")
    assert (net.arch, net.stride_on, net.bn_epsilon, net.convention) == ("resnet50", "3x3", 1e-5, vgg.TORCHVISION)
    loaded = weights.load_weights(bigdir / "converted.h5")
    assert (loaded.stride_on, loaded.bn_epsilon, loaded.convention) == ("3x3", 1e-5, vgg.TORCHVISION)
    expected = our_params(sd, resnet.EPS_TORCHVISION)
    for name, parts in expected.items():
        for part, value in parts.items():
            np.testing.assert_array_equal(loaded.params[name][part], value, err_msg=f"{name}.{part}")
    x = image(6, loaded.convention)
    ref = torch_reference(sd, x, eps=1e-5, stride_on="3x3")
    out = resnet.features(loaded.params, x, BLOG_LAYERS + ["res3d", "res5c"], stride_on=loaded.stride_on)
    assert_matches(out, ref)
    # The wrong stride placement gives other features (the attribute matters).
    wrong = resnet.features(loaded.params, x, ["res3a"], stride_on="1x1")["res3a"]
    assert rel_err(wrong, ref["res3a"]) > 1e-2

    text = weights.describe(loaded.path)
    assert "resnet50 (53 conv layers), stride on the 3x3 conv, batch norm folded (eps 1e-05)" in text
    assert "torchvision" in text and "res5c_branch2c" in text and "23,534,592" in text

    # Re-converting the nst-jax file keeps stride placement, eps and provenance.
    again = weights.convert(loaded.path, bigdir / "again.h5")
    assert (again.stride_on, again.bn_epsilon, again.source_name) == ("3x3", 1e-5, src.name)
    (bigdir / "again.h5").unlink()
    src.unlink()

    # Damage the converted file: the loader names what is wrong.
    bad = bigdir / "converted.h5"
    with h5py.File(bad, "r+") as f:
        del f["res4c_branch2b/bn_scale"]
        f["res4c_branch2b/bn_scale"] = np.ones(100, np.float32)
    with pytest.raises(WeightsError, match=r"layer res4c_branch2b: bn_scale has shape \(100,\), expected \(256,\)"):
        weights.load_weights(bad)
    with h5py.File(bad, "r+") as f:  # (parts are checked in order as they are read: restore bn_scale first)
        del f["res4c_branch2b/bn_scale"]
        f["res4c_branch2b/bn_scale"] = np.ones(256, np.float32)
        del f["res4c_branch2b/bn_shift"]
    with pytest.raises(WeightsError, match="layer res4c_branch2b: bn_shift is missing"):
        weights.load_weights(bad)
    with h5py.File(bad, "r+") as f:
        f.attrs["resnet_stride_on"] = "2x2"
    with pytest.raises(WeightsError, match="resnet_stride_on is '2x2'"):
        weights.load_weights(bad)


def test_converter_errors(tmp_path):
    sd = random_state_dict(1, True)

    # Keras: a layer missing (only the stem written), a deeper ResNet, a broken batch norm.
    partial = tmp_path / "partial.h5"
    write_keras_resnet(partial, sd, generation="old", only={0})
    with pytest.raises(WeightsError, match=r"layer res2a_branch2a \(Keras res2a_branch2a\) is missing"):
        weights.convert(partial, tmp_path / "o.h5")
    write_keras_resnet(partial, sd, generation="new", only={0})
    with h5py.File(partial, "r+") as f:
        names = list(f.attrs["layer_names"]) + [b"conv4_block7_1_conv"]
        f.attrs["layer_names"] = np.array(names)
        f.create_group("conv4_block7_1_conv").attrs["weight_names"] = np.array([], dtype="S1")
    with pytest.raises(WeightsError, match="conv4_block7_1_conv is not part of ResNet50"):
        weights.convert(partial, tmp_path / "o.h5")
    write_keras_resnet(partial, sd, generation="new", only={0})
    with h5py.File(partial, "r+") as f:
        f["conv1_bn"].attrs["weight_names"] = np.array([b"conv1_bn/gamma:0", b"conv1_bn/beta:0"])
    with pytest.raises(WeightsError, match=r"layer conv1: Keras batch norm conv1_bn has weights of shapes \(64,\), \(64,\)"):
        weights.convert(partial, tmp_path / "o.h5")

    # torch: wrong shape, a basic-block ResNet (resnet34 has the same block counts), ResNet101.
    small = {f"layer{li}.{b}.conv3.weight": torch.zeros(1) for li, n in enumerate(BLOCKS, 1) for b in range(n)}
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), **small}, bad)
    with pytest.raises(WeightsError, match=r"layer conv1: conv1.weight has shape \(64, 3, 3, 3\), expected \(64, 3, 7, 7\) \(OIHW\)"):
        weights.convert(bad, tmp_path / "o.h5")
    basic = {f"layer{li}.{b}.conv{j}.weight": torch.zeros(1) for li, n in enumerate(BLOCKS, 1) for b in range(n) for j in (1, 2)}
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), **basic}, bad)
    with pytest.raises(WeightsError, match=r"3, 4, 6, 3 basic \(two-conv\) blocks per stage, not ResNet50"):
        weights.convert(bad, tmp_path / "o.h5")
    deep = {f"layer{li}.{b}.conv3.weight": torch.zeros(1) for li, n in enumerate((3, 4, 23, 3), 1) for b in range(n)}
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), **deep}, bad)
    with pytest.raises(WeightsError, match="3, 4, 23, 3 bottleneck blocks"):
        weights.convert(bad, tmp_path / "o.h5")
    assert not (tmp_path / "o.h5").exists()


def test_weights_api_for_resnet50(tmp_path, monkeypatch):
    params = weights.synthetic_params("resnet50", 0)
    with pytest.raises(WeightsError, match="resnet50 weights need stride_on"):
        weights.save_weights(tmp_path / "r.h5", params, arch="resnet50", convention=vgg.CAFFE, pretrained=False)
    with pytest.raises(WeightsError, match="stride_on / bn_epsilon are resnet50 attributes"):
        weights.save_weights(tmp_path / "v.h5", weights.synthetic_params("vgg16", 0), arch="vgg16",
                             convention=vgg.CAFFE, pretrained=False, stride_on="1x1")  # fmt: skip
    broken = {**params, "res2a_branch1": {**params["res2a_branch1"], "bn_shift": np.zeros(3, np.float32)}}
    with pytest.raises(WeightsError, match=r"layer res2a_branch1: bn_shift has shape \(3,\), expected \(256,\)"):
        weights.save_weights(tmp_path / "r.h5", broken, arch="resnet50", convention=vgg.CAFFE, pretrained=False, stride_on="1x1")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WeightsError, match="no official keras download for resnet50"):
        weights.download("keras", "resnet50", dest_dir=tmp_path)
    monkeypatch.setenv("NST_JAX_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match=r"no resnet50 weights at .*nst-jax weights convert FILE -o"):
        weights.resolve_weights("resnet50")
