"""Presets: the seed programs as data. Each is a ``StyleConfig``; no preset has a code path of its own.

Sources are the documents in ``shared/seeds`` as summarised in ``shared/REFERENCE.md``. Where a
program's prose and its code disagree, the code is what ran, and that is what is reproduced.
"""

from __future__ import annotations

from .config import StyleConfig
from ..errors import ConfigError

_STYLE5_RELU = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
_STYLE5_CONV = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")

# The Keras example (seed 000; keras.io "Neural style transfer").
_KERAS = StyleConfig(
    arch="vgg19",
    pooling="max",
    content_layers=("relu5_2",),  # block5_conv2 includes its ReLU
    content_weight=2.5e-8,
    content_loss="sum",
    style_layers=_STYLE5_RELU,
    style_layer_weights=(0.2,) * 5,  # style_weight / len(style_layer_names)
    style_weight=1e-6,
    gram_norm="none",
    style_reduce="sum",
    style_divisor="4n2m2_input",  # 4 * 3**2 * (img_nrows * img_ncols)**2: channels hard-coded to 3
    tv_weight=1e-6,
    tv_loss="pow1.25",
    tv_space="network",  # on the preprocessed (BGR, 0-255, mean-subtracted) image
    optimizer="sgd",
    learning_rate=100.0,
    lr_decay_rate=0.96,  # ExponentialDecay(100, decay_steps=100, decay_rate=0.96), not staircase
    lr_decay_steps=100,
    variable_space="network",  # tf.Variable(preprocess_image(...)): the preprocessed image
    clamp=False,
    iterations=5000,  # seed 000's loop (keras.io runs 4000)
    select="last",
    init="content",
    size=400,
    size_side="height",  # img_nrows = 400; img_ncols = int(width * img_nrows / height)
    style_size="content",  # the style image is loaded at the same target_size
    resample="nearest",  # keras.utils.load_img(target_size=...) defaults to nearest
    save_rounding="floor",  # np.clip(x, 0, 255).astype("uint8") truncates
)

PRESETS: dict[str, StyleConfig] = {
    "keras": _KERAS,
    # The lecture notes (seed 004): the same program with decay 0.90, 4000 iterations, 400x600 fixed.
    "keras-lecture": _KERAS.replace(lr_decay_rate=0.90, iterations=4000, size=None, shape=(400, 600)),
    # The PyTorch tutorial "Neural Transfer Using PyTorch" (seed 003).
    "pytorch": StyleConfig(
        arch="vgg19",
        pooling="max",
        content_layers=("conv2_2",),  # the tutorial's conv_4: losses sit after the convolutions, before ReLU
        content_weight=1.0,
        content_loss="mean",  # F.mse_loss
        style_layers=("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"),  # conv_1 .. conv_5
        style_weight=1e6,
        gram_norm="chw",  # G.div(a * b * c * d) with batch a = 1
        style_reduce="mean",  # F.mse_loss(G, target)
        style_divisor="none",
        tv_weight=0.0,
        tv_loss="none",
        optimizer="lbfgs",  # optim.LBFGS defaults: lr 1, history 100, no line search
        learning_rate=1.0,
        lbfgs_memory=100,
        lbfgs_linesearch="none",
        variable_space="rgb",
        clamp=True,  # input_img.data.clamp_(0, 1) at the start of every closure, and once at the end
        # `while run[0] <= num_steps` with num_steps = 300 and 20 closure calls per .step():
        # the loop enters a 16th step at run = 300, so the tutorial evaluates 320 times.
        iterations=320,
        select="last",
        init="content",
        size=None,
        shape=(128, 128),  # imsize = 128 on CPU (512 on GPU: use shape=(512, 512))
        style_size="content",
        resample="bilinear",  # transforms.Resize on a PIL image
    ),
    # MATLAB "Neural Style Transfer Using Deep Learning" (seed 001).
    "matlab": StyleConfig(
        arch="vgg19",
        pooling="avg",  # every max pooling replaced by average pooling
        content_layers=("conv4_2",),
        content_weight=1.0,  # alpha
        content_loss="half_mean",  # 0.5 .* mean((Y^ - Y).^2, "all")
        style_layers=_STYLE5_CONV,
        style_layer_weights=(0.5, 1.0, 1.5, 3.0, 4.0),
        style_weight=1e3,  # beta
        gram_norm="none",
        style_reduce="mean",
        style_divisor="n2m2",  # mean(...) / ((h*w*c)^2): the code, not the prose's (2HWC)^2
        tv_weight=0.0,
        tv_loss="none",
        optimizer="adam",
        learning_rate=2.0,
        adam_b1=0.9,
        adam_b2=0.999,
        adam_eps=1e-8,
        adam_eps_mode="sqrt_v",  # adamupdate: lr * sqrt(1-b2^t)/(1-b1^t) * m ./ (sqrt(v) + eps)
        variable_space="network",  # the mean-subtracted 0-255 image
        clamp=False,
        iterations=2500,
        # `if losses.totalLoss < minimumLoss, dlOutput = dlTransfer` runs after adamupdate: the kept
        # image is the iterate *after* the update whose pre-update loss was lowest (quirk kept).
        select="after_best",
        init="blend",  # 0.7 * randi([-20, 20]) + 0.3 * content, in mean-subtracted space
        init_noise_ratio=0.7,
        init_noise_range=20,
        size=None,
        shape=(384, 512),
        style_size="content",
        resample="bicubic",  # imresize's default
        save_rounding="round",  # uint8() rounds
        original_size=True,  # imresize(transferImage, size(contentImage, [1 2]))
    ),
    # Gatys, Ecker, Bethge (2015/2016). The paper rescales the VGG weights so each filter's mean
    # activation over ImageNet is 1; that needs ImageNet statistics, so nst-jax uses them unscaled.
    "gatys": StyleConfig(
        arch="vgg19",
        pooling="avg",
        content_layers=("relu4_2",),
        content_weight=1.0,  # alpha
        content_loss="half_sum",
        style_layers=_STYLE5_RELU,
        style_layer_weights=(0.2,) * 5,
        style_weight=1e3,  # beta: alpha / beta = 1e-3
        gram_norm="none",
        style_reduce="sum",
        style_divisor="4n2m2",  # 4 N^2 M^2
        tv_weight=0.0,
        tv_loss="none",
        optimizer="lbfgs",
        learning_rate=1.0,
        lbfgs_memory=100,
        lbfgs_linesearch="zoom",
        variable_space="network",
        clamp=False,
        iterations=500,
        select="last",
        init="noise",  # white noise
        size=512,
        size_side="long",
        style_size="content",
        resample="bicubic",
    ),
    # jcjohnson/neural-style (Lua Torch), the reference command-line tool.
    "jcjohnson": StyleConfig(
        arch="vgg19",
        pooling="max",
        pixel_scale=256.0,  # preprocess: img:mul(256.0) before the mean subtraction (not 255)
        content_layers=("relu4_2",),
        content_weight=5.0,
        content_loss="mean",  # nn.MSECriterion
        style_layers=_STYLE5_RELU,
        style_weight=100.0,  # applied to every style layer
        gram_norm="chw",  # G:div(input:nElement())
        style_reduce="mean",
        style_divisor="none",
        tv_weight=1e-3,
        tv_loss="l2",
        tv_space="network",
        optimizer="lbfgs",
        learning_rate=1.0,
        lbfgs_memory=100,
        lbfgs_linesearch="none",
        variable_space="network",
        clamp=False,
        iterations=1000,
        select="last",
        init="randn",  # torch.randn(...):mul(0.001) in preprocessed space
        init_scale=0.001,
        size=512,
        size_side="long",
        style_size="scale",  # style_size = ceil(style_scale * image_size), aspect kept
        style_scale=1.0,
        resample="bilinear",  # image.scale's default
    ),
}

# The blog of seed 002 ("Neural style transfer with pretrained VGG16, VGG19 and ResNet50"): the
# Keras example's *older* program (the one in Chollet's book) run three ways. The formulas are the
# `keras` preset's, quirks included: Gram without normalisation divided by 4 * 3**2 * (H*W)**2 with
# the channel count hard-coded to 3 and H, W the *input's* size for every layer; TV
# sum((a + b)**1.25) on the preprocessed (BGR, 0-255, mean-subtracted) image; the variable is the
# preprocessed image (x = preprocess_image(target_image_path)), never clamped.
#
# Optimisation is SciPy's L-BFGS-B called in rounds:
#     for i in range(iterations):            # iterations = 10
#         x, min_val, info = fmin_l_bfgs_b(evaluator.loss, x, fprime=evaluator.grads, maxfun=10)
# The seed's code says `iterations = 10` and maxfun=10, and its prose agrees ("10 iterations, each
# of 10 gradient-descent steps"). shared/REFERENCE.md's "10 rounds of 20 evaluations" matches
# neither (other versions of this Keras program call fmin_l_bfgs_b with maxfun=20); the seed's
# code is what ran, so: 10 rounds of 10 evaluations = 100 evaluations. Each call is a fresh
# L-BFGS-B, so the optimiser state is reset every round (lbfgs_round=10, counted in evaluations).
# Another schedule: StyleConfig fields iterations=<rounds * maxfun>, lbfgs_round=<maxfun>.
# The blog saves an image after each round: that is the CLI's `--save-every 10`.
# SciPy's maxfun counts every function evaluation, line-search trials included
# (iteration_unit="evaluation"), and it is checked only when an iteration ends (`nfev > maxfun`),
# so a call makes at least maxfun + 1 evaluations; nst-jax likewise finishes the step it started.
# Memory: fmin_l_bfgs_b's default m=10 correction pairs (lbfgs_memory=10).
# Line search: SciPy's L-BFGS-B runs its own More-Thuente search (MINPACK-2 dcsrch inside lnsrlb,
# not scipy.optimize's Python scalar_search_wolfe1/2): strong Wolfe with ftol (c1) 1e-3, gtol (c2)
# 0.9, xtol 0.1, at most maxls=20 trials, along a direction from the bounds machinery (generalised
# Cauchy point, subspace minimisation, projection onto the box: with no bounds, as here, the plain
# L-BFGS direction); first trial step 1/||d|| on a run's first iteration, 1 afterwards; a run also
# stops early on factr (1e7 * eps relative decrease) or pgtol (1e-5). nst-jax uses optax's zoom
# line search (Nocedal & Wright algorithms 3.5/3.6: strong Wolfe with c1 1e-4, c2 0.9, bracketing
# then cubic/quadratic interpolation, plus Hager-Zhang's approximate Wolfe test near convergence),
# initial guess 1 on every step with the first direction scaled by min(1, 1/||g||), at most 20
# trials, no bounds, no early stop. Both accept strong-Wolfe points, but not the same ones, so
# the trajectories differ; tests/test_blog.py compares the final loss with SciPy's on the same
# weights, images and budget rule.
_KERAS_LBFGS = _KERAS.replace(
    content_weight=0.025,
    style_weight=1.0,
    tv_weight=1e-4,
    optimizer="lbfgs",
    learning_rate=1.0,
    lr_decay_rate=None,
    lbfgs_memory=10,  # fmin_l_bfgs_b(m=10), SciPy's default
    lbfgs_linesearch="zoom",
    iteration_unit="evaluation",  # maxfun counts function evaluations
    iterations=100,  # 10 rounds x maxfun=10 (the seed's code)
    lbfgs_round=10,  # each round a fresh fmin_l_bfgs_b
)
PRESETS["keras-lbfgs"] = _KERAS_LBFGS
# Part 2: vgg16.VGG16(include_top=False) with the same layer names (block5_conv2 = relu5_2,
# blockN_conv1 = reluN_1 exist in VGG16 too) and vgg16.preprocess_input (the same Caffe
# convention). The blog "increased style_weight and decreased content_weight" without printing
# the values. We take the smallest round change in that direction: style x2 (2.0), content /2
# (0.0125), i.e. a style:content ratio of 160 instead of 40. Layer counts give no reason for a
# larger factor: the five style layers and relu5_2 have the same widths (64..512) and resolutions
# in both networks, relu1_1..relu3_1 sit at the same depth, relu4_1 and relu5_1 one convolution
# shallower (VGG16's blocks 3-5 have 3 convolutions, VGG19's 4); so the Keras terms keep the same
# order of magnitude and the change is the blog's taste for "more style", not a normalisation.
PRESETS["keras-vgg16"] = _KERAS_LBFGS.replace(arch="vgg16", content_weight=0.0125, style_weight=2.0)
# Part 3: resnet50.ResNet50(include_top=False, pooling="max") with the blog's first-attempt values.
# Layer names are old Keras' (resnet50.py, Keras 2.0-2.2): res5b_branch2a etc. are the Conv2D
# outputs *before* their batch norm and ReLU (see nst_jax/network/resnet.py). pooling="max" adds a
# GlobalMaxPooling2D after res5c, the model's output: the loss reads the named intermediate layers
# only, so it never reaches that head and the setting changes nothing here (our `pooling` field is
# VGG's pooling type, unused by ResNet50). resnet50.preprocess_input is the Caffe convention.
# Keras 2.0-2.2's ResNet50 pools after conv1 without padding (pool1_pad=0 in nst_jax.network.resnet);
# converted files run the current padded pool unless the convention says otherwise.
PRESETS["keras-resnet50"] = _KERAS_LBFGS.replace(
    arch="resnet50",
    content_layers=("res5b_branch2a",),
    style_layers=("res3a_branch2a", "res4a_branch2a", "res5a_branch2a"),
    style_layer_weights=(1.0 / 3,) * 3,  # style_weight / len(style_layers)
    content_weight=0.0001,
    style_weight=400000.0,
    tv_weight=0.0,
    tv_loss="none",  # total_variation_weight = 0
)

# What we recommend for real use: neural-style's proven loss balance on the weights' own pixel
# scale, started from the content image (faster and keeps the structure), L-BFGS without a line
# search (the best result per evaluation among our optimisers, one gradient per iteration), 500
# evaluations at 512 pixels on the long side.
# Ours, not a seed's: free to use the faster Winograd convolutions where they pay (CPU, float32).
PRESETS["default"] = PRESETS["jcjohnson"].replace(pixel_scale=None, init="content", iterations=500, resample="bicubic",
                                                  conv_algorithm="auto")

DESCRIPTIONS: dict[str, str] = {
    "keras": "Keras example (seed 000): SGD on the preprocessed image, Keras' loss normalisations, 5000 its, height 400",
    "keras-lecture": "lecture notes (seed 004): the Keras example with decay 0.90, 4000 its, 400x600",
    "pytorch": "PyTorch tutorial (seed 003): L-BFGS without line search, losses before ReLU, 128x128",
    "matlab": "MATLAB example (seed 001): Adam lr 2, average pooling, best-loss iterate, 384x512",
    "gatys": "Gatys et al. (2015): average pooling, 4N^2M^2 style loss, L-BFGS with line search from noise",
    "jcjohnson": "neural-style (Lua): content 5, style 100, TV 1e-3, L-BFGS 1000 from randn, x256 quirk",
    "keras-lbfgs": "blog (seed 002) part 1: Keras loss, content 0.025, style 1, TV 1e-4, L-BFGS 10 x maxfun=10",
    "keras-vgg16": "blog (seed 002) part 2: keras-lbfgs on VGG16 with style 2, content 0.0125 (our choice)",
    "keras-resnet50": "blog (seed 002) part 3: ResNet50 pre-BN res*_branch2a layers, style 4e5, content 1e-4, no TV",
    "default": "recommended: neural-style's loss balance, from the content image, L-BFGS 500 evaluations, 512 px",
}


def preset(name: str) -> StyleConfig:
    """The named preset's config (override fields with ``dataclasses.replace`` or ``.replace``).

    Args:
      name: one of ``PRESETS``.

    Returns:
      A frozen ``StyleConfig``.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}") from None
