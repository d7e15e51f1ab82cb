"""The PyTorch side of ``scripts/benchmark.py``: what a PyTorch user runs for each recipe.

Three structures, all on the same VGG weights (``torch_reference.vgg_features``), images, start
image and iteration count as the nst-jax side:

- ``tutorial``: the PyTorch tutorial's own code (``torch_reference.get_style_model_and_losses``:
  a ``Sequential`` with ``ContentLoss`` / ``StyleLoss`` modules after the convolutions, cut after
  the last loss) and its closure; used for the ``pytorch`` recipe on torchvision-convention
  weights.
- ``PresetLoss``: the same structure as a single module for every other recipe: targets computed
  once, one forward pass per evaluation, the recipe's loss formulas (the ones ``nst_jax.program.losses``
  implements and ``torch_reference`` transcribes from each program). ``torch.compile`` wraps it.
- the Keras example's way: [content, style, result] through VGG as one batch every iteration.
  For the ``keras`` recipes this is ``torch_reference.keras_compute_loss`` itself; for the others
  ``PresetLoss(three_images=True)`` (same formulas, targets recomputed from the batch).

Optimisers are torch's own: ``optim.LBFGS`` (no line search, or ``strong_wolfe`` where the recipe
uses a line search), ``optim.Adam``, ``optim.SGD`` with the recipe's exponential learning-rate
decay, and the MATLAB ``adamupdate`` transcription for the ``matlab`` recipe.

Imported only by benchmark.py's torch child processes; nst_jax never imports torch.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

import torch_reference as ref


# ---------------------------------------------------------------------------------------------
# conventions and layer naming


class Space:
    """The recipe's image variable and its mapping to the network input (NCHW tensors).

    Mirrors ``nst_jax.network.vgg.Convention`` and ``engine.to_network`` / ``engine.clamp``.
    """

    def __init__(self, conv: Any, variable_space: str, device: torch.device):
        self.scale = float(conv.scale)
        self.bgr = conv.channel_order == "BGR"
        self.mean = torch.tensor(conv.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(conv.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.variable_space = variable_space

    def rgb_to_network(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb * self.scale
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    def network_to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.std + self.mean
        if self.bgr:
            y = y.flip(1)
        return y / self.scale

    def to_network(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.variable_space == "network" else self.rgb_to_network(v)

    def clamp_(self, v: torch.Tensor) -> None:
        with torch.no_grad():
            if self.variable_space == "rgb":
                v.clamp_(0, 1)
            else:
                v.copy_(self.rgb_to_network(self.network_to_rgb(v).clamp(0, 1)))


def conv_names(features: nn.Sequential) -> list[str]:
    """Our names of the convolutions of a torchvision ``features``, in order."""
    return [n for n, m in named_layers(features) if isinstance(m, nn.Conv2d)]


def named_layers(features: nn.Sequential, deepest: Optional[str] = None) -> list[tuple[str, nn.Module]]:
    """(our name, module) for each layer of a torchvision ``features`` up to ``deepest`` (all if None)."""
    out, block, n = [], 1, 0
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            n += 1
            name = f"conv{block}_{n}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu{block}_{n}"
            layer = nn.ReLU(inplace=False)
        else:
            name = f"pool{block}"
            block, n = block + 1, 0
        out.append((name, layer))
        if name == deepest:
            return out
    if deepest is not None:
        raise ValueError(f"layer {deepest!r} not in the network")
    return out


# ---------------------------------------------------------------------------------------------
# the recipe's loss as one module (nst_jax.program.losses' formulas, NCHW)


def _gram(f: torch.Tensor, norm: str) -> torch.Tensor:
    _, c, h, w = f.shape
    flat = f.reshape(c, h * w)
    g = flat @ flat.t()
    if norm == "chw":
        g = g / (c * h * w)
    elif norm == "hw":
        g = g / (h * w)
    return g


def _divisor(kind: str, c: int, h: int, w: int, input_hw: tuple[int, int]) -> float:
    if kind == "4n2m2_input":
        return 4.0 * 9 * float(input_hw[0] * input_hw[1]) ** 2
    if kind == "n2m2":
        return float(h * w * c) ** 2
    if kind == "4n2m2":
        return 4.0 * float(c) ** 2 * float(h * w) ** 2
    return 1.0


def _content(fx: torch.Tensor, fc: torch.Tensor, kind: str) -> torch.Tensor:
    sq = (fx - fc) ** 2
    if kind == "sum":
        return sq.sum()
    if kind == "mean":
        return sq.mean()
    if kind == "half_mean":
        return 0.5 * sq.mean()
    return 0.5 * sq.sum()  # half_sum


def _tv(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind in ("pow1.25", "l2"):
        a = (x[:, :, :-1, :-1] - x[:, :, 1:, :-1]) ** 2
        b = (x[:, :, :-1, :-1] - x[:, :, :-1, 1:]) ** 2
        return torch.pow(a + b, 1.25).sum() if kind == "pow1.25" else 0.5 * (a + b).sum()
    if kind == "l1":
        return (x[:, :, 1:] - x[:, :, :-1]).abs().sum() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().sum()
    return x.new_zeros(())


class PresetLoss(nn.Module):
    """``loss(v)`` for a recipe: v in the variable space (NCHW) -> scalar, one forward pass.

    With ``three_images`` the Keras example's structure: [content, style, v] through the network
    as one batch every call, targets taken from the batch (no precomputation).
    ``dtype=torch.bfloat16`` runs the network layers in bfloat16 and the losses in float32, as
    nst-jax's ``precision="bf16"``.
    """

    def __init__(self, features: nn.Sequential, cfg: Any, space: Space, content_rgb: torch.Tensor,
                 style_rgb: torch.Tensor, *, three_images: bool = False, dtype: torch.dtype = torch.float32):
        super().__init__()
        if cfg.style_loss != "gram":
            raise NotImplementedError("the torch side implements Gram style losses only")
        self.cfg, self.space, self.three, self.dtype = cfg, space, three_images, dtype
        order = [n for n, _ in named_layers(features)]
        wanted = list(dict.fromkeys(cfg.content_layers + cfg.style_layers))
        deepest = max(wanted, key=order.index)
        layers = named_layers(features, deepest)
        self.names = [n for n, _ in layers]
        self.body = nn.Sequential(*[m for _, m in layers]).to(dtype)
        self.wanted = set(wanted)
        cw, sw = cfg.layer_weights
        self.content_w = dict(zip(cfg.content_layers, cw))
        self.style_w = dict(zip(cfg.style_layers, sw))
        with torch.no_grad():
            self.content_net = space.rgb_to_network(content_rgb)
            self.style_net = space.rgb_to_network(style_rgb)
            if not three_images:
                fc = self.features(self.content_net)
                fs = self.features(self.style_net)
                self.content_t = {n: fc[n] for n in cfg.content_layers}
                self.style_t = {n: _gram(fs[n], cfg.gram_norm) for n in cfg.style_layers}

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        h = x.to(self.dtype)
        for name, layer in zip(self.names, self.body):
            h = layer(h)
            if name in self.wanted:
                out[name] = h.float()
        return out

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        xn = self.space.to_network(v)
        if self.three:
            f = self.features(torch.cat([self.content_net, self.style_net, xn], 0))
            fx = {n: t[2:3] for n, t in f.items()}
            content_t = {n: f[n][0:1] for n in cfg.content_layers}
            style_t = {n: _gram(f[n][1:2], cfg.gram_norm) for n in cfg.style_layers}
        else:
            fx, content_t, style_t = self.features(xn), self.content_t, self.style_t
        loss = xn.new_zeros(())
        for name in cfg.content_layers:
            loss = loss + cfg.content_weight * self.content_w[name] * _content(fx[name], content_t[name], cfg.content_loss)
        input_hw = (xn.shape[2], xn.shape[3])
        for name in cfg.style_layers:
            f = fx[name]
            _, c, h, w = f.shape
            sq = (_gram(f, cfg.gram_norm) - style_t[name]) ** 2
            raw = (sq.sum() if cfg.style_reduce == "sum" else sq.mean()) / _divisor(cfg.style_divisor, c, h, w, input_hw)
            loss = loss + cfg.style_weight * self.style_w[name] * raw
        if cfg.tv_weight and cfg.tv_loss != "none":
            tv_in = xn if cfg.tv_space == "network" else self.space.network_to_rgb(xn)
            loss = loss + cfg.tv_weight * _tv(tv_in, cfg.tv_loss)
        return loss


# ---------------------------------------------------------------------------------------------
# the tutorial's model (pytorch recipe) as a loss function


class TutorialLoss:
    """The tutorial's ``get_style_model_and_losses`` model and its closure's loss."""

    def __init__(self, features: nn.Sequential, cfg: Any, content_rgb: torch.Tensor, style_rgb: torch.Tensor):
        names = conv_names(features)
        device = content_rgb.device
        # built on the CPU (the tutorial's Normalization holds plain tensors), then moved
        self.model, self.style_losses, self.content_losses = ref.get_style_model_and_losses(
            features.cpu(), ref.TUTORIAL_MEAN, ref.TUTORIAL_STD, style_rgb.cpu(), content_rgb.cpu(),
            content_layers=tuple(f"conv_{names.index(n) + 1}" for n in cfg.content_layers),
            style_layers=tuple(f"conv_{names.index(n) + 1}" for n in cfg.style_layers))
        self.model.requires_grad_(False).to(device)
        for m in self.model.modules():
            for attr in ("mean", "std", "target"):
                if isinstance(getattr(m, attr, None), torch.Tensor):
                    setattr(m, attr, getattr(m, attr).to(device))
        self.style_weight, self.content_weight = cfg.style_weight, cfg.content_weight

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.model(v)
        style_score = 0
        content_score = 0
        for sl in self.style_losses:
            style_score += sl.loss
        for cl in self.content_losses:
            content_score += cl.loss
        return style_score * self.style_weight + content_score * self.content_weight


def tutorial_applies(cfg: Any, conv: Any) -> bool:
    """The tutorial's own code computes this recipe: its layers, formulas and convention."""
    return (cfg.variable_space == "rgb" and conv.channel_order == "RGB" and conv.scale == 1.0
            and tuple(conv.mean) == ref.TUTORIAL_MEAN and tuple(conv.std) == ref.TUTORIAL_STD
            and all(n.startswith("conv") for n in cfg.content_layers + cfg.style_layers)
            and cfg.gram_norm == "chw" and cfg.style_reduce == "mean" and cfg.style_divisor == "none"
            and cfg.content_loss == "mean" and cfg.tv_weight == 0 and cfg.pooling == "max"
            and cfg.content_layer_weights is None and cfg.style_layer_weights is None and cfg.style_loss == "gram")


# ---------------------------------------------------------------------------------------------
# the Keras example's own loss (keras recipes), on NHWC preprocessed images


class KerasWayLoss:
    """``torch_reference.keras_compute_loss``: [content, style, result] through VGG every call."""

    def __init__(self, features: nn.Sequential, cfg: Any, space: Space, content_rgb, style_rgb):
        self.extractor = ref.keras_feature_extractor(features)
        self.base = space.rgb_to_network(content_rgb).permute(0, 2, 3, 1).contiguous()
        self.style = space.rgb_to_network(style_rgb).permute(0, 2, 3, 1).contiguous()
        self.cfg = cfg

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return ref.keras_compute_loss(self.extractor, v.permute(0, 2, 3, 1), self.base, self.style,
                                      content_weight=self.cfg.content_weight, style_weight=self.cfg.style_weight,
                                      total_variation_weight=self.cfg.tv_weight)


def keras_way_exact(cfg: Any) -> bool:
    """The recipe is the Keras example's loss, so keras_compute_loss itself applies."""
    return (cfg.style_divisor == "4n2m2_input" and cfg.tv_loss == "pow1.25" and cfg.content_layers == ("relu5_2",)
            and cfg.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
            and cfg.variable_space == "network" and cfg.tv_space == "network" and cfg.gram_norm == "none"
            and cfg.style_reduce == "sum" and cfg.content_loss == "sum" and cfg.pooling == "max")


# ---------------------------------------------------------------------------------------------
# optimisation loops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_loop(loss_fn: Callable[[torch.Tensor], torch.Tensor], cfg: Any, space: Space, v0: torch.Tensor,
             iterations: int, device: torch.device) -> dict:
    """Optimise from ``v0`` for ``iterations`` (L-BFGS without line search: function evaluations).

    Returns wall time, evaluations and the loss of every evaluation (at the iterate before its
    update, as nst-jax records it).
    """
    v = v0.clone().to(device).requires_grad_(True)
    losses: list[torch.Tensor] = []
    evals = [0]
    clamp = cfg.clamp
    _sync(device)
    t0 = time.perf_counter()
    if cfg.optimizer == "lbfgs":
        zoom = cfg.lbfgs_linesearch == "zoom"
        opt = torch.optim.LBFGS([v], lr=cfg.learning_rate, max_iter=20, history_size=cfg.lbfgs_memory,
                                line_search_fn="strong_wolfe" if zoom else None)

        def closure():
            if clamp and not zoom:
                space.clamp_(v)
            opt.zero_grad()
            loss = loss_fn(v)
            loss.backward()
            evals[0] += 1
            losses.append(loss.detach())
            return loss

        if zoom:  # iterations = L-BFGS steps; torch counts its own evaluations
            opt.param_groups[0]["max_iter"] = iterations
            opt.param_groups[0]["max_eval"] = 10 * iterations + 10
            opt.param_groups[0]["tolerance_change"] = 0.0
            opt.param_groups[0]["tolerance_grad"] = 0.0
            opt.step(closure)
        else:
            while evals[0] < iterations:  # the tutorial's loop, stopped at exactly `iterations` closures
                max_iter = min(20, iterations - evals[0])
                opt.param_groups[0]["max_iter"] = max_iter
                opt.param_groups[0]["max_eval"] = max_iter * 5 // 4
                opt.step(closure)
        if clamp:
            space.clamp_(v)
    else:
        matlab = cfg.optimizer == "adam" and cfg.adam_eps_mode == "sqrt_v"
        if cfg.optimizer == "adam" and not matlab:
            opt = torch.optim.Adam([v], lr=cfg.learning_rate, betas=(cfg.adam_b1, cfg.adam_b2), eps=cfg.adam_eps)
        elif cfg.optimizer == "sgd":
            opt = torch.optim.SGD([v], lr=cfg.learning_rate)
        else:
            opt = None
            avg = torch.zeros_like(v)
            avg_sq = torch.zeros_like(v)
        for step in range(iterations):
            lr = cfg.learning_rate
            if cfg.lr_decay_rate is not None:  # optax.exponential_decay, not staircase
                lr = cfg.learning_rate * cfg.lr_decay_rate ** (step / cfg.lr_decay_steps)
            if clamp:
                space.clamp_(v)
            if opt is not None:
                opt.param_groups[0]["lr"] = lr
                opt.zero_grad()
                loss = loss_fn(v)
                loss.backward()
                opt.step()
            else:  # MATLAB's adamupdate (torch_reference.matlab_adamupdate)
                (grad,) = torch.autograd.grad(loss := loss_fn(v), v)
                with torch.no_grad():
                    new, avg, avg_sq = ref.matlab_adamupdate(v.detach(), grad, avg, avg_sq, step + 1, lr,
                                                             cfg.adam_b1, cfg.adam_b2, cfg.adam_eps)
                    v.copy_(new)
            losses.append(loss.detach())
            evals[0] += 1
    _sync(device)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "evaluations": evals[0], "iterations": iterations,
            "losses": [float(x) for x in losses], "image": v.detach()}
