"""PyTorch renditions of the seed programs, in the structure of their original code.

Used by the tests (as independent references for nst-jax's losses and trajectories) and by the
benchmark (as "what a PyTorch user runs"). torch is a test/bench dependency only; nst_jax never
imports this file.

Each rendition takes the same VGG weights as nst-jax (a params dict, HWIO kernels) and builds a
torchvision-style ``features`` ``nn.Sequential`` from them, so both sides compute on identical
numbers.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VGG_CFGS = {  # torchvision's cfgs "E" (VGG19) and "D" (VGG16)
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _conv_names(arch: str) -> list[str]:
    names, block, n = [], 1, 0
    for v in VGG_CFGS[arch]:
        if v == "M":
            block, n = block + 1, 0
        else:
            n += 1
            names.append(f"conv{block}_{n}")
    return names


def arch_of(params: Mapping) -> str:
    return "vgg19" if "conv5_4" in params else "vgg16"


def vgg_features(params: Mapping, pooling: str = "max") -> nn.Sequential:
    """torchvision's ``vgg19().features`` layout (Conv2d, ReLU(inplace), MaxPool2d) with our weights."""
    arch = arch_of(params)
    layers: list[nn.Module] = []
    names = iter(_conv_names(arch))
    cin = 3
    for v in VGG_CFGS[arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
            continue
        conv = nn.Conv2d(cin, v, kernel_size=3, padding=1)
        p = params[next(names)]
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.asarray(p["kernel"], np.float32).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(np.asarray(p["bias"], np.float32).copy()))
        layers += [conv, nn.ReLU(inplace=True)]
        cin = v
    return nn.Sequential(*layers).eval().requires_grad_(False)


def named_outputs(features: nn.Sequential, x: torch.Tensor, wanted: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run a features Sequential on NCHW ``x``; return activations by our names (convB_N/reluB_N/poolB)."""
    out, block, n = {}, 1, 0
    h = x
    deepest = len(features)
    for layer in list(features)[:deepest]:
        if isinstance(layer, nn.Conv2d):
            n += 1
            h = layer(h)
            name = f"conv{block}_{n}"
        elif isinstance(layer, nn.ReLU):
            h = F.relu(h)  # out of place, so earlier outputs stay intact
            name = f"relu{block}_{n}"
        else:
            h = layer(h)
            name = f"pool{block}"
            block, n = block + 1, 0
        if name in wanted:
            out[name] = h
        if len(out) == len(set(wanted)):
            break
    return out


# ---------------------------------------------------------------------------------------------
# Preprocessing as each program does it (from an RGB image in [0, 1], NCHW torch tensor)

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def caffe_preprocess(rgb01: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """keras.applications.vgg19.preprocess_input (mode "caffe"): RGB->BGR, 0-255, minus mean."""
    x = rgb01 * scale
    x = x.flip(1)  # RGB -> BGR on the channel axis
    return x - torch.tensor(CAFFE_MEAN_BGR, dtype=x.dtype).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------
# The PyTorch tutorial (seed 003), verbatim in structure


class ContentLoss(nn.Module):
    def __init__(self, target):
        super().__init__()
        self.target = target.detach()

    def forward(self, input):
        self.loss = F.mse_loss(input, self.target)
        return input


def gram_matrix(input):
    a, b, c, d = input.size()
    features = input.view(a * b, c * d)
    G = torch.mm(features, features.t())
    return G.div(a * b * c * d)


class StyleLoss(nn.Module):
    def __init__(self, target_feature):
        super().__init__()
        self.target = gram_matrix(target_feature).detach()

    def forward(self, input):
        G = gram_matrix(input)
        self.loss = F.mse_loss(G, self.target)
        return input


class Normalization(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def forward(self, img):
        return (img - self.mean) / self.std


TUTORIAL_MEAN = (0.485, 0.456, 0.406)
TUTORIAL_STD = (0.229, 0.224, 0.225)


def get_style_model_and_losses(cnn, normalization_mean, normalization_std, style_img, content_img,
                               content_layers=("conv_4",), style_layers=("conv_1", "conv_2", "conv_3", "conv_4", "conv_5")):
    cnn = copy.deepcopy(cnn)
    normalization = Normalization(normalization_mean, normalization_std)
    content_losses, style_losses = [], []
    model = nn.Sequential(normalization)
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
            layer = nn.ReLU(inplace=False)
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            name = f"pool_{i}"
        else:
            raise RuntimeError(f"Unrecognized layer: {layer.__class__.__name__}")
        model.add_module(name, layer)
        if name in content_layers:
            target = model(content_img).detach()
            content_loss = ContentLoss(target)
            model.add_module(f"content_loss_{i}", content_loss)
            content_losses.append(content_loss)
        if name in style_layers:
            target_feature = model(style_img).detach()
            style_loss = StyleLoss(target_feature)
            model.add_module(f"style_loss_{i}", style_loss)
            style_losses.append(style_loss)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], (ContentLoss, StyleLoss)):
            break
    model = model[: (i + 1)]
    return model, style_losses, content_losses


def tutorial_loss(cnn, content_img, style_img, input_img, style_weight=1e6, content_weight=1.0):
    """The tutorial's closure body without the optimiser: (total, style_score, content_score)."""
    model, style_losses, content_losses = get_style_model_and_losses(
        cnn, TUTORIAL_MEAN, TUTORIAL_STD, style_img, content_img)
    model(input_img)
    style_score = sum(sl.loss for sl in style_losses) * style_weight
    content_score = sum(cl.loss for cl in content_losses) * content_weight
    return style_score + content_score, style_score, content_score


def run_style_transfer(cnn, content_img, style_img, input_img, num_steps=300, style_weight=1e6, content_weight=1,
                       exact_evaluations: bool = False, record: list | None = None):
    """The tutorial's ``run_style_transfer``. ``exact_evaluations`` stops at ``num_steps`` closure
    calls (the tutorial's ``while run[0] <= num_steps`` makes 320 of 300); ``record`` gets each loss."""
    model, style_losses, content_losses = get_style_model_and_losses(
        cnn, TUTORIAL_MEAN, TUTORIAL_STD, style_img, content_img)
    input_img.requires_grad_(True)
    model.requires_grad_(False)
    optimizer = torch.optim.LBFGS([input_img])
    run = [0]
    while (run[0] < num_steps) if exact_evaluations else (run[0] <= num_steps):
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = 0
            content_score = 0
            for sl in style_losses:
                style_score += sl.loss
            for cl in content_losses:
                content_score += cl.loss
            style_score *= style_weight
            content_score *= content_weight
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            if record is not None:
                record.append(float(loss.detach()))
            return style_score + content_score

        if exact_evaluations:
            max_iter = min(20, num_steps - run[0])
            optimizer.param_groups[0]["max_iter"] = max_iter
            optimizer.param_groups[0]["max_eval"] = max_iter * 5 // 4
        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    return input_img


# ---------------------------------------------------------------------------------------------
# The Keras example (seeds 000 / 004), its TensorFlow code transcribed op for op (NHWC)

KERAS_STYLE = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
KERAS_CONTENT = "block5_conv2"


def keras_feature_extractor(features: nn.Sequential) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """``keras.Model(inputs, {layer.name: layer.output})`` for VGG19 notop: NHWC in, NHWC out.
    ``blockB_convN`` outputs include the ReLU."""

    def extractor(x_nhwc: torch.Tensor) -> dict[str, torch.Tensor]:
        want = [f"relu{k[5]}_{k[-1]}" for k in KERAS_STYLE] + ["relu5_2"]
        outs = named_outputs(features, x_nhwc.permute(0, 3, 1, 2), want)
        return {f"block{n[4]}_conv{n[-1]}": v.permute(0, 2, 3, 1) for n, v in outs.items()}

    return extractor


def keras_gram_matrix(x):
    x = x.permute(2, 0, 1)
    features = x.reshape(x.shape[0], -1)
    return features @ features.t()


def keras_compute_loss(extractor, combination_image, base_image, style_reference_image,
                       content_weight=2.5e-8, style_weight=1e-6, total_variation_weight=1e-6):
    img_nrows, img_ncols = combination_image.shape[1], combination_image.shape[2]

    def style_loss(style, combination):
        S = keras_gram_matrix(style)
        C = keras_gram_matrix(combination)
        channels = 3
        size = img_nrows * img_ncols
        return torch.sum(torch.square(S - C)) / (4.0 * (channels**2) * (size**2))

    def content_loss(base, combination):
        return torch.sum(torch.square(combination - base))

    def total_variation_loss(x):
        a = torch.square(x[:, : img_nrows - 1, : img_ncols - 1, :] - x[:, 1:, : img_ncols - 1, :])
        b = torch.square(x[:, : img_nrows - 1, : img_ncols - 1, :] - x[:, : img_nrows - 1, 1:, :])
        return torch.sum(torch.pow(a + b, 1.25))

    input_tensor = torch.cat([base_image, style_reference_image, combination_image], dim=0)
    features = extractor(input_tensor)
    loss = torch.zeros(())
    layer_features = features[KERAS_CONTENT]
    loss = loss + content_weight * content_loss(layer_features[0], layer_features[2])
    for layer_name in KERAS_STYLE:
        layer_features = features[layer_name]
        sl = style_loss(layer_features[1], layer_features[2])
        loss = loss + (style_weight / len(KERAS_STYLE)) * sl
    loss = loss + total_variation_weight * total_variation_loss(combination_image)
    return loss


def keras_sgd_run(extractor, base_image, style_reference_image, iterations, decay_rate=0.96):
    """The example's loop: SGD(ExponentialDecay(100, 100, decay_rate)) on the preprocessed image.
    Returns the loss printed at each iteration (before its update) and the final image."""
    combination_image = base_image.clone()
    losses = []
    for step in range(iterations):
        x = combination_image.clone().requires_grad_(True)
        loss = keras_compute_loss(extractor, x, base_image, style_reference_image)
        (grads,) = torch.autograd.grad(loss, x)
        lr = 100.0 * decay_rate ** (step / 100)
        combination_image = combination_image - lr * grads
        losses.append(float(loss))
    return losses, combination_image


# ---------------------------------------------------------------------------------------------
# MATLAB (seed 001): imageGradients / contentLoss / styleLoss / adamupdate, transcribed


def matlab_gram(feature_map):  # H x W x C
    H, W, C = feature_map.shape
    reshaped = feature_map.reshape(H * W, C)
    return reshaped.t() @ reshaped


def matlab_losses(net_hwc: Callable, dl_transfer, content_features, style_features,
                  content_layers=("conv4_2",), style_layers=("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
                  content_weights=(1.0,), style_weights=(0.5, 1.0, 1.5, 3.0, 4.0), alpha=1.0, beta=1e3):
    tcf = net_hwc(dl_transfer, content_layers)
    tsf = net_hwc(dl_transfer, style_layers)
    c_loss = 0
    for i in range(len(content_features)):
        temp = 0.5 * torch.mean((tcf[i] - content_features[i]) ** 2)
        c_loss = c_loss + content_weights[i] * temp
    s_loss = 0
    for i in range(len(style_features)):
        t, s = tsf[i], style_features[i]
        h, w, c = s.shape
        g_style = matlab_gram(s)
        g_transfer = matlab_gram(t)
        s_loss = s_loss + style_weights[i] * (torch.mean((g_transfer - g_style) ** 2) / ((h * w * c) ** 2))
    return alpha * c_loss + beta * s_loss


def matlab_adamupdate(p, grad, avg, avg_sq, iteration, lr, b1=0.9, b2=0.999, eps=1e-8):
    avg = b1 * avg + (1 - b1) * grad
    avg_sq = b2 * avg_sq + (1 - b2) * grad**2
    bias_correction = math.sqrt(1 - b2**iteration) / (1 - b1**iteration)
    p = p - lr * bias_correction * avg / (torch.sqrt(avg_sq) + eps)
    return p, avg, avg_sq


def hwc_net(features: nn.Sequential) -> Callable:
    """A dlnetwork-like forward: H×W×C mean-subtracted image -> list of H×W×C outputs."""

    def forward(x_hwc, layers):
        outs = named_outputs(features, x_hwc.permute(2, 0, 1)[None], layers)
        return [outs[n][0].permute(1, 2, 0) for n in layers]

    return forward


# ---------------------------------------------------------------------------------------------
# Gatys et al. (the paper's formulas) and neural-style (its Lua modules), on NCHW torch tensors


def gatys_loss(features, x_net, content_net, style_net, alpha=1.0, beta=1e3,
               content_layer="relu4_2", style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")):
    wanted = [content_layer, *style_layers]
    fx = named_outputs(features, x_net, wanted)
    fc = named_outputs(features, content_net, [content_layer])
    fs = named_outputs(features, style_net, style_layers)
    l_content = 0.5 * torch.sum((fx[content_layer] - fc[content_layer]) ** 2)
    l_style = 0
    for name in style_layers:
        _, n, h, w = fx[name].shape
        m = h * w
        Fx = fx[name][0].reshape(n, m)
        Fs = fs[name][0].reshape(n, m)
        G, A = Fx @ Fx.t(), Fs @ Fs.t()
        l_style = l_style + (1 / len(style_layers)) * torch.sum((G - A) ** 2) / (4 * n**2 * m**2)
    return alpha * l_content + beta * l_style


def neural_style_loss(features, x_net, content_net, style_net, content_weight=5.0, style_weight=100.0, tv_weight=1e-3,
                      content_layers=("relu4_2",), style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")):
    """neural_style.lua's ContentLoss (MSE × strength), StyleLoss (Gram / nElement, MSE × strength)
    and TVLoss (whose gradient is that of strength · ½ Σ (x_diff² + y_diff²) on the [:-1, :-1] crop)."""

    def gram(x):  # C x H x W
        c = x.shape[0]
        f = x.reshape(c, -1)
        return (f @ f.t()) / x.numel()

    fx = named_outputs(features, x_net, list(content_layers) + list(style_layers))
    fc = named_outputs(features, content_net, content_layers)
    fs = named_outputs(features, style_net, style_layers)
    loss = 0
    for name in content_layers:
        loss = loss + content_weight * F.mse_loss(fx[name], fc[name])
    for name in style_layers:
        loss = loss + style_weight * F.mse_loss(gram(fx[name][0]), gram(fs[name][0]))
    x = x_net[0]
    x_diff = x[:, :-1, :-1] - x[:, :-1, 1:]
    y_diff = x[:, :-1, :-1] - x[:, 1:, :-1]
    loss = loss + tv_weight * 0.5 * (torch.sum(x_diff**2) + torch.sum(y_diff**2))
    return loss
