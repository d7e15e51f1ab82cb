"""Smoke tests of scripts/benchmark.py at tiny sizes: its torch side computes each recipe's loss
(the same work as nst-jax), and one end-to-end run writes a complete report. No durations asserted."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import bench_torch as bt
import benchmark
import torch_reference as ref
from conftest import random_image
from nst_jax.engine import loop
from nst_jax.network import backbones as network, vgg
from nst_jax import make_loss_fn


def _nchw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))


@pytest.mark.parametrize("name", ["keras", "pytorch", "matlab", "gatys", "jcjohnson", "default"])
def test_torch_side_computes_the_recipes_loss(name, vgg19_params):
    args = benchmark.make_parser().parse_args(["--preset", name, "--size", "40x48"])
    cfg = benchmark.build_config(args)
    spec = network.with_pixel_scale(network.as_spec(vgg.TORCHVISION if name == "pytorch" else vgg.CAFFE), cfg.pixel_scale)
    conv = spec.convention
    content, style, image = random_image(40, 48, 1), random_image(40, 48, 2), random_image(40, 48, 3)
    v = np.asarray(loop.from_rgb(jnp.asarray(image), cfg, spec))
    want = float(make_loss_fn(vgg19_params, content, style, cfg, convention=conv)(jnp.asarray(image))[0])
    features = ref.vgg_features(vgg19_params, cfg.pooling)
    space = bt.Space(conv, cfg.variable_space, torch.device("cpu"))
    losses = {
        "preset": bt.PresetLoss(features, cfg, space, _nchw(content), _nchw(style)),
        "three_images": bt.PresetLoss(features, cfg, space, _nchw(content), _nchw(style), three_images=True),
    }
    if bt.tutorial_applies(cfg, conv):
        losses["tutorial"] = bt.TutorialLoss(features, cfg, _nchw(content), _nchw(style))
    if bt.keras_way_exact(cfg):
        losses["keras_way"] = bt.KerasWayLoss(features, cfg, space, _nchw(content), _nchw(style))
    assert ("tutorial" in losses) == (name == "pytorch") and ("keras_way" in losses) == (name == "keras")
    for label, fn in losses.items():
        with torch.no_grad():
            got = float(fn(_nchw(v)))
        assert got == pytest.approx(want, rel=1e-4), label


def test_end_to_end_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = benchmark.main(["--preset", "matlab", "--size", "32", "--iterations", "2", "--repeats", "1",
                         "--variants", "nst-jax,torch", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    s = report["summary"]
    assert s["nst-jax"]["ms_per_iteration"] > 0 and s["torch"]["ms_per_iteration"] > 0
    # deterministic recipe (Adam): both sides did the same work
    assert s["same_work"]["first_loss_rel_diff"] < 1e-4 and s["same_work"]["final_loss_rel_diff"] < 1e-3
    assert report["results"]["nst-jax"]["peak_rss"] > 0
    assert "ms/iter" in capsys.readouterr().out
