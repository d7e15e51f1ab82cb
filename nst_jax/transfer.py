"""The engine: targets computed once, a pure loss over them, and an optax loop compiled in chunks.

Data path: RGB [0, 1] images -> ``Convention.to_network`` -> ``vgg.features`` -> ``losses`` ->
optax updates inside ``lax.scan`` chunks -> results. Params and targets are *arguments* of the
compiled chunk (never captured constants), the config is static, so a run compiles its chunk
once per image shape.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import losses, resnet, vgg
from .config import StyleConfig
from .errors import ConfigError

Array = jax.Array
ImageLike = Union[np.ndarray, Array]


# --------------------------------------------------------------------------------------------
# params, conventions, targets


def split_network(network: Any, convention: Optional[vgg.Convention] = None) -> tuple[dict, vgg.Convention]:
    """(params, convention) from a ``weights.Network`` or a bare params dict plus ``convention``."""
    if hasattr(network, "params") and hasattr(network, "convention"):
        conv = convention or network.convention
        if getattr(network, "arch", None) == "resnet50" and not isinstance(conv, resnet.ResNetConvention):
            conv = resnet.ResNetConvention(**dataclasses.asdict(conv), stride_on=network.stride_on)
        return network.params, conv
    if convention is None:
        raise ConfigError("a bare params dict needs convention= (e.g. nst_jax.vgg.CAFFE)")
    return network, convention


def effective_convention(convention: vgg.Convention, config: StyleConfig) -> vgg.Convention:
    """The weights' convention, with the config's pixel-scale override applied."""
    if config.pixel_scale is None:
        return convention
    if convention.scale == 1.0:
        raise ConfigError("pixel_scale overrides a 0-255 (Caffe) convention; these weights expect [0, 1] input")
    return convention.with_scale(config.pixel_scale)


class Targets(NamedTuple):
    """Precomputed targets: content features per content layer, style statistics per style layer.

    ``style`` holds one Gram matrix per layer (``style_loss="gram"``) or a (mean, covariance) pair
    (``"wasserstein"``), already blended over the style images.
    """

    content: tuple[Array, ...]
    style: tuple[Any, ...]
    # Spatial control (guided Grams): per style layer, K region masks at that layer's resolution;
    # then ``style`` holds K Grams per layer (one per region's style), not one blend.
    masks: Optional[tuple[Array, ...]] = None


def _precision(config: StyleConfig):
    return jax.lax.Precision.HIGHEST if config.precision == "highest" else None


def _features(params, xn: Array, layers: Sequence[str], config: StyleConfig, conv: vgg.Convention) -> dict[str, Array]:
    """The network's named activations: ResNet50 when the convention says so, else VGG."""
    if isinstance(conv, resnet.ResNetConvention):
        fn = functools.partial(resnet.features, stride_on=conv.stride_on, pool1_pad=conv.pool1_pad)
    else:
        # custom_vjp: hand-written VJPs for the convolutions and max/avg poolings, which XLA's CPU
        # backend runs several times faster than JAX's own rules, most of all inside the chunk's
        # lax.scan (see vgg._conv3x3_custom_vjp, vgg._max_pool_vjp; BENCHMARKS.md "Performance log").
        fn = functools.partial(vgg.features, pooling=config.pooling, custom_vjp=True, remat=config.remat)
    if config.precision == "bf16":
        # bfloat16 convolutions (AMX on recent Xeons, tensor cores on GPUs); losses stay float32.
        p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        out = fn(p16, xn.astype(jnp.bfloat16), layers)
        return {k: v.astype(jnp.float32) for k, v in out.items()}
    return fn(params, xn, layers, precision=_precision(config))


# "auto" uses Winograd from this many pixels on: below it the extra compilation (about 1 s per
# convolution and direction) outweighs what a few hundred faster steps save.
WINOGRAD_AUTO_MIN_PIXELS = 160 * 160


def uses_winograd(config: StyleConfig, conv: vgg.Convention, shape: Optional[Sequence[int]] = None) -> bool:
    """Whether the engine computes VGG's wide convolutions as Winograd F(4x4, 3x3).

    Args:
      config: its ``conv_algorithm`` ("direct", "winograd", "auto") and ``precision``.
      conv: the network's convention (ResNet never uses it).
      shape: the working image's (H, W, ...), for "auto".
    """
    if isinstance(conv, resnet.ResNetConvention) or config.conv_algorithm == "direct":
        return False
    if config.conv_algorithm == "auto":
        big = shape is None or shape[0] * shape[1] >= WINOGRAD_AUTO_MIN_PIXELS
        return big and config.precision != "bf16" and jax.default_backend() == "cpu"
    return True


def engine_params(params: Any, config: StyleConfig, conv: vgg.Convention,
                  shape: Optional[Sequence[int]] = None) -> Any:
    """The params the engine runs: with the Winograd-transformed kernels added (once per run, not
    per step) when ``uses_winograd``, else without them. Params that already hold them (from
    ``vgg.with_winograd``: do that once when calling ``stylize`` many times) are not transformed again."""
    if isinstance(conv, resnet.ResNetConvention):
        return params
    if uses_winograd(config, conv, shape):
        return vgg.with_winograd(params, _all_layers(config))
    return vgg.without_winograd(params)


def _direct(params: Any, conv: vgg.Convention) -> Any:
    """Params for one-off passes (the targets): direct convolutions, so no Winograd compilation."""
    return params if isinstance(conv, resnet.ResNetConvention) else vgg.without_winograd(params)


def _style_stat(f: Array, config: StyleConfig):
    if config.style_loss == "wasserstein":
        return losses.mean_cov(f)
    return losses.gram(f, config.gram_norm)


def _normalise_styles(style, config: StyleConfig) -> tuple[list[Array], np.ndarray]:
    """Styles as a list of H×W×3 arrays and their blend weights (summing to 1)."""
    if isinstance(style, (np.ndarray, jax.Array)) and np.ndim(style) == 3:
        images, weights = [style], [1.0]
    else:
        items = list(style)
        if items and all(isinstance(it, tuple) and len(it) == 2 for it in items):
            images = [it[0] for it in items]
            weights = [float(it[1]) for it in items]
        else:
            images = items
            weights = list(config.style_blend_weights or [1.0] * len(images))
    if not images:
        raise ConfigError("at least one style image is needed")
    if len(weights) != len(images):
        raise ConfigError(f"{len(weights)} style blend weights for {len(images)} style images")
    w = np.asarray(weights, np.float64)
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ConfigError("style blend weights must be finite, >= 0 and not all 0")
    return [jnp.asarray(im, jnp.float32) for im in images], w / w.sum()


def _check_image(name: str, image: Array) -> None:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ConfigError(f"{name} must be an H×W×3 RGB array; got shape {tuple(image.shape)}")
    if min(image.shape[:2]) < 16:
        raise ConfigError(f"{name} is {image.shape[0]}x{image.shape[1]}: VGG needs at least 16 pixels a side")


def compute_targets(
    params: Mapping,
    convention: vgg.Convention,
    content: ImageLike,
    style: Any,
    config: StyleConfig,
    masks: Optional[ImageLike] = None,
    style_masks: Optional[Sequence[Optional[ImageLike]]] = None,
) -> Targets:
    """Content features and blended style statistics, computed once.

    Args:
      params: VGG params pytree.
      convention: the (effective) input convention.
      content: H×W×3 RGB in [0, 1].
      style: one H×W×3 array, a sequence of them (blended by ``config.style_blend_weights`` or
        equally), or a sequence of (array, weight) pairs. Styles may have any size: each one's
        statistics are computed at its own size, then blended.
      config: the run's config.
      masks: spatial control (Gatys et al. 2017): K×H×W region weights over the content, one per
        style image (then the styles are not blended: style k paints region k). Each style's Gram
        is computed over its own region (``style_masks[k]``, H_k×W_k, default its whole image),
        and the masks are resized to every style layer's resolution (area-weighted).
      style_masks: optional per-style masks (None entries: the whole style image).

    Returns:
      ``Targets``.
    """
    content = jnp.asarray(content, jnp.float32)
    _check_image("content image", content)
    images, weights = _normalise_styles(style, config)
    for im in images:
        _check_image("style image", im)
    if masks is not None:
        return _guided_targets(params, convention, content, images, config, masks, style_masks)
    cfeats = _features(params, convention.to_network(content), config.content_layers, config, convention) if config.content_layers else {}
    content_t = tuple(cfeats[name] for name in config.content_layers)
    style_t: list[Any] = []
    if config.style_layers:
        per_image = [_features(params, convention.to_network(im), config.style_layers, config, convention) for im in images]
        for name in config.style_layers:
            stats = [_style_stat(f[name], config) for f in per_image]
            style_t.append(jax.tree.map(lambda *xs: sum(float(w) * x for w, x in zip(weights, xs)), *stats))
    return Targets(content_t, tuple(style_t))


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of an area-weighted 1-D resize: output cell i averages the input over
    [i·n_in/n_out, (i+1)·n_in/n_out), each input cell weighted by its overlap (VGG's 2x pooling of
    an even side is the plain 2-cell mean)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def _layer_mask(mask: Array, shape: tuple[int, int]) -> Array:
    """A region mask at a layer's resolution: an area-weighted resize (each layer cell gets the
    mask's mean over the pixels it covers), so the regions still partition every layer."""
    if tuple(mask.shape) == tuple(shape):
        return mask
    rows = jnp.asarray(_area_matrix(mask.shape[0], shape[0]))
    cols = jnp.asarray(_area_matrix(mask.shape[1], shape[1]))
    return jnp.einsum("ih,hw,jw->ij", rows, mask, cols, precision=jax.lax.Precision.HIGHEST)


def _guided_targets(params, convention, content, images, config, masks, style_masks) -> Targets:
    if config.style_loss != "gram":
        raise ConfigError("spatial masks work with the Gram style loss (style_loss='gram')")
    masks = jnp.asarray(masks, jnp.float32)
    if masks.ndim != 3 or masks.shape[1:] != content.shape[:2]:
        raise ConfigError(f"masks must be K×H×W at the content's size {content.shape[:2]}; got {tuple(masks.shape)}")
    if masks.shape[0] != len(images):
        raise ConfigError(f"{masks.shape[0]} masks for {len(images)} style images: one region per style")
    style_masks = list(style_masks) if style_masks is not None else [None] * len(images)
    cfeats = _features(params, convention.to_network(content), config.content_layers, config, convention) if config.content_layers else {}
    shapes = jax.eval_shape(lambda x: _features(params, x, config.style_layers, config, convention),
                            jax.ShapeDtypeStruct(content.shape, jnp.float32))
    per_image = [_features(params, convention.to_network(im), config.style_layers, config, convention) for im in images]
    style_t, mask_t = [], []
    for name in config.style_layers:
        hw = tuple(shapes[name].shape[:2])
        grams = []
        for feats, smask in zip(per_image, style_masks):
            f = feats[name]
            m = None if smask is None else _layer_mask(jnp.asarray(smask, jnp.float32), tuple(f.shape[:2]))
            grams.append(losses.gram(f, config.gram_norm, m))
        style_t.append(jnp.stack(grams))
        mask_t.append(jnp.stack([_layer_mask(m, hw) for m in masks]))
    return Targets(tuple(cfeats[n] for n in config.content_layers), tuple(style_t), tuple(mask_t))


def _all_layers(config: StyleConfig) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in config.content_layers + config.style_layers:
        seen.setdefault(name, None)
    return tuple(seen)


def network_loss(
    params: Mapping,
    targets: Targets,
    xn: Array,
    config: StyleConfig,
    convention: vgg.Convention,
) -> tuple[Array, dict[str, Array]]:
    """The total loss of one preprocessed image (network input, H×W×3), and its weighted parts.

    Returns:
      (total, parts) with parts ``content``, ``style``, ``tv`` and ``content/<layer>``,
      ``style/<layer>``, all weighted as they enter the total.
    """
    feats = _features(params, xn, _all_layers(config), config, convention)
    cw, sw = config.layer_weights
    parts: dict[str, Array] = {}
    content_total = jnp.zeros((), jnp.float32)
    content_fn = functools.partial(losses.content_loss, kind=config.content_loss)
    if config.normalize_gradients:
        content_fn = losses.normalized_gradient(content_fn)
    for name, w, target in zip(config.content_layers, cw, targets.content):
        term = config.content_weight * w * content_fn(feats[name], target)
        parts[f"content/{name}"] = term
        content_total = content_total + term
    style_total = jnp.zeros((), jnp.float32)
    input_hw = (xn.shape[0], xn.shape[1])
    masks = targets.masks if targets.masks is not None else (None,) * len(config.style_layers)
    for name, w, target, layer_masks in zip(config.style_layers, sw, targets.style, masks):
        f = feats[name]
        h, wd, c = f.shape
        divisor = losses.style_divisor(config.style_divisor, c, h, wd, input_hw)

        def layer_loss(f, target, layer_masks=layer_masks, divisor=divisor):
            if config.style_loss == "wasserstein":
                mu, cov = losses.mean_cov(f)
                return losses.wasserstein2(mu, cov, target[0], target[1])
            if layer_masks is None:
                return losses.style_layer_loss(losses.gram(f, config.gram_norm), target, config.style_reduce, divisor)
            # guided Grams: region k's Gram against style k's, summed over the regions
            return sum(
                losses.style_layer_loss(losses.gram(f, config.gram_norm, layer_masks[k]), target[k],
                                        config.style_reduce, divisor)
                for k in range(layer_masks.shape[0])
            )

        fn = losses.normalized_gradient(layer_loss) if config.normalize_gradients else layer_loss
        term = config.style_weight * w * fn(f, target)
        parts[f"style/{name}"] = term
        style_total = style_total + term
    if config.tv_weight and config.tv_loss != "none":
        tv_input = xn if config.tv_space == "network" else convention.from_network(xn)
        tv = config.tv_weight * losses.tv_loss(tv_input, config.tv_loss)
    else:
        tv = jnp.zeros((), jnp.float32)
    parts.update(content=content_total, style=style_total, tv=tv)
    return content_total + style_total + tv, parts


def make_loss_fn(
    params: Any,
    content: ImageLike,
    style: Any,
    config: StyleConfig,
    *,
    convention: Optional[vgg.Convention] = None,
    masks: Optional[ImageLike] = None,
    style_masks: Optional[Sequence[Optional[ImageLike]]] = None,
) -> Callable[[Array], tuple[Array, dict[str, Array]]]:
    """A pure, jittable ``loss_fn(image) -> (total, parts)`` over precomputed targets.

    ``image`` is H×W×3 RGB in [0, 1] at the working size; the preset's preprocessing happens
    inside, so the value equals the original program's loss at the same pixels.

    Args:
      params: a ``weights.Network`` (params + convention) or a params dict with ``convention=``.
      content: H×W×3 RGB in [0, 1].
      style: one array, a sequence of arrays, or (array, weight) pairs (see ``compute_targets``).
      config: a ``StyleConfig``.
      masks, style_masks: spatial control, see ``compute_targets``.

    Returns:
      ``loss_fn``. It closes over the params and targets (so under ``jax.jit`` they are constants
      of the program; inside ``stylize`` they are arguments) and always uses the direct
      convolutions, whatever ``config.conv_algorithm`` says.
    """
    p, conv = split_network(params, convention)
    conv = effective_convention(conv, config)
    # Direct convolutions here, whatever conv_algorithm says: loss_fn closes over the params, and
    # under jax.jit closed-over arrays become constants of the program; Winograd's transformed
    # kernels would add ~0.4 GB of them. (stylize passes params as arguments and uses Winograd.)
    p = _direct(p, conv)
    targets = compute_targets(p, conv, content, style, config, masks, style_masks)

    def loss_fn(image: Array) -> tuple[Array, dict[str, Array]]:
        return network_loss(p, targets, conv.to_network(image), config, conv)

    return loss_fn


# --------------------------------------------------------------------------------------------
# optimisers


def scale_by_matlab_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """MATLAB's ``adamupdate`` direction: ``sqrt(1-b2^t)/(1-b1^t) · m / (sqrt(v) + eps)``.

    optax's Adam adds eps to sqrt(v̂) instead of sqrt(v); the two differ by the scale of eps only.
    """
    base = optax.scale_by_adam(b1=b1, b2=b2, eps=0.0)

    def update(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        # 1 - b**t as -expm1(t log b): MATLAB computes this scalar in double; in float32 the naive
        # form loses ~1e-5 relative at t = 1 (0.999 is not exact in binary).
        corr = jnp.sqrt(-jnp.expm1(t * math.log(b2))) / -jnp.expm1(t * math.log(b1))
        out = jax.tree.map(lambda m, v: corr * m / (jnp.sqrt(v) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(base.init, update)


class TorchLBFGSState(NamedTuple):
    """State of ``scale_by_torch_lbfgs``: a circular memory of (s, y, 1/yᵀs) pairs."""

    count: Array
    prev_grad: Any
    prev_step: Any
    s_mem: Any  # (memory, *shape) per leaf
    y_mem: Any
    rho: Array  # (memory,)
    head: Array  # next slot to write
    size: Array  # pairs stored
    h_diag: Array


def scale_by_torch_lbfgs(memory: int, learning_rate: float = 1.0) -> optax.GradientTransformation:
    """``torch.optim.LBFGS`` without a line search, one function evaluation per update.

    Mirrors torch's step exactly: s is the step taken (t·d), y the change of gradient; a pair is
    stored only when yᵀs > 1e-10 (torch skips the others, optax.scale_by_lbfgs keeps them, which
    lets a negative-curvature pair flip the direction on non-convex losses); the initial inverse
    Hessian is γ = yᵀs / yᵀy of the newest pair; the first step is ``min(1, 1/‖g‖₁)·lr``, later
    ones ``lr``. torch's per-``step()`` stopping tests (tolerance_change on the loss and step) are
    not applied: the loop runs the requested number of evaluations, as the tutorial's loop does.
    The output is the update to add (already negated and scaled).
    """

    def init(params):
        stack = lambda x: jnp.zeros((memory,) + x.shape, x.dtype)  # noqa: E731
        zeros = lambda x: jnp.zeros_like(x)  # noqa: E731
        return TorchLBFGSState(
            count=jnp.zeros((), jnp.int32),
            prev_grad=jax.tree.map(zeros, params),
            prev_step=jax.tree.map(zeros, params),
            s_mem=jax.tree.map(stack, params),
            y_mem=jax.tree.map(stack, params),
            rho=jnp.zeros((memory,), jnp.float32),
            head=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
            h_diag=jnp.ones((), jnp.float32),
        )

    def update(grad, state, params=None, *, allow_store=True):
        # allow_store=False: do not add this step's pair to the memory (the engine passes whether
        # the evaluation was finite, so a failed step leaves the memory as it was).
        del params
        vdot = lambda a, b: sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
        first = state.count == 0
        y = jax.tree.map(jnp.subtract, grad, state.prev_grad)
        s = state.prev_step
        ys = vdot(y, s)
        store = (~first) & (ys > 1e-10) & allow_store
        # Select the one slot, not the whole memory: where(store, m.at[h].set(v), m) reads and writes
        # all `memory` images every step; this is an in-place write of one.
        s_mem = jax.tree.map(lambda m, v: m.at[state.head].set(jnp.where(store, v, m[state.head])), state.s_mem, s)
        y_mem = jax.tree.map(lambda m, v: m.at[state.head].set(jnp.where(store, v, m[state.head])), state.y_mem, y)
        rho = jnp.where(store, state.rho.at[state.head].set(1.0 / jnp.where(store, ys, 1.0)), state.rho)
        head = jnp.where(store, (state.head + 1) % memory, state.head)
        size = jnp.where(store, jnp.minimum(state.size + 1, memory), state.size)
        h_diag = jnp.where(store, ys / jnp.where(store, vdot(y, y), 1.0), state.h_diag)

        def slot(k):  # k-th newest pair
            return (head - 1 - k) % memory

        def backward(k, carry):
            q, alphas = carry
            i = slot(k)
            s_i = jax.tree.map(lambda m: m[i], s_mem)
            y_i = jax.tree.map(lambda m: m[i], y_mem)
            a = rho[i] * vdot(s_i, q)
            q = jax.tree.map(lambda qq, yy: qq - a * yy, q, y_i)
            return q, alphas.at[i].set(a)

        # Both loops visit only the stored pairs (a dynamic trip count): the empty slots added
        # exact zeros, so the result is the same as looping over the whole memory.
        q = jax.tree.map(jnp.negative, grad)
        q, alphas = jax.lax.fori_loop(0, size, backward, (q, jnp.zeros((memory,), jnp.float32)))
        r = jax.tree.map(lambda x: x * h_diag, q)

        def forward(j, r):
            i = slot(size - 1 - j)  # oldest first
            s_i = jax.tree.map(lambda m: m[i], s_mem)
            y_i = jax.tree.map(lambda m: m[i], y_mem)
            b = rho[i] * vdot(y_i, r)
            coef = alphas[i] - b
            return jax.tree.map(lambda rr, ss: rr + coef * ss, r, s_i)

        d = jax.lax.fori_loop(0, size, forward, r)
        # first iteration: d = -g (no pairs) and t = min(1, 1/|g|_1) * lr
        l1 = sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grad))
        t = jnp.where(first, jnp.minimum(1.0, 1.0 / l1), 1.0) * learning_rate
        step = jax.tree.map(lambda x: t * x, d)
        new_state = TorchLBFGSState(
            count=state.count + 1, prev_grad=grad, prev_step=step, s_mem=s_mem, y_mem=y_mem,
            rho=rho, head=head, size=size, h_diag=h_diag,
        )
        return step, new_state

    return optax.GradientTransformation(init, update)


def make_optimizer(config: StyleConfig) -> optax.GradientTransformation:
    """The optax optimiser a config names (SGD with optional exponential decay, Adam, L-BFGS)."""
    lr: Any = config.learning_rate
    if config.lr_decay_rate is not None:
        lr = optax.exponential_decay(config.learning_rate, config.lr_decay_steps, config.lr_decay_rate)
    if config.optimizer == "sgd":
        return optax.sgd(lr)
    if config.optimizer == "adam":
        if config.adam_eps_mode == "matlab":
            return optax.chain(scale_by_matlab_adam(config.adam_b1, config.adam_b2, config.adam_eps),
                               optax.scale_by_learning_rate(lr))
        return optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
    if config.lbfgs_linesearch == "zoom":
        return optax.lbfgs(
            learning_rate=None,
            memory_size=config.lbfgs_memory,
            linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one"),
        )
    # No line search: torch.optim.LBFGS's update rule (see scale_by_torch_lbfgs for why not
    # optax.lbfgs(linesearch=None): it keeps negative-curvature pairs and scales the first step
    # differently).
    return scale_by_torch_lbfgs(config.lbfgs_memory, config.learning_rate)


# --------------------------------------------------------------------------------------------
# the loop


class LoopState(NamedTuple):
    """Everything the loop carries between steps (a pytree; checkpoints save it whole)."""

    v: Array  # the image variable (network input or RGB, per config.variable_space)
    opt_state: Any
    best_v: Array
    best_loss: Array
    ema_v: Array
    step: Array  # iterations done
    evals: Array  # function evaluations done
    failed: Array  # a non-finite loss was met; v holds the last good iterate


def _to_network(v: Array, config: StyleConfig, conv: vgg.Convention) -> Array:
    return v if config.variable_space == "network" else conv.to_network(v)


def _to_rgb(v: Array, config: StyleConfig, conv: vgg.Convention) -> Array:
    return conv.from_network(v) if config.variable_space == "network" else v


def _clamp(v: Array, config: StyleConfig, conv: vgg.Convention) -> Array:
    if config.variable_space == "rgb":
        return jnp.clip(v, 0.0, 1.0)
    return conv.to_network(jnp.clip(conv.from_network(v), 0.0, 1.0))


def initial_variable(
    content: Array,
    style0: Optional[Array],
    config: StyleConfig,
    conv: vgg.Convention,
    key: Array,
    init_image: Optional[Array] = None,
) -> Array:
    """The start image in the variable space.

    "content"; "style" (the first style image, at the content's size); "noise": uniform white
    noise in RGB [0, 1]; "randn": ``init_scale · N(0, 1)`` in network space (neural-style);
    "blend": ``ratio · U{−range..range} + (1 − ratio) · content`` in network space (MATLAB).
    ``init_image`` (RGB [0, 1], the content's size) overrides ``config.init``.
    """
    if init_image is not None:
        start = jnp.asarray(init_image, jnp.float32)
        if start.shape != content.shape:
            raise ConfigError(f"init image is {start.shape[:2]}, the content is {content.shape[:2]}: sizes must match")
        return _from_rgb(start, config, conv)
    if config.init == "content":
        return _from_rgb(content, config, conv)
    if config.init == "style":
        if style0 is None or style0.shape != content.shape:
            raise ConfigError("init 'style' needs a style image of the content's size (style_size='content')")
        return _from_rgb(style0, config, conv)
    if config.init == "noise":
        return _from_rgb(jax.random.uniform(key, content.shape, jnp.float32), config, conv)
    if config.init == "randn":
        xn = config.init_scale * jax.random.normal(key, content.shape, jnp.float32)
    else:  # blend
        r = config.init_noise_range
        noise = jax.random.randint(key, content.shape, -r, r + 1).astype(jnp.float32)
        xn = config.init_noise_ratio * noise + (1.0 - config.init_noise_ratio) * conv.to_network(content)
    return xn if config.variable_space == "network" else conv.from_network(xn)


def _from_rgb(rgb: Array, config: StyleConfig, conv: vgg.Convention) -> Array:
    return conv.to_network(rgb) if config.variable_space == "network" else rgb


def init_state(v0: Array, config: StyleConfig) -> LoopState:
    """A fresh loop state at the start image ``v0``."""
    state = LoopState(
        v=v0,
        opt_state=make_optimizer(config).init(v0),
        best_v=v0,
        best_loss=jnp.asarray(jnp.inf, jnp.float32),
        ema_v=v0,
        step=jnp.zeros((), jnp.int32),
        evals=jnp.zeros((), jnp.int32),
        failed=jnp.zeros((), bool),
    )
    # Distinct buffers for every leaf: the state is donated to the compiled chunk leaf by leaf, and
    # optax's L-BFGS state shares one zeros array between two fields.
    return jax.tree.map(jnp.copy, state)


def _keep_if_ok(ok: Array, new: Any, old: Any) -> Any:
    """``where(ok, new, old)`` over an optimiser state, except the L-BFGS memory.

    A ``where`` over ``scale_by_torch_lbfgs``'s (memory, H, W, 3) stacks read and wrote every stored
    pair each step (2 × memory images, ~0.6 GB a step at 512²) and made XLA copy them. ``_step``
    instead lets the update store a pair only when the loss and gradient are finite
    (``allow_store``), so the memory (stacks, 1/yᵀs, head, size, γ) is taken from the update as is.
    """
    if isinstance(old, TorchLBFGSState):
        kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new._replace(s_mem=None, y_mem=None),
                            old._replace(s_mem=None, y_mem=None))
        return kept._replace(s_mem=new.s_mem, y_mem=new.y_mem, rho=new.rho, head=new.head, size=new.size,
                             h_diag=new.h_diag)
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _step(params, targets, state: LoopState, config: StyleConfig, conv: vgg.Convention) -> tuple[LoopState, Array]:
    """One optimiser step on one image: evaluate at the (clamped) iterate, update."""
    opt = make_optimizer(config)

    def objective(v):
        return network_loss(params, targets, _to_network(v, config, conv), config, conv)[0]

    zoom = config.optimizer == "lbfgs" and config.lbfgs_linesearch == "zoom"
    # Clamping before each evaluation (the tutorial's closure) is a projection a line search
    # does not know about: with the zoom line search the image is clamped only at the end.
    v = _clamp(state.v, config, conv) if (config.clamp and not zoom) else state.v
    if zoom:
        value, grad = optax.value_and_grad_from_state(objective)(v, state=state.opt_state)
        updates, opt_state = opt.update(grad, state.opt_state, v, value=value, grad=grad, value_fn=objective)
        # The first step of a (fresh) state evaluates at v; later ones reuse the value and gradient
        # the line search stored at its accepted point.
        fresh = ~jnp.isfinite(optax.tree.get(state.opt_state, "value"))
        evals = fresh.astype(jnp.int32) + optax.tree.get(opt_state, "num_linesearch_steps")
    else:
        value, grad = jax.value_and_grad(objective)(v)
        if isinstance(state.opt_state, TorchLBFGSState):
            # store the new (s, y) pair only from a finite evaluation of a live run (see _keep_if_ok)
            finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & ~state.failed
            updates, opt_state = opt.update(grad, state.opt_state, v, allow_store=finite)
        else:
            updates, opt_state = opt.update(grad, state.opt_state, v)
        evals = 1
    new_v = v + updates
    ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(new_v)) & ~state.failed
    better = ok & (value < state.best_loss)
    # best: the iterate whose loss this is; matlab_best: the iterate after its update (MATLAB quirk).
    candidate = new_v if config.select == "matlab_best" else v
    ema_v = state.ema_v
    if config.ema_decay is not None:
        ema_v = config.ema_decay * state.ema_v + (1.0 - config.ema_decay) * new_v
    new = LoopState(
        v=new_v,
        opt_state=opt_state,
        best_v=jnp.where(better, candidate, state.best_v),
        best_loss=jnp.where(better, value, state.best_loss),
        ema_v=ema_v,
        step=state.step + 1,
        evals=state.evals + evals,
        failed=state.failed,
    )
    # A non-finite loss stops the run: keep the last good iterate and flag the failure.
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new._replace(opt_state=None), state._replace(opt_state=None))
    kept = kept._replace(opt_state=_keep_if_ok(ok, new.opt_state, state.opt_state), failed=state.failed | ~ok)
    return kept, jnp.where(ok, value, jnp.nan)


def _chunk(params, targets, state: LoopState, n_active: Array, *, config: StyleConfig, conv: vgg.Convention, length: int):
    """Up to ``length`` steps in one loop; steps at index >= n_active are not run (same program).

    With ``config.iteration_unit == "evaluation"``, ``n_active`` is instead the budget of function
    evaluations: a step runs while fewer have been made (SciPy's ``maxfun``).

    Returns (state, losses): ``losses[i]`` is step i's loss, NaN for the steps not run. A
    ``while_loop`` whose condition stops at ``n_active`` (not a ``scan`` with a ``lax.cond`` per
    step): XLA copied the whole state in and out of the ``cond`` every step, the L-BFGS memory
    included (2 × memory images: time, and twice that memory held).
    """

    def active(st, i):
        return st.evals < n_active if config.iteration_unit == "evaluation" else i < n_active

    def cond(carry):
        st, i, _ = carry
        return (i < length) & active(st, i)

    def body(carry):
        st, i, losses = carry
        st, value = _step(params, targets, st, config, conv)
        return st, i + 1, losses.at[i].set(value)

    init = (state, jnp.zeros((), jnp.int32), jnp.full((length,), jnp.nan, jnp.float32))
    state, _, losses = jax.lax.while_loop(cond, body, init)
    return state, losses


# One compiled chunk per (shapes, config, convention, chunk length). Params, targets and state are
# arguments; the state's buffers are donated so the image is updated in place on accelerators.
_run_chunk = jax.jit(_chunk, static_argnames=("config", "conv", "length"), donate_argnums=(2,))
_run_chunk_many = jax.jit(
    lambda params, targets, state, n_active, *, config, conv, length: jax.vmap(
        functools.partial(_chunk, config=config, conv=conv, length=length), in_axes=(None, 0, 0, None)
    )(params, targets, state, n_active),
    static_argnames=("config", "conv", "length"),
    donate_argnums=(2,),
)


@dataclasses.dataclass
class Progress:
    """What a callback sees between chunks."""

    iteration: int
    iterations: int
    evaluations: int
    loss: float
    losses: np.ndarray
    state: LoopState
    to_rgb: Callable[[Array], np.ndarray]

    def image(self) -> np.ndarray:
        """The current iterate as RGB [0, 1] (host copy)."""
        return self.to_rgb(self.state.v)

    def best_image(self) -> np.ndarray:
        return self.to_rgb(self.state.best_v)


@dataclasses.dataclass
class Result:
    """A finished (or stopped) run.

    ``image``: the last iterate (EMA of iterates when ``ema_decay`` is set); ``best_image``: the
    lowest-loss iterate (MATLAB's choice, with its quirk under ``select="matlab_best"``);
    ``output``: the one the config selects. ``losses``: total loss per iteration, evaluated at the
    iterate before its update. ``status``: "done", "stopped" (callback asked) or "nonfinite".
    """

    image: np.ndarray
    best_image: np.ndarray
    losses: np.ndarray
    evaluations: int
    iterations: int
    status: str
    config: StyleConfig
    seed: int
    state: Optional[LoopState] = None

    @property
    def output(self) -> np.ndarray:
        return self.best_image if self.config.select in ("best", "matlab_best") else self.image

    @property
    def final_loss(self) -> float:
        finite = self.losses[np.isfinite(self.losses)]
        return float(finite[-1]) if finite.size else float("nan")


def _rgb_host(v: Array, config: StyleConfig, conv: vgg.Convention) -> np.ndarray:
    return np.clip(np.asarray(_to_rgb(v, config, conv)), 0.0, 1.0).astype(np.float32)


def stylize(
    content: ImageLike,
    style: Any,
    params: Any,
    config: StyleConfig,
    *,
    iterations: Optional[int] = None,
    seed: int = 0,
    callback: Optional[Callable[[Progress], Optional[bool]]] = None,
    init_image: Optional[ImageLike] = None,
    convention: Optional[vgg.Convention] = None,
    resume: Optional[LoopState] = None,
    resume_losses: Optional[np.ndarray] = None,
    chunk_size: Optional[int] = None,
    masks: Optional[ImageLike] = None,
    style_masks: Optional[Sequence[Optional[ImageLike]]] = None,
) -> Result:
    """Optimise an image so its VGG features match the content's and its style statistics the style's.

    Args:
      content: H×W×3 RGB in [0, 1] at the working size (the library never resizes).
      style: one array, a sequence (blended), or (array, weight) pairs.
      params: a ``weights.Network`` (or a params dict with ``convention=``).
      config: a ``StyleConfig`` (see ``nst_jax.preset``).
      iterations: overrides ``config.iterations`` (for L-BFGS without line search: evaluations).
      seed: seeds the start-image noise.
      callback: called between chunks with a ``Progress``; returning True stops the run.
      init_image: a start image (RGB [0, 1]) instead of ``config.init``.
      resume: a ``LoopState`` to continue from (see ``Result.state`` and ``checkpoint.py``); the
        run continues to ``iterations`` in total, exactly as an uninterrupted run would.
      resume_losses: the losses recorded before ``resume`` (kept at the head of ``Result.losses``).
      chunk_size: steps per compiled chunk (default ``config.chunk_size``).
      masks, style_masks: spatial control: K×H×W region weights over the content, style k
        painting region k (guided Gram matrices, Gatys et al. 2017; see ``compute_targets``).

    Returns:
      ``Result``.
    """
    p, conv = split_network(params, convention)
    conv = effective_convention(conv, config)
    total = config.iterations if iterations is None else int(iterations)
    if total < 0:
        raise ConfigError(f"iterations must be >= 0; got {total}")
    content = jnp.asarray(content, jnp.float32)
    # Targets with the direct convolutions: computed once, so compiling Winograd for them (seconds)
    # would buy nothing; they agree with Winograd's to ~1e-6. The loop runs run_p.
    targets = compute_targets(_direct(p, conv), conv, content, style, config, masks, style_masks)
    run_p = engine_params(p, config, conv, content.shape)
    images, _ = _normalise_styles(style, config)
    if resume is None:
        v0 = initial_variable(content, images[0], config, conv, jax.random.PRNGKey(seed), init_image)
        state = init_state(v0, config)
    else:
        state = resume
    chunk = max(1, min(chunk_size or config.chunk_size, max(total, 1)))
    history: list[np.ndarray] = [] if resume_losses is None else [np.asarray(resume_losses, np.float32)]
    status = "done"
    to_rgb = functools.partial(_rgb_host, config=config, conv=conv)
    by_evals = config.iteration_unit == "evaluation"
    rnd = config.lbfgs_round

    def count(st: LoopState) -> int:
        return int(st.evals) if by_evals else int(st.step)

    # Rounds (the blog calls SciPy's fmin_l_bfgs_b(maxfun=rnd) repeatedly): each round is a fresh
    # optimiser state; with evaluations as the unit a round keeps stepping while it has made no
    # more than `rnd` evaluations (SciPy's rule, so a round makes rnd + 1 or a few more).
    rounds_total = math.ceil(total / rnd) if rnd else 1
    round_index = min(count(state) // rnd, rounds_total) if rnd else 0
    round_start = count(state)
    done = round_index * rnd if rnd else count(state)
    stop = False
    while not stop and round_index < rounds_total:
        if rnd:
            limit = round_start + rnd + 1 if by_evals else min(round_start + rnd, total)
        else:
            limit = total
        while count(state) < limit:
            c = count(state)
            n = chunk if by_evals else min(chunk, limit - c)
            state, chunk_losses = _run_chunk(run_p, targets, state, jnp.asarray(limit if by_evals else n, jnp.int32),
                                             config=config, conv=conv, length=chunk)
            cl = np.asarray(chunk_losses)
            history.append(cl[~np.isnan(cl)] if by_evals else cl[:n])
            if bool(state.failed):
                status, stop = "nonfinite", True
                break
            if count(state) == c:  # pragma: no cover - nothing left to do within the budget
                break
            done = round_index * rnd + min(rnd, count(state) - round_start) if rnd else count(state)
            if callback is not None:
                losses_so_far = np.concatenate(history)
                prog = Progress(done, total, int(state.evals), float(losses_so_far[-1]), losses_so_far, state, to_rgb)
                if callback(prog):
                    status, stop = "stopped", True
                    break
        round_index += 1
        if rnd and not stop and round_index < rounds_total:
            state = state._replace(opt_state=jax.tree.map(jnp.copy, make_optimizer(config).init(state.v)))
            round_start = count(state)
    losses_all = np.concatenate(history) if history else np.zeros((0,), np.float32)
    final_v = state.ema_v if config.ema_decay is not None else state.v
    if config.clamp and config.variable_space == "rgb":
        final_v = jnp.clip(final_v, 0.0, 1.0)  # the tutorial's "last correction"
    best_v = state.best_v if bool(jnp.isfinite(state.best_loss)) else final_v
    return Result(
        image=to_rgb(final_v),
        best_image=to_rgb(best_v),
        losses=losses_all,
        evaluations=int(state.evals),
        iterations=int(state.step),
        status=status,
        config=config,
        seed=seed,
        state=state,
    )


# --------------------------------------------------------------------------------------------
# many results in one compiled program


@dataclasses.dataclass
class ManyResult:
    """N runs done together. ``images``/``best_images``: N×H×W×3; ``losses``: N×iterations;
    ``evaluations``: per result; ``status``: per result ("done", "stopped", "nonfinite")."""

    images: np.ndarray
    best_images: np.ndarray
    losses: np.ndarray
    evaluations: np.ndarray
    iterations: int
    status: list[str]
    config: StyleConfig
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Result:
        return Result(self.images[i], self.best_images[i], self.losses[i], int(self.evaluations[i]),
                      self.iterations, self.status[i], self.config, self.seeds[i])

    @property
    def outputs(self) -> np.ndarray:
        return self.best_images if self.config.select in ("best", "matlab_best") else self.images


def estimate_bytes_per_result(height: int, width: int, config: StyleConfig) -> int:
    """A rough upper estimate of the memory one result needs while it is optimised.

    VGG19 activations up to conv5_1 are about 320 floats per input pixel; the backward pass keeps
    them and adds as much again for the gradients; L-BFGS keeps ``2 · memory`` image-sized vectors.
    """
    pixels = height * width
    # (remat is not counted as a saving: on XLA's CPU backend it measured no lower peak, BENCHMARKS.md)
    bytes_ = pixels * 320 * 4 * 2 + pixels * 3 * 4 * 8
    if config.optimizer == "lbfgs":
        bytes_ += 2 * config.lbfgs_memory * pixels * 3 * 4
    return int(bytes_)


def free_device_memory(device: Optional[jax.Device] = None) -> Optional[int]:
    """Free bytes on ``device`` (accelerator stats, or available RAM for the CPU); None if unknown."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU devices may not implement it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# What a run holds besides the per-pixel part: weights, Winograd kernels (~0.4 GB), XLA's compiler.
# Measured: peak RSS = ~1.2 GiB + ~5.1 kB/pixel for the default preset on CPU (BENCHMARKS.md), of
# which ~0.4 GiB is the Python process with JAX loaded (not in the free memory any more).
RUN_OVERHEAD_BYTES = 3 * 2**28  # 0.75 GiB


def estimate_run_bytes(height: int, width: int, config: StyleConfig, *,
                       style_shapes: Sequence[tuple[int, int]] = (), batch: int = 1, regions: int = 0,
                       decoded_pixels: int = 0) -> int:
    """Every image-sized thing a run holds, not only the optimisation: what the memory check counts.

    Args:
      height, width: the content's working size.
      config: the run's config (optimiser, iterations).
      style_shapes: each style's working (H, W): its targets come from one forward pass at that size.
      batch: results optimised at once.
      regions: region masks (``--content-mask``): regions × H × W, resized to every layer.
      decoded_pixels: the largest input image in pixels (decoded at full size before resizing).

    Returns:
      Bytes, a rough upper estimate (``estimate_bytes_per_result`` per result, plus the losses
      array, the largest style's forward pass, the decoded and working images and the masks).
    """
    pixels = height * width
    per_result = estimate_bytes_per_result(height, width, config) + 4 * config.iterations  # + the losses
    style_pass = max([h * w * 320 * 4 for h, w in style_shapes], default=0)
    working = 12 * (pixels + sum(h * w for h, w in style_shapes))
    decoded = 24 * decoded_pixels  # Pillow's decode and the float32 copy
    masks = 2 * 4 * regions * pixels
    return int(batch * per_result + style_pass + working + decoded + masks)


def memory_shortfall(height: int, width: int, config: StyleConfig,
                     free: Optional[int] = None, **extent: Any) -> Optional[tuple[int, int, int]]:
    """Whether a run of this size clearly will not fit: None if it fits (or free memory is
    unknown), else ``(bytes needed, bytes free, largest long side that fits)`` at this aspect ratio.

    The need is ``estimate_run_bytes(height, width, config, **extent)`` (styles, batch, masks,
    decoded inputs) plus ``RUN_OVERHEAD_BYTES``, against the device's free memory
    (``free_device_memory``), so a user gets a message before the run (before any image is
    decoded or resized, when the CLI calls it), not an out-of-memory kill in the middle of it.
    """
    free = free_device_memory() if free is None else free
    if free is None:
        return None
    need = estimate_run_bytes(height, width, config, **extent) + RUN_OVERHEAD_BYTES
    if need <= free:
        return None
    batch = int(extent.get("batch", 1))
    per_pixel = batch * estimate_bytes_per_result(height, width, config) / (height * width)
    pixels = max(free - RUN_OVERHEAD_BYTES, 0) / per_pixel
    long_side = max(height, width)
    fits = int(math.sqrt(pixels * long_side / min(height, width))) // 16 * 16
    return need, free, max(fits, 0)


# On a CPU backend, batches larger than this were measured slower per result than running the
# results one after another (BENCHMARKS.md, "Many styles": XLA's CPU batched matmuls, the Gram
# matrices under vmap, lose ~30 %); the cores are busy with one image's convolutions already.
CPU_MAX_BATCH = 4


def default_batch_size(height: int, width: int, config: StyleConfig, n: int) -> int:
    """How many results to optimise at once: what fits in 70% of the free memory, at most ``n``
    (and at most ``CPU_MAX_BATCH`` on a CPU backend)."""
    cap = min(n, CPU_MAX_BATCH) if jax.default_backend() == "cpu" else n
    free = free_device_memory()
    if free is None:
        return cap
    return int(max(1, min(cap, (0.7 * free) // estimate_bytes_per_result(height, width, config))))


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _shard_batch(tree: Any, n: int, devices: Sequence[jax.Device]) -> tuple[Any, int]:
    """Pad the leading (batch) axis to a multiple of the device count and shard it over a mesh."""
    k = len(devices)
    pad = (-n) % k
    if pad:  # repeat the last member; its results are dropped
        tree = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), tree)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return jax.device_put(tree, sharding), pad


def stylize_many(
    content: ImageLike,
    styles: Sequence[Any],
    params: Any,
    config: StyleConfig,
    *,
    seeds: Optional[Sequence[int]] = None,
    iterations: Optional[int] = None,
    callback: Optional[Callable[[Progress], Optional[bool]]] = None,
    convention: Optional[vgg.Convention] = None,
    chunk_size: Optional[int] = None,
    batch_size: Optional[int] = None,
    devices: Optional[Sequence[jax.Device]] = None,
    init_images: Optional[ImageLike] = None,
) -> ManyResult:
    """N style transfers in one compiled program: ``stylize`` vmapped over the targets and the loop state.

    The i-th result equals ``stylize(content_i, styles[i], ..., seed=seeds[i])`` to float32
    rounding. Each style's statistics are computed at the style's own size before batching (Gram
    matrices are C×C whatever the image size), so styles of any size or aspect ratio mix freely and
    each keeps the stroke scale it would have alone. With several devices the batch is sharded over
    a one-axis mesh (padded to a multiple of the device count). Every optimiser works; with the L-BFGS
    zoom line search the batch waits, at each step, for its slowest member's line search.

    Args:
      content: one H×W×3 image (shared) or an N×H×W×3 batch (one per style).
      styles: N styles; each one array, a list (blended) or (array, weight) pairs.
      params, config, iterations, callback, convention, chunk_size: as ``stylize``.
      seeds: one seed per result (default 0 for all).
      batch_size: results optimised at once (default: what fits in memory, see
        ``default_batch_size``); groups run one after another.
      devices: the devices to shard over (default ``jax.local_devices()``).
      init_images: optional N×H×W×3 start images (RGB [0, 1]) instead of ``config.init``.

    Returns:
      ``ManyResult``.
    """
    p, conv = split_network(params, convention)
    conv = effective_convention(conv, config)
    run_p = engine_params(p, config, conv, np.shape(content)[-3:])  # the loop's; targets use direct_p
    direct_p = _direct(p, conv)
    if config.lbfgs_round is not None:
        raise ConfigError("lbfgs_round (L-BFGS in rounds) runs single results; use stylize for it")
    content = jnp.asarray(content, jnp.float32)
    n = len(styles)
    if n == 0:
        raise ConfigError("stylize_many needs at least one style")
    contents = [content[i] for i in range(content.shape[0])] if content.ndim == 4 else [content] * n
    if len(contents) != n:
        raise ConfigError(f"{len(contents)} content images for {n} styles")
    seeds = [0] * n if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ConfigError(f"{len(seeds)} seeds for {n} styles")
    total = config.iterations if iterations is None else int(iterations)
    h, w = contents[0].shape[:2]
    batch = batch_size or default_batch_size(h, w, config, n)
    devices = list(devices or jax.local_devices())
    chunk = max(1, min(chunk_size or config.chunk_size, max(total, 1)))
    to_rgb = jax.jit(jax.vmap(lambda v: jnp.clip(_to_rgb(v, config, conv), 0.0, 1.0)))
    images, bests, all_losses, evals, status = [], [], [], [], []
    done_iterations = 0
    for start in range(0, n, batch):
        idx = list(range(start, min(n, start + batch)))
        targets = _stack([compute_targets(direct_p, conv, contents[i], styles[i], config) for i in idx])
        v0 = []
        for i in idx:
            imgs, _ = _normalise_styles(styles[i], config)
            start = None if init_images is None else init_images[i]
            v0.append(initial_variable(contents[i], imgs[0], config, conv, jax.random.PRNGKey(seeds[i]), start))
        state = _stack([init_state(v, config) for v in v0])
        pad = 0
        if len(devices) > 1:
            (targets, state), pad = _shard_batch((targets, state), len(idx), devices)
            p_dev = jax.device_put(run_p, jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(devices), ("batch",)),
                                                                 jax.sharding.PartitionSpec()))
        else:
            p_dev = run_p
        history: list[np.ndarray] = []
        done, stopped = 0, False
        by_evals = config.iteration_unit == "evaluation"
        while done < total:
            k = min(chunk, total - done)
            state, chunk_losses = _run_chunk_many(p_dev, targets, state, jnp.asarray(total if by_evals else k, jnp.int32),
                                                  config=config, conv=conv, length=chunk)
            # (evaluation budgets: skipped steps record NaN; each member's losses are its steps')
            history.append(np.asarray(chunk_losses)[: len(idx), :k] if not by_evals else np.asarray(chunk_losses)[: len(idx)])
            previous = done
            done = int(np.asarray(state.evals)[: len(idx)].min()) if by_evals else done + k
            failed = np.asarray(state.failed)[: len(idx)]
            if failed.all() or (by_evals and done == previous):
                break
            if callback is not None:
                so_far = np.concatenate(history, axis=1)
                prog = Progress(done, total, int(np.asarray(state.evals)[: len(idx)].sum()),
                                float(np.nanmean(so_far[:, -1])), so_far, state,
                                lambda v: np.asarray(to_rgb(v))[: len(idx)])
                if callback(prog):
                    stopped = True
                    break
        done_iterations = max(done_iterations, int(np.asarray(state.step)[: len(idx)].max()))
        final_v = state.ema_v if config.ema_decay is not None else state.v
        if config.clamp and config.variable_space == "rgb":
            final_v = jnp.clip(final_v, 0.0, 1.0)
        finite_best = np.isfinite(np.asarray(state.best_loss))
        best_v = jnp.where(jnp.asarray(finite_best)[:, None, None, None], state.best_v, final_v)
        images.append(np.asarray(to_rgb(final_v))[: len(idx)])
        bests.append(np.asarray(to_rgb(best_v))[: len(idx)])
        losses_b = np.concatenate(history, axis=1) if history else np.zeros((len(idx), 0), np.float32)
        all_losses.append(losses_b)
        evals.append(np.asarray(state.evals)[: len(idx)])
        failed = np.asarray(state.failed)[: len(idx)]
        status += ["nonfinite" if f else ("stopped" if stopped else "done") for f in failed]
        if stopped:
            break
    width = max(l.shape[1] for l in all_losses)
    losses = np.concatenate([np.pad(l, ((0, 0), (0, width - l.shape[1])), constant_values=np.nan) for l in all_losses])
    return ManyResult(np.concatenate(images), np.concatenate(bests), losses, np.concatenate(evals),
                      done_iterations, status, config, seeds[: len(status)])
