"""One image over 4 CPU host devices (``stylize(devices=...)``, ``--devices``): the same result as
one device, no all-gather inside the compiled step, and per-device memory falling with the split.

Everything runs in one child process started with ``--xla_force_host_platform_device_count=4``
(the device count is fixed when JAX starts)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import re, sys
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np
    from PIL import Image
    from nst_jax import StyleConfig, cli, stylize, weights
    from nst_jax.engine import driver, loop, sharding
    from nst_jax.network import backbones as network, vgg
    from nst_jax.objective.targets import compute_targets
    from conftest import random_image

    assert len(jax.devices()) == 4
    net = weights.synthetic_params("vgg19", seed=0)
    content, style = random_image(40, 48, 1), random_image(40, 48, 2)
    base = dict(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"), size=48,
                chunk_size=5, init="noise")
    cases = {{"adam": dict(optimizer="adam", learning_rate=0.02, iterations=10),
              "lbfgs": dict(optimizer="lbfgs", iterations=10),
              "lbfgs-zoom": dict(optimizer="lbfgs", lbfgs_linesearch="zoom", iterations=4)}}
    for name, changes in cases.items():
        cfg = StyleConfig(**base, **changes)
        one = stylize(content, style, net, cfg, convention=vgg.CAFFE)
        four = stylize(content, style, net, cfg, convention=vgg.CAFFE, devices=jax.devices())
        v = four.state.v
        assert len(v.sharding.device_set) == 4 and v.sharding.spec[0] == "spatial", v.sharding
        assert {{s.data.shape for s in v.addressable_shards}} == {{(10, 48, 3)}}
        if name == "lbfgs":  # the history is split too: (memory, H/4, W, 3) a device
            hist = [x for x in jax.tree.leaves(four.state.opt_state) if x.ndim == 4]
            assert hist and all(x.sharding.spec[1] == "spatial" for x in hist)
        diff = float(np.abs(four.image - one.image).max())
        np.testing.assert_allclose(four.losses[0], one.losses[0], rtol=1e-6)  # the same objective
        assert four.evaluations == one.evaluations
        # Equal to one device's up to the float32 floor of the trajectory: one device fed the
        # content plus 1e-7 drifts from itself by `floor`. Adam here: 4e-7 split and 3e-7 nudged
        # after 10 steps on session 5's AMD EPYC (so the bound is 1e-5); session 4's EPYC saw the
        # split Adam run 4.9e-3 away, which this bound allows only if the nudge moves as far there.
        # L-BFGS from noise amplifies rounding: ~5e-3 after 12 steps, split or nudged alike.
        nudged = stylize(content + np.float32(1e-7), style, net, cfg, convention=vgg.CAFFE)
        floor = float(np.abs(nudged.image - one.image).max())
        assert diff <= 2 * floor + 1e-5, (diff, floor)
        if name == "adam":
            np.testing.assert_allclose(four.losses, one.losses, rtol=1e-5)
        print("EQUAL", name, diff, "float32 floor", floor)

    # the compiled step: halos (collective-permute) and sums (all-reduce), never an all-gather;
    # per-device buffers of the split program against the one-device program
    cfg = StyleConfig(**base, optimizer="adam", learning_rate=0.02, iterations=5)
    program, values = cfg.program(), cfg.values()
    p, spec = network.net_spec(net, vgg.CAFFE)
    used = {{}}
    for side, devs in ((96, 1), (96, 4)):
        c = jnp.asarray(random_image(side, side, 3))
        targets = compute_targets(network.direct_params(p, spec), spec, c, c, program)
        state = loop.init_state(loop.from_rgb(c, program, spec), program, values)
        run_p = network.engine_params(p, program, spec, c.shape)
        targets, values_b, state = driver.stack([(targets, values, state)])  # a batch of one
        args = (run_p, targets, values_b, state)
        if devs > 1:
            mesh = sharding.batch_mesh(jax.devices()[:devs], devs, side)
            args = (sharding.replicate(run_p, mesh), *sharding.shard_batch((targets, values_b, state), mesh, (side, side)))
        compiled = loop.run_chunk.lower(*args, jnp.asarray([5], jnp.int32), program=program, spec=spec,
                                          length=program.chunk_size).compile()
        hlo = compiled.as_text()
        ops = {{op: len(re.findall(r"\\s" + op + r"(?:-start)?\\(", hlo)) for op in ("all-gather", "collective-permute", "all-reduce")}}
        m = compiled.memory_analysis()  # per device: an SPMD program is one device's program
        # the optimiser state's bytes on one device (the weights and targets are replicated: equal)
        state_bytes = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(args[3]))
        used[devs] = m.temp_size_in_bytes + state_bytes
        print("HLO", devs, ops, "temp", m.temp_size_in_bytes, "state", state_bytes)
        if devs > 1:
            assert ops["all-gather"] == 0, ops
            assert ops["collective-permute"] > 0 and ops["all-reduce"] > 0, ops
    ratio = used[4] / used[1]
    print("MEMORY per device, 4 vs 1:", round(ratio, 3))
    assert ratio < 0.4, ratio  # 1/4 of the image-sized buffers, plus halos and the replicated targets

    # a batch x spatial mesh: 2 members, each split over 2 devices; each equals its own run. SGD:
    # Adam's step m/sqrt(v) turns the rounding of a near-zero gradient into a full +-lr step (the
    # one-device batch of 4 already differs from single runs so, on these images), so the mesh is
    # checked where equality to 1e-5 is a fair demand
    from nst_jax import stylize_many
    cfg = StyleConfig(**{{**base, "content_layers": ("relu3_2",), "style_layers": ("relu1_1", "relu2_1", "relu3_1")}},
                      optimizer="sgd", learning_rate=1e-5, variable_space="rgb", iterations=8)
    styles = [style, random_image(40, 48, 4)]
    shards = []
    many = stylize_many(content, styles, net, cfg, seeds=[0, 1], spatial=2, convention=vgg.CAFFE,
                        callback=lambda p: shards.append((p.state.v.sharding.spec, sorted(
                            {{s.data.shape for s in p.state.v.addressable_shards}}))) and False)
    assert shards and all(tuple(spec) == ("batch", "spatial") and shapes == [(1, 20, 48, 3)] for spec, shapes in shards), shards
    for i in range(2):
        single = stylize(content, styles[i], net, cfg, seed=i, convention=vgg.CAFFE)
        np.testing.assert_allclose(many.images[i], single.image, atol=1e-5, rtol=0)
        np.testing.assert_allclose(many.losses[i], single.losses, rtol=1e-5)
        assert single.losses[-1] < single.losses[0]
    print("BATCHxSPATIAL equal")

    # the CLI
    import tempfile, pathlib
    d = pathlib.Path(tempfile.mkdtemp())
    weights.write_synthetic(d / "syn.h5", arch="vgg19", seed=0)
    Image.fromarray((content * 255).astype(np.uint8)).save(d / "c.png")
    Image.fromarray((style * 255).astype(np.uint8)).save(d / "s.png")
    common = ["stylize", str(d / "c.png"), str(d / "s.png"), "--weights", str(d / "syn.h5"), "--size", "48",
              "--iterations", "6", "--optimizer", "adam", "--set", "content_layers=relu3_2",
              "--set", "style_layers=relu1_1,relu2_1,relu3_1", "--no-progress"]
    assert cli.main(common + ["-o", str(d / "one.png")]) == 0
    assert cli.main(common + ["-o", str(d / "four.png"), "--devices", "4"]) == 0
    a, b = (np.asarray(Image.open(d / f), np.int16) for f in ("one.png", "four.png"))
    assert np.abs(a - b).max() <= 1, np.abs(a - b).max()
    assert cli.main(common + ["-o", str(d / "x.png"), "--devices", "5"]) == 2
    # --mesh 1x4 is --devices 4 for one image (the same program: the same pixels)
    assert cli.main(common + ["-o", str(d / "mesh14.png"), "--mesh", "1x4"]) == 0
    assert np.array_equal(np.asarray(Image.open(d / "mesh14.png")), np.asarray(Image.open(d / "four.png")))
    # --mesh 2x2: two seeds at once, each split over two devices, equal to each seed's own run
    assert cli.main(common + ["-o", str(d / "m22"), "--mesh", "2x2", "--seed", "0,1", "--init", "noise"]) == 0
    assert cli.main(common + ["-o", str(d / "m11"), "--devices", "1", "--seed", "0,1", "--init", "noise"]) == 0
    got = sorted((d / "m22").glob("*.png"))
    assert len(got) == 2, got
    for f in got:
        a, b = (np.asarray(Image.open(x), np.int16) for x in (f, d / "m11" / f.name))
        assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.05, (f.name, np.abs(a - b).max())
    for bad in (["--mesh", "2x2", "--devices", "3", "--seed", "0,1", "--init", "noise"], ["--mesh", "2x2"], ["--mesh", "3x2"],
                ["--mesh", "0x4"]):
        assert cli.main(common + ["-o", str(d / "bad"), *bad]) == 2, bad
    assert not (d / "bad").exists()
    print("MESH ok")

    # compile once on the sharded path: another learning rate, style weight and iteration count
    # reuse the split program (values are arguments, and so are the shardings' shapes)
    from conftest import CompileCounter
    cfg = StyleConfig(**{{**base, "chunk_size": 7}}, optimizer="adam", learning_rate=0.02, iterations=7)
    with CompileCounter() as count:
        stylize(content, style, net, cfg, convention=vgg.CAFFE, devices=jax.devices())
    chunks = lambda: [n for n in count.compiles if n == "jit(chunk)"]
    assert count.traces == 1 and len(chunks()) == 1, (count.traces, count.compiles)
    with CompileCounter() as count:
        r = stylize(content, style, net, cfg.replace(learning_rate=0.05, style_weight=3e3, iterations=11),
                    convention=vgg.CAFFE, devices=jax.devices())
    assert count.traces == 0 and not chunks(), (count.traces, count.compiles)
    assert r.iterations == 11 and len(r.state.v.sharding.device_set) == 4
    print("COMPILE once sharded")
    print("OK")
    """
)


def test_one_image_over_four_cpu_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    code = SCRIPT.format(tests=os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.rstrip().endswith("OK"), proc.stdout
    print(proc.stdout)
