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
    from nst_jax import engine, network, preset, sharding, vgg, weights
    from nst_jax.targets import compute_targets

    net = weights.synthetic_params("vgg19", seed=0)
    p, spec = network.net_spec(net, vgg.CAFFE)
    mib = 2**20
    print(f"CPU: {cpu_model_and_features()[0]}; jax {jax.__version__}; {len(jax.devices())} host devices\n")
    print("| preset | optimiser | size | devices | temporaries / device | state / device | replicated args | "
          "total / device | vs 1 device | all-gather | collective-permute | all-reduce |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for optimizer in args.optimizers.split(","):
        cfg = preset("default").replace(optimizer=optimizer, conv_algorithm="direct")
        program, values = cfg.program(), cfg.values()
        for side in (int(s) for s in args.sizes.split(",")):
            rng = np.random.default_rng(0)
            content = jnp.asarray(rng.random((side, side, 3)), jnp.float32)
            targets = compute_targets(network.direct_params(p, spec), spec, content, content, program)
            state = engine.init_state(engine.from_rgb(content, program, spec), program, values)
            run_p = network.engine_params(p, program, spec, content.shape)
            single = None
            for n in counts:
                call = (run_p, targets, values, state)
                if n > 1:
                    mesh = sharding.spatial_mesh(jax.devices()[:n], side)
                    call = (*sharding.replicate((run_p, targets, values), mesh),
                            sharding.shard_rows(state, mesh, (side, side)))
                compiled = engine.run_chunk.lower(*call, jnp.asarray(1, jnp.int32), program=program, spec=spec,
                                                  length=program.chunk_size).compile()
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
