"""Tests of nst_jax.weights and nst_jax.cli.weights.

References are independent of the code under test: torchvision-layout files are written with the
real ``torch.save`` (torch is a test dependency), Keras files are built with h5py following the
Keras layouts, and every converted value is compared exactly (the conversion only moves bytes).
"""

from __future__ import annotations

import argparse
import collections
import functools
import hashlib
import http.server
import io
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import threading
import zipfile

import h5py
import numpy as np
import pytest

from nst_jax.network import vgg
from nst_jax import weights
from nst_jax.cli import weights as cli_weights
from nst_jax.errors import NSTError, WeightsError

REPO = pathlib.Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def synthetic(arch: str, seed: int) -> dict:
    """Cached synthetic params used as *input data* for the format tests (do not mutate)."""
    return weights.synthetic_params(arch, seed)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def assert_params_equal(params: dict, expected: dict) -> None:
    assert set(params) == set(expected)
    for name in expected:
        for part in ("kernel", "bias"):
            got = params[name][part]
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected[name][part], err_msg=f"{name}.{part}")


# ---------------------------------------------------------------------------------------------
# torchvision-layout files written by the real torch.save
# ---------------------------------------------------------------------------------------------


class Custom:
    """A class a malicious or careless .pth could contain."""

    def __init__(self) -> None:
        self.x = 1


def torchvision_state_dict(arch: str, seed: int, dtype=None):
    """A state dict with the key layout of torchvision.models.<arch>().

    features.* have the real shapes; classifier.* have the real key names but small shapes (they
    are ignored and the real ones are 400 MB). One kernel is a non-contiguous view and one bias
    sits at a storage offset, so the reader's stride/offset handling is exercised.
    Returns (state dict, expected params in HWIO as numpy float32).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict()
    expected = {}
    for i, spec in enumerate(vgg.conv_specs(arch)):
        cin, cout = spec.in_channels, spec.out_channels
        if i == 1:  # stored HWIO, seen as OIHW through a permute: non-contiguous strides
            w = (torch.randn(3, 3, cin, cout, generator=g) * 0.05).permute(3, 2, 0, 1)
        else:
            w = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        if i == 2:  # a slice: storage offset 7
            b = torch.randn(cout + 7, generator=g)[7:]
        else:
            b = torch.randn(cout, generator=g) * 0.1
        if dtype is not None:  # one dtype, or a tuple of dtypes used in turn
            dt = dtype[i % len(dtype)] if isinstance(dtype, tuple) else dtype
            w, b = w.to(dt), b.to(dt)
        sd[f"features.{spec.torch_index}.weight"] = w
        sd[f"features.{spec.torch_index}.bias"] = b
        expected[spec.name] = {
            "kernel": w.float().numpy().transpose(2, 3, 1, 0).copy(),
            "bias": b.float().numpy().copy(),
        }
    for idx, (o, i_) in zip((0, 3, 6), ((64, 128), (64, 64), (10, 64))):  # real: 4096x25088, ...
        sd[f"classifier.{idx}.weight"] = torch.randn(o, i_, generator=g)
        sd[f"classifier.{idx}.bias"] = torch.randn(o, generator=g)
    # What nn.Module.state_dict() attaches (pickled through OrderedDict's __dict__ state).
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("features", {"version": 1})])
    return sd, expected


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    """{(arch, "zip"|"legacy"): (path, expected params)}: VGG19 in both layouts, VGG16 legacy."""
    import torch

    d = tmp_path_factory.mktemp("pth")
    files = {}
    for arch, seed, layouts in (("vgg19", 1, ("zip", "legacy")), ("vgg16", 2, ("legacy",))):
        sd, expected = torchvision_state_dict(arch, seed)
        for layout in layouts:
            path = d / f"{arch}-{layout}.pth"
            torch.save(sd, path, _use_new_zipfile_serialization=layout == "zip")
            files[(arch, layout)] = (path, expected)
    return files


@pytest.mark.parametrize("arch,layout", [("vgg19", "zip"), ("vgg19", "legacy"), ("vgg16", "legacy")])
def test_torchvision_pth_converts_exactly(torch_files, tmp_path, arch, layout):
    src, expected = torch_files[(arch, layout)]
    with open(src, "rb") as f:
        head = f.read(4)
    assert (head == b"PK\x03\x04") == (layout == "zip")  # really the two torch formats
    net = weights.convert(src, tmp_path / "out.h5")
    assert net.arch == arch
    assert net.convention == vgg.TORCHVISION
    assert net.pretrained is True
    assert net.source_name == src.name
    assert net.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert net.fingerprint == hashlib.sha256((tmp_path / "out.h5").read_bytes()).hexdigest()
    assert_params_equal(net.params, expected)
    assert_params_equal(weights.load_weights(tmp_path / "out.h5").params, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_torchvision_pth_with_caffe_convention(torch_files, tmp_path):
    # neural-style-pt's vgg19-d01eb7cb.pth: torchvision keys, Caffe weights (legacy: CLI test).
    src, expected = torch_files[("vgg19", "zip")]
    net = weights.convert(src, tmp_path / "caffe.h5", input_convention="caffe")
    assert net.convention == vgg.CAFFE
    assert_params_equal(net.params, expected)


def test_torch_reader_does_not_import_torch(torch_files, tmp_path):
    src, _ = torch_files[("vgg19", "zip")]
    out = tmp_path / "o.h5"
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` would now fail
        "from nst_jax import weights\nfrom nst_jax.cli import weights as cli_weights\n"
        f"net = weights.convert({str(src)!r}, {str(out)!r})\n"
        "assert net.arch == 'vgg19'\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)
    assert out.is_file()


def test_torch_wrapped_state_dict_half_bfloat16_and_parameters(tmp_path):
    import torch

    sd, expected = torchvision_state_dict("vgg16", seed=3, dtype=(torch.float16, torch.bfloat16))
    # Parameters, a {"state_dict": ...} checkpoint and DataParallel's "module." prefix.
    wrapped = {
        "epoch": 3,
        "state_dict": collections.OrderedDict(
            (f"module.{k}", torch.nn.Parameter(v, requires_grad=False) if k.endswith("weight") else v)
            for k, v in sd.items()
        ),
    }
    src = tmp_path / "ckpt.pth"
    torch.save(wrapped, src)
    net = weights.convert(src, tmp_path / "out.h5")
    assert net.arch == "vgg16"
    assert_params_equal(net.params, expected)  # float16 / bfloat16 values are exact in float32


def _legacy_torch_bytes(payload: bytes) -> bytes:
    """A legacy-format torch file whose object pickle is ``payload``."""
    head = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True, "type_sizes": {}})
    )
    return head + payload + pickle.dumps([], protocol=2)


class _SystemPayload:
    """Unpickling this calls os.system(command): what a malicious .pth does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_restricted_unpickler_refuses_code(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"features.0.weight": _SystemPayload(f"touch {marker}")}, protocol=2)
    assert b"system" in payload
    src = tmp_path / "evil.pth"
    if layout == "zip":
        with zipfile.ZipFile(src, "w") as zf:
            zf.writestr("evil/data.pkl", payload)
            zf.writestr("evil/version", "3\n")
    else:
        src.write_bytes(_legacy_torch_bytes(payload))
    with pytest.raises(WeightsError) as err:
        weights.convert(src, tmp_path / "out.h5")
    msg = one_line(err)
    assert "refusing to unpickle" in msg and "system" in msg
    assert not marker.exists()
    assert not (tmp_path / "out.h5").exists()


def test_restricted_unpickler_refuses_objects_and_modules(tmp_path):
    import torch

    src = tmp_path / "custom.pth"
    torch.save({"features.0.weight": Custom()}, src)
    with pytest.raises(WeightsError) as err:
        weights.convert(src, tmp_path / "a.h5")
    assert "refusing to unpickle" in one_line(err) and "Custom" in str(err.value)

    whole = tmp_path / "module.pth"  # torch.save(model) instead of model.state_dict()
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), whole)
    with pytest.raises(WeightsError) as err:
        weights.convert(whole, tmp_path / "b.h5")
    assert "refusing to unpickle torch.nn" in one_line(err) and "state_dict" in str(err.value)

    plain = tmp_path / "plain.pkl"  # a harmless pickle that is not a torch file
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(WeightsError) as err:
        weights.convert(plain, tmp_path / "c.h5")
    assert "not a torch.save file" in one_line(err)
    assert not any(p.suffix == ".h5" for p in tmp_path.iterdir())


def test_torch_file_without_vgg_keys_and_batchnorm(tmp_path):
    import torch

    src = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, src)
    with pytest.raises(WeightsError) as err:
        weights.convert(src, tmp_path / "o.h5")
    assert "features.N.weight" in one_line(err) and "encoder.weight" in str(err.value)

    bn = tmp_path / "bn.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.1.running_mean": torch.zeros(64)}, bn)
    with pytest.raises(WeightsError) as err:
        weights.convert(bn, tmp_path / "o.h5")
    assert "batch-norm" in one_line(err)


def test_torch_wrong_shape_names_layer(tmp_path):
    import torch

    sd, _ = torchvision_state_dict("vgg16", seed=5)
    sd["features.12.weight"] = torch.zeros(256, 128, 3, 3)  # conv3_2 (VGG16 features.12)
    src = tmp_path / "bad.pth"
    torch.save(sd, src)
    with pytest.raises(WeightsError) as err:
        weights.convert(src, tmp_path / "o.h5")
    msg = one_line(err)
    assert "layer conv3_2" in msg and "(256, 128, 3, 3)" in msg and "(256, 256, 3, 3)" in msg
    assert not (tmp_path / "o.h5").exists()


# ---------------------------------------------------------------------------------------------
# Keras files built with h5py
# ---------------------------------------------------------------------------------------------


def keras_layer_names(arch: str, top: bool) -> list[str]:
    names = ["input_1"]
    for b, n_convs in enumerate(vgg.BLOCKS[arch], start=1):
        names += [f"block{b}_conv{n}" for n in range(1, n_convs + 1)] + [f"block{b}_pool"]
    if top:
        names += ["flatten", "fc1", "fc2", "predictions"]
    return names


def write_keras_legacy(path, params, arch, *, generation, top=False, full_model=False, bad_layer=None):
    """A Keras legacy HDF5 weights file (``model.save_weights('x.h5')`` / ``model.save``).

    generation "old": datasets ``block1_conv1_W_1:0`` / ``_b_1:0`` in the layer group (Keras 1/2
    era files such as the published notop files); "new": ``block1_conv1/kernel:0`` nested in a
    subgroup (tf.keras). ``full_model`` puts everything under ``model_weights`` as ``model.save``
    does.
    """
    ours = {s.keras_name: s.name for s in vgg.conv_specs(arch)}
    dense = {"fc1": (32, 16), "fc2": (16, 16), "predictions": (16, 10)}  # real ones are huge
    with h5py.File(path, "w") as f:
        if full_model:
            f.attrs["keras_version"] = b"2.2.4"
            f.attrs["model_config"] = b'{"class_name": "Model"}'
            root = f.create_group("model_weights")
            f.create_group("optimizer_weights")
        else:
            root = f
        names = keras_layer_names(arch, top)
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        root.attrs["backend"] = b"tensorflow"
        for name in names:
            g = root.create_group(name)
            arrays = []
            if name in ours:
                kernel = params[ours[name]]["kernel"]
                if name == bad_layer:
                    kernel = kernel[..., : kernel.shape[-1] // 2]
                arrays = [("kernel", "W", kernel), ("bias", "b", params[ours[name]]["bias"])]
            elif name in dense:
                rng = np.random.default_rng(0)
                arrays = [("kernel", "W", rng.standard_normal(dense[name], dtype=np.float32)),
                          ("bias", "b", np.zeros(dense[name][1], np.float32))]  # fmt: skip
            wnames = []
            for new, old, value in arrays:
                wname = f"{name}_{old}_1:0" if generation == "old" else f"{name}/{new}:0"
                g.create_dataset(wname, data=value)
                wnames.append(wname.encode())
            g.attrs["weight_names"] = np.array(wnames, dtype="S") if wnames else np.array([], dtype="S1")


@pytest.mark.parametrize(
    "arch,generation,top,full_model",
    [
        ("vgg19", "old", False, False),  # the published notop files
        ("vgg16", "new", False, False),
        ("vgg16", "old", True, False),
        ("vgg19", "new", True, True),  # model.save(): everything under model_weights
    ],
)
def test_keras_legacy_round_trip(tmp_path, arch, generation, top, full_model):
    params = synthetic(arch, 11)
    src = tmp_path / "keras_weights.bin"  # the extension is irrelevant: content decides
    write_keras_legacy(src, params, arch, generation=generation, top=top, full_model=full_model)
    net = weights.convert(src, tmp_path / "out.h5")
    assert net.arch == arch
    assert net.convention == vgg.CAFFE
    assert_params_equal(net.params, params)
    assert net.source_name == "keras_weights.bin"


def test_keras_wrong_shape_names_layer_and_wrong_arch(tmp_path):
    params = synthetic("vgg16", 13)
    src = tmp_path / "bad.h5"
    write_keras_legacy(src, params, "vgg16", generation="new", bad_layer="block3_conv2")
    with pytest.raises(WeightsError) as err:
        weights.convert(src, tmp_path / "out.h5")
    msg = one_line(err)
    assert msg.startswith("layer conv3_2: kernel has shape (3, 3, 256, 128), expected (3, 3, 256, 256)")
    good = tmp_path / "vgg16_notop.h5"
    write_keras_legacy(good, params, "vgg16", generation="old")
    with pytest.raises(WeightsError) as err:
        weights.convert(good, tmp_path / "other.h5", arch="vgg19")
    assert "holds vgg16 weights, not vgg19" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5", "vgg16_notop.h5"]


def write_keras3(path_or_file, params, arch, *, with_names=False):
    """A Keras 3 ``model.save_weights('x.weights.h5')`` file (saving_lib.H5IOStore layout).

    Layers of a Functional model are stored under ``layers/<snake_case class>[_N]/vars/<i>``
    (conv2d, conv2d_1, ...: class-name counters, not layer names); newer Keras adds the layer
    name as the ``name`` attribute of ``vars``. Also a model-level ``vars`` and an optimizer.
    """
    with h5py.File(path_or_file, "w") as f:
        f.create_group("vars")
        layers = f.create_group("layers")
        layers.create_group("input_layer")
        count = {"conv2d": 0, "max_pooling2d": 0}

        def entry(cls: str) -> h5py.Group:
            n = count[cls]
            count[cls] += 1
            return layers.create_group(cls if n == 0 else f"{cls}_{n}").create_group("vars")

        specs = vgg.conv_specs(arch)
        block = 1
        for spec in specs:
            b = int(spec.name[4])
            if b != block:
                entry("max_pooling2d")
                block = b
            g = entry("conv2d")
            g["0"] = params[spec.name]["kernel"]
            g["1"] = params[spec.name]["bias"]
            if with_names:
                g.attrs["name"] = spec.keras_name
        entry("max_pooling2d")
        opt = f.create_group("optimizer").create_group("vars")
        opt["0"] = np.int64(10)
        opt["1"] = np.zeros((3, 3, 3, 64), np.float32)  # a momentum slot: kernel-shaped
        opt["2"] = np.zeros((64,), np.float32)


@pytest.mark.parametrize("with_names", [False, True])
def test_keras3_weights_h5_round_trip(tmp_path, with_names):
    arch = "vgg16"  # 13 convs: conv2d ... conv2d_12, so the counter must sort numerically
    params = synthetic(arch, 14)
    src = tmp_path / "model.weights.h5"
    write_keras3(src, params, arch, with_names=with_names)
    net = weights.convert(src, tmp_path / "out.h5")
    assert net.arch == arch and net.convention == vgg.CAFFE
    assert_params_equal(net.params, params)


def test_keras3_dot_keras_archive(tmp_path):
    params = synthetic("vgg16", 15)
    buf = io.BytesIO()
    write_keras3(buf, params, "vgg16")
    src = tmp_path / "model.keras"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", buf.getvalue())
    net = weights.convert(src, tmp_path / "out.h5")
    assert net.arch == "vgg16"
    assert_params_equal(net.params, params)


# ---------------------------------------------------------------------------------------------
# Bad source files
# ---------------------------------------------------------------------------------------------


def _bad_sources(tmp_path: pathlib.Path, torch_files) -> dict:
    params = synthetic("vgg16", 16)
    good_h5 = tmp_path / "good.h5"
    write_keras_legacy(good_h5, params, "vgg16", generation="old")
    zip_src, _ = torch_files[("vgg19", "zip")]
    legacy_src, _ = torch_files[("vgg16", "legacy")]
    rng = np.random.default_rng(0)
    files = {
        "truncated_hdf5": good_h5.read_bytes()[: good_h5.stat().st_size // 2],
        "truncated_zip": zip_src.read_bytes()[: zip_src.stat().st_size // 2],
        "truncated_legacy": legacy_src.read_bytes()[: legacy_src.stat().st_size // 2],
        "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty": b"",
        "text": b"<html>404 Not Found</html>\n",
        "zip_other": None,
        "unknown_hdf5": None,
    }
    out = {}
    for name, data in files.items():
        p = tmp_path / f"{name}.src"
        if name == "zip_other":
            with zipfile.ZipFile(p, "w") as zf:
                zf.writestr("readme.txt", "hello")
        elif name == "unknown_hdf5":
            with h5py.File(p, "w") as f:
                f["foo"] = np.zeros(3)
        else:
            p.write_bytes(data)
        out[name] = p
    good_h5.unlink()
    return out


def test_bad_sources_give_one_line_errors(tmp_path, torch_files):
    srcdir = tmp_path / "src"
    srcdir.mkdir()
    outdir = tmp_path / "out"
    outdir.mkdir()
    expect = {
        "truncated_hdf5": "truncated",
        "truncated_zip": "truncated",
        "truncated_legacy": "truncated",
        "random": "understood formats",
        "empty": "empty",
        "text": "understood formats",
        "zip_other": "not a torch.save file",
        "unknown_hdf5": "unknown layout",
    }
    for name, src in _bad_sources(srcdir, torch_files).items():
        with pytest.raises(WeightsError) as err:
            weights.convert(src, outdir / f"{name}.h5")
        msg = one_line(err)
        assert expect[name] in msg, (name, msg)
        assert str(src) in msg, (name, msg)
        if expect[name] == "understood formats":
            for fmt in ("Keras HDF5", "Keras 3 .weights.h5", "torchvision .pth (zip or legacy)", "nst-jax converted .h5"):
                assert fmt in msg
    assert list(outdir.iterdir()) == []  # nothing left behind, not even a temp file


def test_convert_refuses_overwrite_and_missing(tmp_path):
    params = synthetic("vgg16", 17)
    src = tmp_path / "k.h5"
    write_keras_legacy(src, params, "vgg16", generation="new")
    out = tmp_path / "out.h5"
    out.write_bytes(b"keep me")
    with pytest.raises(WeightsError) as err:
        weights.convert(src, out)
    assert "already exists" in one_line(err) and "--overwrite" in str(err.value)
    assert out.read_bytes() == b"keep me"
    net = weights.convert(src, out, overwrite=True)
    assert_params_equal(net.params, params)
    with pytest.raises(WeightsError) as err:
        weights.convert(out, out, overwrite=True)
    assert "is the source" in one_line(err)
    with pytest.raises(WeightsError) as err:
        weights.convert(tmp_path / "nope.pth", tmp_path / "x.h5")
    assert "not found" in one_line(err)


def test_convert_default_destination_and_reconvert(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_JAX_WEIGHTS", str(tmp_path / "wdir"))
    params = synthetic("vgg16", 18)
    src = tmp_path / "k.h5"
    write_keras_legacy(src, params, "vgg16", generation="old")
    net = weights.convert(src)
    assert pathlib.Path(net.path) == tmp_path / "wdir" / "vgg16.h5"
    # Re-writing an nst-jax file with another convention keeps the provenance.
    again = weights.convert(net.path, tmp_path / "tv.h5", input_convention="torchvision")
    assert again.convention == vgg.TORCHVISION
    assert (again.source_name, again.source_sha256) == (net.source_name, net.source_sha256)
    assert again.pretrained is True
    assert_params_equal(again.params, params)


# ---------------------------------------------------------------------------------------------
# The converted format
# ---------------------------------------------------------------------------------------------


def test_synthetic_params_deterministic_and_he(tmp_path):
    sixteen = weights.synthetic_params("vgg16", seed=0)
    assert list(sixteen) == [s.name for s in vgg.conv_specs("vgg16")]
    assert_params_equal(weights.synthetic_params("vgg16", seed=0), sixteen)
    other = weights.synthetic_params("vgg16", seed=1)
    for name in sixteen:
        assert not np.array_equal(sixteen[name]["kernel"], other[name]["kernel"])
        assert not np.array_equal(sixteen[name]["bias"], other[name]["bias"])
    a = weights.synthetic_params("vgg19", seed=0)
    for spec in vgg.conv_specs("vgg19"):
        k, bias = a[spec.name]["kernel"], a[spec.name]["bias"]
        assert k.shape == (3, 3, spec.in_channels, spec.out_channels) and k.dtype == np.float32
        assert bias.shape == (spec.out_channels,) and bias.dtype == np.float32
        he = np.sqrt(2.0 / (9 * spec.in_channels))
        # conv1_1 has 1728 samples: relative std error ~1.7%; 6% is > 3 sigma.
        assert abs(k.std() / he - 1) < 0.06, spec.name
        assert abs(k.mean()) < 4 * he / np.sqrt(k.size), spec.name
        assert np.abs(bias).max() < 0.06


def test_write_synthetic_round_trip(tmp_path):
    path = tmp_path / "sub" / "syn.h5"
    net = weights.write_synthetic(path, arch="vgg16", seed=5, convention=vgg.TORCHVISION)
    assert net.pretrained is False and net.source_name == "" and net.arch == "vgg16"
    assert net.convention == vgg.TORCHVISION
    assert net.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_params_equal(net.params, weights.synthetic_params("vgg16", seed=5))
    loaded = weights.load_weights(path)
    assert loaded.fingerprint == net.fingerprint and loaded.path == str(path)
    # the fingerprint only depends on the content: writing the same weights again gives it back
    again = weights.write_synthetic(tmp_path / "again.h5", arch="vgg16", seed=5, convention=vgg.TORCHVISION)
    assert again.fingerprint == net.fingerprint
    with h5py.File(path, "r") as f:  # the documented on-disk format
        assert f.attrs["format"] == "nst-jax-weights" and int(f.attrs["format_version"]) == 1
        assert f.attrs["arch"] == "vgg16" and f.attrs["channel_order"] == "RGB"
        assert float(f.attrs["pixel_scale"]) == 1.0 and not bool(f.attrs["pretrained"])
        np.testing.assert_allclose(f.attrs["mean"], vgg.TORCHVISION.mean, rtol=0, atol=0)
        np.testing.assert_allclose(f.attrs["std"], vgg.TORCHVISION.std, rtol=0, atol=0)
        assert f["conv1_1/kernel"].dtype == np.float32 and f["conv1_1/kernel"].shape == (3, 3, 3, 64)


def test_save_weights_rejects_bad_params_and_leaves_nothing(tmp_path):
    params = weights.synthetic_params("vgg16", seed=0)
    bad = {k: dict(v) for k, v in params.items()}
    bad["conv4_1"]["bias"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError) as err:
        weights.save_weights(tmp_path / "a.h5", bad, arch="vgg16", convention=vgg.CAFFE, pretrained=False)
    assert one_line(err) == "layer conv4_1: bias has shape (3,), expected (512,)"
    nan = {k: dict(v) for k, v in params.items()}
    nan["conv2_1"]["kernel"] = nan["conv2_1"]["kernel"].copy()
    nan["conv2_1"]["kernel"][0, 0, 0, 0] = np.nan
    with pytest.raises(WeightsError) as err:
        weights.save_weights(tmp_path / "a.h5", nan, arch="vgg16", convention=vgg.CAFFE, pretrained=False)
    assert "conv2_1" in one_line(err) and "non-finite" in str(err.value)
    with pytest.raises(WeightsError) as err:
        weights.save_weights(tmp_path / "a.h5", params, arch="vgg19", convention=vgg.CAFFE, pretrained=False)
    assert "conv3_4 is missing" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_load_weights_errors(tmp_path):
    good = tmp_path / "good.h5"
    weights.write_synthetic(good, arch="vgg16", seed=0)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(good.read_bytes())

    def nonfinite(f):
        b = f["conv5_1/bias"][()]
        b[3] = np.inf
        f["conv5_1/bias"][...] = b

    def wrong_shape(f):
        del f["conv3_2/kernel"]
        f["conv3_2/kernel"] = np.zeros((3, 3, 256, 128), np.float32)

    def set_attr(key, value):
        return lambda f: f.attrs.__setitem__(key, value)

    # Damage one copy step by step; each step is found before the earlier ones (the loader
    # checks format, version, arch, then each layer's presence and declared shape in order as it
    # reads them, then the values).
    steps = [
        (nonfinite, "layer conv5_1: bias has non-finite values (NaN or Inf)"),
        (wrong_shape, "layer conv3_2: kernel has shape (3, 3, 256, 128), expected (3, 3, 256, 256)"),
        (lambda f: f.__delitem__("conv2_1"), "layer conv2_1 is missing"),
        (set_attr("arch", "resnet101"), "unknown architecture 'resnet101'"),
        (set_attr("format_version", 7), "newer nst-jax"),
        (set_attr("format", "something-else"), "not an nst-jax weights file"),
    ]
    for edit, expected in steps:
        with h5py.File(bad, "r+") as f:
            edit(f)
        with pytest.raises(WeightsError) as err:
            weights.load_weights(bad)
        msg = one_line(err)
        assert msg.startswith(expected) or expected in msg, (expected, msg)
        assert str(bad) in msg

    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(WeightsError) as err:
        weights.load_weights(truncated)
    assert "truncated or corrupt" in one_line(err)

    with pytest.raises(WeightsError) as err:
        weights.load_weights(tmp_path / "absent.h5")
    msg = one_line(err)
    for command in ("nst-jax weights download", "nst-jax weights convert FILE", "nst-jax weights synthetic -o PATH"):
        assert command in msg

    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsError) as err:
        weights.load_weights(junk)
    assert "not HDF5" in one_line(err)

    keras = tmp_path / "keras.h5"
    write_keras_legacy(keras, synthetic("vgg16", 16), "vgg16", generation="old")
    with pytest.raises(WeightsError) as err:
        weights.load_weights(keras)
    assert f"nst-jax weights convert {keras}" in one_line(err)


def test_describe(tmp_path):
    path = tmp_path / "s.h5"
    net = weights.write_synthetic(path, arch="vgg16", seed=2)
    text = weights.describe(path)
    assert "vgg16" in text and "caffe" in text and net.fingerprint in text
    assert "conv5_3    (3, 3, 512, 512)" in text
    assert "14,714,688" in text  # VGG16 conv parameters (VGG19: 20,024,384)
    assert "seed 2" in text and "no" in text


# ---------------------------------------------------------------------------------------------
# Where weights live
# ---------------------------------------------------------------------------------------------


def test_default_weights_dir_and_resolve(tmp_path, monkeypatch):
    monkeypatch.delenv("NST_JAX_WEIGHTS", raising=False)
    assert weights.default_weights_dir() == REPO / "weights"  # running from the checkout

    monkeypatch.setattr(weights.native, "__file__", str(tmp_path / "site-packages" / "nst_jax" / "weights" / "native.py"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert weights.default_weights_dir() == tmp_path / "cache" / "nst-jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.default_weights_dir() == tmp_path / "home" / ".cache" / "nst-jax"

    wdir = tmp_path / "w"
    monkeypatch.setenv("NST_JAX_WEIGHTS", str(wdir))
    assert weights.default_weights_dir() == wdir
    with pytest.raises(WeightsError) as err:
        weights.resolve_weights("vgg16")
    msg = one_line(err)
    assert "`nst-jax weights download --arch vgg16`" in msg and str(wdir / "vgg16.h5") in msg
    weights.write_synthetic(wdir / "vgg16.h5", arch="vgg16")
    assert weights.resolve_weights("vgg16") == wdir / "vgg16.h5"

    explicit = tmp_path / "mine.h5"
    with pytest.raises(WeightsError) as err:
        weights.resolve_weights("vgg19", explicit)
    assert "not found" in one_line(err) and "nst-jax weights download" in str(err.value)
    explicit.write_bytes(b"x")
    assert weights.resolve_weights("vgg19", str(explicit)) == explicit
    with pytest.raises(WeightsError):
        weights.resolve_weights("resnet50")


# ---------------------------------------------------------------------------------------------
# Download against a local HTTP server
# ---------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        body, declared = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)  # when declared > len(body): a truncated transfer
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(monkeypatch):
    """A local HTTP server in a thread; yields (base URL, routes dict)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    routes: dict = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_download_success_and_failures(tmp_path, torch_files, http_server):
    base, routes = http_server
    src, expected = torch_files[("vgg16", "legacy")]
    body = src.read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    name = f"vgg16-{sha[:8]}.pth"
    routes[f"/models/{name}"] = (body, len(body))
    routes["/truncated.pth"] = (body[:5000], len(body))
    dest = tmp_path / "dest"

    # success: the 8-hex-digit prefix is what torchvision publishes
    net = weights.download(
        "torchvision", "vgg16", dest_dir=dest, url=f"{base}/models/{name}", expected_hash=sha[:8], progress=False
    )
    assert sorted(p.name for p in dest.iterdir()) == ["vgg16.h5"]  # raw download deleted
    assert net.path == str(dest / "vgg16.h5")
    assert net.source_name == name and net.source_sha256 == sha
    assert net.convention == vgg.TORCHVISION and net.pretrained
    assert_params_equal(net.params, expected)
    with pytest.raises(WeightsError) as err:  # the file is there already
        weights.download("torchvision", "vgg16", dest_dir=dest, url=f"{base}/models/{name}", expected_hash=sha, progress=False)
    assert "already exists" in one_line(err)

    failures = {
        "checksum mismatch": dict(url=f"{base}/models/{name}", expected_hash="0" * 64),
        "truncated": dict(url=f"{base}/truncated.pth", expected_hash=sha),
        "HTTP 404": dict(url=f"{base}/missing.pth", expected_hash=sha),
        "wrong arch": None,
    }
    for what, kwargs in failures.items():
        fresh = tmp_path / what.replace(" ", "_")
        if kwargs is None:  # a valid VGG16 file where VGG19 was asked for
            kwargs, arch, what = dict(url=f"{base}/models/{name}", expected_hash=sha), "vgg19", "vgg16 weights, not vgg19"
        else:
            arch = "vgg16"
        with pytest.raises(WeightsError) as err:
            weights.download("torchvision", arch, dest_dir=fresh, progress=False, **kwargs)
        msg = one_line(err)
        assert what in msg, msg
        assert list(fresh.iterdir()) == [], what  # no temp file, no .h5


def test_download_keras_md5_and_unreachable(tmp_path, http_server):
    base, routes = http_server
    params = synthetic("vgg16", 21)
    src = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_legacy(src, params, "vgg16", generation="old")
    body = src.read_bytes()
    routes["/keras/" + src.name] = (body, len(body))
    md5 = hashlib.md5(body).hexdigest()
    net = weights.download(
        "keras", "vgg16", dest_dir=tmp_path / "d", url=f"{base}/keras/{src.name}", expected_hash=f"md5:{md5}", progress=False
    )
    assert net.convention == vgg.CAFFE and net.source_name == src.name
    assert_params_equal(net.params, params)

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsError) as err:
        weights.download("keras", "vgg16", dest_dir=tmp_path / "e", url=f"http://127.0.0.1:{port}/x.h5", progress=False)
    assert "cannot reach" in one_line(err) and "nst-jax weights convert FILE" in str(err.value)
    assert list((tmp_path / "e").iterdir()) == []
    with pytest.raises(WeightsError):
        weights.download("caffe", "vgg19", dest_dir=tmp_path / "f")
    with pytest.raises(WeightsError) as err:
        weights.download("keras", "vgg19", dest_dir=tmp_path / "f", expected_hash="xyz")
    assert "bad expected hash" in one_line(err)


def test_official_sources():
    assert weights.SOURCES[("torchvision", "vgg19")] == (
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "sha256-prefix", "dcbb9e9d",
    )  # fmt: skip
    assert weights.SOURCES[("torchvision", "vgg16")][0].endswith("/vgg16-397923af.pth")
    url, kind, digest = weights.SOURCES[("keras", "vgg19")]
    assert url == (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert (kind, digest) == ("md5", "253f8cb515780f3b799900260a226db6")
    assert weights.SOURCES[("keras", "vgg16")][1:] == ("md5", "6d6bbae143d832006294945121d1f1fc")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-jax")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_weights.add_parser(sub)
    return parser


def _cli(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    assert args.command == "weights"
    return cli_weights.run(args)


def test_cli_synthetic_info_convert(tmp_path, capsys, torch_files):
    syn = tmp_path / "syn.h5"
    assert _cli("weights", "synthetic", "-o", str(syn), "--seed", "3", "--arch", "vgg16") == 0
    assert str(syn) in capsys.readouterr().out
    with pytest.raises(NSTError) as err:
        _cli("weights", "synthetic", "-o", str(syn))
    assert "--overwrite" in one_line(err)
    assert _cli("weights", "synthetic", "-o", str(syn), "--seed", "3", "--arch", "vgg16", "--overwrite") == 0
    capsys.readouterr()

    assert _cli("weights", "info", str(syn)) == 0
    info = capsys.readouterr().out
    assert "vgg16" in info and "14,714,688" in info and weights.load_weights(syn).fingerprint in info

    conv = tmp_path / "conv.h5"
    assert _cli("weights", "convert", str(syn), "-o", str(conv), "--input-convention", "torchvision") == 0
    assert str(conv) in capsys.readouterr().out
    net = weights.load_weights(conv)
    assert net.convention == vgg.TORCHVISION and net.pretrained is False
    assert_params_equal(net.params, weights.synthetic_params("vgg16", 3))

    src, expected = torch_files[("vgg16", "legacy")]
    out = tmp_path / "nspt.h5"
    assert _cli("weights", "convert", str(src), "-o", str(out), "--input-convention", "caffe") == 0
    net = weights.load_weights(out)
    assert net.convention == vgg.CAFFE
    assert_params_equal(net.params, expected)
    with pytest.raises(WeightsError):
        _cli("weights", "convert", str(src), "-o", str(out))  # exists, no --overwrite
    with pytest.raises(SystemExit):
        _parser().parse_args(["weights", "synthetic"])  # -o is required


def test_cli_download(tmp_path, capsys, http_server):
    base, routes = http_server
    params = synthetic("vgg16", 22)
    src = tmp_path / "notop.h5"
    write_keras_legacy(src, params, "vgg16", generation="new")
    body = src.read_bytes()
    routes["/notop.h5"] = (body, len(body))
    sha = hashlib.sha256(body).hexdigest()
    dest = tmp_path / "w"
    rc = _cli(
        "weights", "download", "--arch", "vgg16", "--weights-dir", str(dest),
        "--url", f"{base}/notop.h5", "--sha256", sha, "--no-progress",
    )  # fmt: skip
    assert rc == 0
    assert str(dest / "vgg16.h5") in capsys.readouterr().out
    assert_params_equal(weights.load_weights(dest / "vgg16.h5").params, params)
