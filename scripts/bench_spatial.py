#!/usr/bin/env python
"""Per-device memory of one image split over N devices (``stylize(devices=...)``), from XLA.

    python scripts/bench_spatial.py --sizes 256,512 --devices 1,2,4

Compiles (does not run) the real chunk of the ``default`` preset (direct convolutions) for each
size, optimiser and device count, on ``--xla_force_host_platform_device_count`` CPU devices, and
prints a Markdown table of what ``compiled.memory_analysis()`` assigns one device: temporaries
(activations and their gradients, the line search's work), the optimiser state's share, and the
replicated arguments (weights, targets), with the collective ops of the compiled step. A
measurement of buffer sizes, not of speed: host devices share this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--devices", default="1,2,4")
    ap.add_argument("--optimizers", default="adam,lbfgs")
    args = ap.parse_args(argv)
    counts = [int(n) for n in args.devices.split(",")]
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={max(counts)}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from machine import cpu_model_and_features
    from nst_jax.engine import driver, loop, sharding
    from nst_jax.network import backbones as network, vgg
    from nst_jax import preset, weights

    net = weights.synthetic_params("vgg19", seed=0)
    p, spec = network.net_spec(net, vgg.CAFFE)
    mib = 2**20
    print(f"CPU: {cpu_model_and_features()[0]}; jax {jax.__version__}; {len(jax.devices())} host devices\n")
    print("| preset | optimiser | size | devices | temporaries / device | state / device | replicated args | "
          "total / device | vs 1 device | all-gather | collective-permute | all-reduce |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for optimizer in args.optimizers.split(","):
        cfg = preset("default").replace(optimizer=optimizer, conv_algorithm="direct")
        for side in (int(s) for s in args.sizes.split(",")):
            rng = np.random.default_rng(0)
            content = jnp.asarray(rng.random((side, side, 3)), jnp.float32)
            prep = driver.prepare(net, [content], [content], [cfg], convention=vgg.CAFFE, init_images=[content])
            single = None
            for n in counts:
                call = (prep.params, prep.targets, prep.values, prep.state)
                if n > 1:  # one image's rows over n devices: a 1 × n batch × spatial mesh
                    mesh = sharding.batch_mesh(jax.devices()[:n], n, side)
                    call = (sharding.replicate(prep.params, mesh),
                            *sharding.shard_batch(call[1:], mesh, (side, side)))
                compiled = loop.run_chunk.lower(*call, jnp.asarray([1], jnp.int32), program=prep.program, spec=prep.spec,
                                                  length=prep.program.chunk_size).compile()
                m = compiled.memory_analysis()
                hlo = compiled.as_text()
                ops = [len(re.findall(r"\s" + op + r"(?:-start)?\(", hlo))
                       for op in ("all-gather", "collective-permute", "all-reduce")]
                state_b = sum(x.addressable_shards[0].data.nbytes if hasattr(x, "addressable_shards") else x.nbytes
                              for x in jax.tree.leaves(call[3]))
                replicated = m.argument_size_in_bytes - state_b
                total = m.temp_size_in_bytes + m.argument_size_in_bytes
                single = single or total
                print(f"| default | {optimizer} | {side}² | {n} | {m.temp_size_in_bytes / mib:.0f} MiB | "
                      f"{state_b / mib:.1f} MiB | {replicated / mib:.0f} MiB | {total / mib:.0f} MiB | "
                      f"{total / single:.2f} | {ops[0]} | {ops[1]} | {ops[2]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
