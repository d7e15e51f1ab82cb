"""The objective: the total loss of one image against precomputed targets, and its weighted parts.

``objective(params, targets, image, values, program=..., spec=...)`` is pure: params, targets and
values are arguments (traced under ``jit``), only the program and the network's static facts are
static. ``engine.single.make_loss_fn`` wraps it for a config, for users who want ``loss_fn(image)``.

The loss is a sum of named terms (crowsonkb/style-transfer-pytorch's design), declared once in
``TERMS``: a term's name, whether the program (and the targets) switch it on, and its formula.
Everything downstream (the engine's loss rows, ``Result.parts``, the loss plot, the CLI's manifest
and progress) reads the names from ``TERMS``; adding a term is one ``Term`` here (and its value
field in ``config.py`` when it has a weight of its own).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ..program import losses
from . import temporal
from ..program.config import Values
from ..network.backbones import NetSpec, all_layers, features
from .targets import Targets

Array = jax.Array


class Inputs(NamedTuple):
    """What a term's formula sees: the network's input, its features, the targets and the numbers."""

    xn: Array  # the network's input (H×W×3, the convention's space)
    feats: dict[str, Array]  # every layer the program reads
    targets: Targets
    values: Values
    program: Any
    spec: NetSpec


class Term(NamedTuple):
    """One named term of the loss.

    ``on(program, targets)`` says (statically: from the program and the targets' structure) whether
    the term is part of this run; ``loss(inputs)`` returns (its weighted value, per-layer parts
    named ``"<term>/<layer>"``, possibly empty).
    """

    name: str
    on: Callable[[Any, Targets], bool]
    loss: Callable[[Inputs], tuple[Any, dict[str, Any]]]


def _content(a: Inputs) -> tuple[Any, dict[str, Any]]:
    program, values = a.program, a.values
    content_fn = functools.partial(losses.content_loss, kind=program.content_loss)
    if program.normalize_gradients:
        content_fn = losses.normalized_gradient(content_fn)
    parts: dict[str, Any] = {}
    total: Any = jnp.zeros((), jnp.float32)
    for k, (name, target) in enumerate(zip(program.content_layers, a.targets.content)):
        term = values.content_weight * values.content_layer_weights[k] * content_fn(a.feats[name], target)
        parts[f"content/{name}"] = term
        total = total + term
    return total, parts


def _style_layer_fn(program: Any, layer_masks: Any, divisor: Any) -> Callable[[Array, Any], Any]:
    def layer_loss(f: Array, target: Any) -> Any:
        if program.style_loss == "wasserstein":
            mu, cov = losses.mean_cov(f)
            return losses.wasserstein2(mu, cov, target[0], target[1])
        if layer_masks is None:
            return losses.style_layer_loss(losses.gram(f, program.gram_norm), target, program.style_reduce, divisor)
        # guided Grams: region r's Gram against style r's, summed over the regions
        return sum(
            losses.style_layer_loss(losses.gram(f, program.gram_norm, layer_masks[r]), target[r],
                                    program.style_reduce, divisor)
            for r in range(layer_masks.shape[0])
        )

    return losses.normalized_gradient(layer_loss) if program.normalize_gradients else layer_loss


def _style(a: Inputs) -> tuple[Any, dict[str, Any]]:
    program, values = a.program, a.values
    input_hw = (a.xn.shape[0], a.xn.shape[1])
    masks = a.targets.masks if a.targets.masks is not None else (None,) * len(program.style_layers)
    parts: dict[str, Any] = {}
    total: Any = jnp.zeros((), jnp.float32)
    for k, (name, target, layer_masks) in enumerate(zip(program.style_layers, a.targets.style, masks)):
        f = a.feats[name]
        h, wd, c = f.shape
        divisor = losses.style_divisor(program.style_divisor, c, h, wd, input_hw)
        term = values.style_weight * values.style_layer_weights[k] * _style_layer_fn(program, layer_masks, divisor)(
            f, target)
        parts[f"style/{name}"] = term
        total = total + term
    return total, parts


def _tv(a: Inputs) -> tuple[Any, dict[str, Any]]:
    tv_input = a.xn if a.program.tv_space == "network" else a.spec.convention.from_network(a.xn)
    return a.values.tv_weight * losses.tv_loss(tv_input, a.program.tv_loss), {}


def _temporal(a: Inputs) -> tuple[Any, dict[str, Any]]:
    # video: Ruder et al.'s temporal loss, measured where content and style are, on the network's
    # input (artistic_video.lua preprocesses the warped frame before its MSE): one unit of the
    # weight is a masked mean squared difference of one pixel level² for Caffe weights (0-255), so
    # the weight keeps its meaning next to the preset's content and style
    assert a.targets.temporal is not None
    warped, weights = a.targets.temporal
    return a.values.temporal_weight * temporal.temporal_loss(a.xn, a.spec.convention.to_network(warped), weights), {}


# The terms, in the order of the engine's loss rows (``Result.loss_parts`` columns).
TERMS: tuple[Term, ...] = (
    Term("content", lambda program, targets: True, _content),
    Term("style", lambda program, targets: True, _style),
    Term("tv", lambda program, targets: program.tv_loss != "none", _tv),
    Term("temporal", lambda program, targets: targets.temporal is not None, _temporal),
)


def part_names() -> tuple[str, ...]:
    """The names of every term, in the order of the engine's loss rows (read from ``TERMS`` when
    called, so the table is the one place a term is declared)."""
    return tuple(t.name for t in TERMS)


def active_terms(program: Any, has_temporal: bool = False) -> tuple[str, ...]:
    """The names of the terms a run with this program has (``temporal``: it was given a temporal target)."""
    probe = Targets((), (), temporal=(None, None) if has_temporal else None)  # type: ignore[arg-type]
    return tuple(t.name for t in TERMS if t.on(program, probe))


def network_objective(params: Any, targets: Targets, xn: Array, values: Values, program: Any,
                      spec: NetSpec) -> tuple[Array, dict[str, Array]]:
    """``objective`` of a preprocessed image (the network's input, H×W×3): what the engine calls.

    Returns:
      (total, parts): the terms this run has (``active_terms``) by name, and the per-layer parts.
    """
    feats = features(params, xn, all_layers(program), program, spec)
    inputs = Inputs(xn, feats, targets, values, program, spec)
    parts: dict[str, Any] = {}
    total: Any = jnp.zeros((), jnp.float32)
    for term in TERMS:
        if not term.on(program, targets):
            continue
        value, layers = term.loss(inputs)
        parts.update(layers)
        parts[term.name] = value
        total = total + value
    return total, parts


def objective(params: Any, targets: Targets, image: Array, values: Values, *, program: Any,
              spec: NetSpec) -> tuple[Array, dict[str, Array]]:
    """The total loss of one RGB image and its weighted parts.

    Args:
      params: the network's params (``weights.Network.params``).
      targets: from ``compute_targets``.
      image: H×W×3 RGB in [0, 1] at the working size.
      values: ``StyleConfig.values()`` (traced: vary or ``vmap`` them freely).
      program: ``StyleConfig.program()`` (static).
      spec: the network's static facts (``network.net_spec``, pixel scale applied).

    Returns:
      (total, parts) with the parts of the terms this run has, named as in ``TERMS``
      (``content``, ``style``, ``tv``, ``temporal``), and ``content/<layer>``, ``style/<layer>``,
      all weighted as they enter the total.
    """
    return network_objective(params, targets, spec.convention.to_network(image), values, program, spec)


# Params, targets, values and the image are arguments: one compilation per (shapes, program, spec).
objective_jit = jax.jit(objective, static_argnames=("program", "spec"))
