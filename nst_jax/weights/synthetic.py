"""Synthetic weights: random, deterministic, with the real shapes (tests and offline smoke runs)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..network import resnet, vgg
from .common import PathLike, Network, check_arch, convention_of, layer_table
from .native import load_weights, save_weights

# --------------------------------------------------------------------------------------------
# Synthetic weights
# --------------------------------------------------------------------------------------------


def synthetic_params(arch: str = "vgg19", seed: int = 0) -> dict:
    """Deterministic random weights with the real shapes (He initialisation).

    Args:
      arch: "vgg19", "vgg16" or "resnet50".
      seed: numpy ``default_rng`` seed.

    Returns:
      params pytree: kernels normal with std ``sqrt(2 / (9 * Cin))``, biases ``0.01 * normal``,
      float32. resnet50: std ``sqrt(2 / (k * k * Cin))``, and a random batch-norm affine map
      (``bn_scale`` uniform in [0.5, 1], [0.2, 0.4] on ``branch2c`` so the residual stream grows
      slowly; ``bn_shift`` ``0.05 * normal``).
    """
    rng = np.random.default_rng(seed)
    params = {}
    if arch in resnet.ARCHS:
        for spec in resnet.conv_specs():
            k, cin, cout = spec.size, spec.in_channels, spec.out_channels
            low, high = (0.2, 0.4) if spec.name.endswith("branch2c") else (0.5, 1.0)
            params[spec.name] = {
                "kernel": rng.standard_normal(spec.kernel_shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / (k * k * cin))),
                "bias": rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01),
                "bn_scale": rng.uniform(low, high, cout).astype(np.float32),
                "bn_shift": rng.standard_normal(cout, dtype=np.float32) * np.float32(0.05),
            }
        return params
    for name, kshape, bshape in layer_table(arch):
        std = math.sqrt(2.0 / (9 * kshape[2]))
        kernel = rng.standard_normal(kshape, dtype=np.float32) * np.float32(std)
        bias = rng.standard_normal(bshape, dtype=np.float32) * np.float32(0.01)
        params[name] = {"kernel": kernel, "bias": bias}
    return params


def write_synthetic(
    path: PathLike,
    *,
    arch: str = "vgg19",
    seed: int = 0,
    convention: vgg.Convention = vgg.CAFFE,
    stride_on: Optional[str] = None,
) -> Network:
    """Write synthetic weights in the converted format (``pretrained=False``) and load them.

    Args:
      path: destination ``.h5`` (replaced if it exists).
      arch: "vgg19", "vgg16" or "resnet50".
      seed: random seed.
      convention: input convention recorded in the file.
      stride_on: resnet50 only: "1x1" (default) or "3x3".

    Returns:
      The loaded ``Network``.
    """
    convention = convention_of(convention, vgg.CAFFE)
    check_arch(arch)
    if arch in resnet.ARCHS and stride_on is None:
        stride_on = "1x1"
    save_weights(
        path,
        synthetic_params(arch, seed),
        arch=arch,
        convention=convention,
        pretrained=False,
        extra_attrs={"synthetic_seed": np.int64(seed)},
        stride_on=stride_on,
    )
    return load_weights(path)

