"""One frozen dataclass holds every setting of a run; its defaults are the one place defaults live.

Presets (``presets.py``) are instances of it. Every field can be changed with
``dataclasses.replace``; invalid values fail at construction with a message that lists what is
valid (``ConfigError``, a ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from . import losses, resnet, vgg
from .errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "lbfgs")
ARCHS = vgg.ARCHS + ("resnet50",)
VARIABLE_SPACES = ("network", "rgb")
INITS = ("content", "style", "noise", "randn", "blend")
SELECTS = ("last", "best", "matlab_best")
ITERATION_UNITS = ("step", "evaluation")
SIZE_SIDES = ("long", "height", "width")
STYLE_SIZES = ("content", "scale")
RESAMPLES = ("nearest", "bilinear", "bicubic", "lanczos", "area")
ROUNDINGS = ("round", "floor")
LINESEARCHES = ("none", "zoom")
ADAM_EPS_MODES = ("optax", "matlab")
STYLE_LOSSES = ("gram", "wasserstein")
PRESERVE_COLORS = ("none", "lum", "match", "swap")
PRECISIONS = ("default", "highest", "bf16")
CONV_ALGORITHMS = ("direct", "winograd", "auto")

# Limits the engine has. The step and evaluation counters are int32 in the loop state; a chunk's
# per-step losses are a device buffer of chunk_size floats; an L-BFGS history of lbfgs_memory
# image-sized pairs is preallocated (torch's default is 100, SciPy's 10).
MAX_ITERATIONS = 2**31 - 1
MAX_CHUNK_SIZE = 2**20
MAX_LBFGS_MEMORY = 10_000


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, valid))}; got {value!r}")


def _nonneg(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")


def _positive(name: str, value: float) -> None:
    _nonneg(name, value)
    if value <= 0:
        raise ConfigError(f"{name} must be > 0; got {value!r}")


def _posint(name: str, value, *, allow_zero: bool = False, most: Optional[int] = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"{name} must be an integer {'>= 0' if allow_zero else '> 0'}; got {value!r}")
    if most is not None and value > most:
        raise ConfigError(f"{name} must be at most {most:,}; got {value:,}")


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """Everything that defines a style-transfer run (hashable: it is a static argument under jit).

    Network: ``arch``, ``pooling`` ("max"/"avg"), ``pixel_scale`` (override of the weights' pixel
    scale: neural-style multiplies by 256, not 255).

    Loss: content and style layers with per-layer weights (``None`` = 1 each), term weights,
    the formulas (see ``losses.py``), TV term and the space it is measured in.

    Optimisation: the optimiser and its settings, the space the image variable lives in
    ("network": the preprocessed image, as Keras and MATLAB; "rgb": [0, 1], as the tutorial),
    clamping to the valid pixel range before each evaluation, the iteration count (for L-BFGS
    without line search one iteration is one function evaluation), which iterate is the output,
    the start image, and the number of steps compiled into one chunk.

    Sizes: ``size`` on ``size_side`` (or a fixed ``shape``), how the style image is sized, and
    the resampling filter.
    """

    # network
    arch: str = "vgg19"
    pooling: str = "max"
    pixel_scale: Optional[float] = None
    # content
    content_layers: tuple[str, ...] = ("relu4_2",)
    content_layer_weights: Optional[tuple[float, ...]] = None
    content_weight: float = 1.0
    content_loss: str = "mean"
    # style
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    style_layer_weights: Optional[tuple[float, ...]] = None
    style_weight: float = 1e3
    style_blend_weights: Optional[tuple[float, ...]] = None
    gram_norm: str = "chw"
    style_reduce: str = "mean"
    style_divisor: str = "none"
    style_loss: str = "gram"
    normalize_gradients: bool = False  # neural-style's -normalize_gradients: L1-normalise each loss term's gradient
    # total variation
    tv_weight: float = 0.0
    tv_loss: str = "none"
    tv_space: str = "network"
    # optimisation
    optimizer: str = "adam"
    learning_rate: float = 0.02
    lr_decay_rate: Optional[float] = None
    lr_decay_steps: int = 100
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    adam_eps_mode: str = "optax"
    lbfgs_memory: int = 100
    lbfgs_linesearch: str = "none"
    variable_space: str = "rgb"
    clamp: bool = True
    iterations: int = 500
    iteration_unit: str = "step"  # "evaluation": `iterations` counts function evaluations (SciPy's maxfun)
    lbfgs_round: Optional[int] = None  # restart L-BFGS every this many iterations (SciPy called in rounds)
    select: str = "last"
    ema_decay: Optional[float] = None
    chunk_size: int = 50
    precision: str = "default"
    # "winograd": VGG's wide 3x3 convolutions as Winograd F(4x4, 3x3) (vgg.with_winograd), float32
    # only; "auto": that on a CPU backend in float32, else direct. The seed presets keep "direct".
    conv_algorithm: str = "direct"
    remat: bool = False  # jax.checkpoint per VGG block (for large images on GPUs; on XLA CPU: no saving measured)
    # start image
    init: str = "content"
    init_noise_ratio: float = 0.7
    init_noise_range: int = 20
    init_scale: float = 0.001
    # sizes and colour
    size: Optional[int] = 512
    size_side: str = "long"
    shape: Optional[tuple[int, int]] = None
    style_size: str = "content"
    style_scale: float = 1.0
    resample: str = "bicubic"
    save_rounding: str = "round"
    original_size: bool = False
    preserve_colors: str = "none"

    def __post_init__(self) -> None:
        _choice("arch", self.arch, ARCHS)
        _choice("pooling", self.pooling, vgg.POOLINGS)
        if self.pixel_scale is not None:
            _positive("pixel_scale", self.pixel_scale)
        for field in ("content_layers", "style_layers"):
            layers = getattr(self, field)
            if isinstance(layers, str) or not isinstance(layers, (tuple, list)) or not all(isinstance(x, str) for x in layers):
                raise ConfigError(f"{field} must be a sequence of layer names such as ('relu4_2',); got {layers!r}")
            object.__setattr__(self, field, tuple(layers))
        try:
            if self.arch == "resnet50":
                resnet.validate_layers(self.content_layers + self.style_layers)
            else:
                vgg.validate_layers(self.arch, self.content_layers + self.style_layers)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not self.content_layers and not self.style_layers:
            raise ConfigError("at least one content or style layer is needed")
        for field, layers in (("content_layer_weights", self.content_layers), ("style_layer_weights", self.style_layers)):
            weights = getattr(self, field)
            if weights is None:
                continue
            if not isinstance(weights, (tuple, list)):
                raise ConfigError(f"{field} must be a sequence of numbers or None; got {weights!r}")
            weights = tuple(weights)
            object.__setattr__(self, field, weights)
            if len(weights) != len(layers):
                raise ConfigError(f"{field} has {len(weights)} values for {len(layers)} layers")
            for w in weights:
                _nonneg(field, w)
        if self.style_blend_weights is not None:
            if not isinstance(self.style_blend_weights, (tuple, list)):
                raise ConfigError(f"style_blend_weights must be a sequence of numbers; got {self.style_blend_weights!r}")
            object.__setattr__(self, "style_blend_weights", tuple(self.style_blend_weights))
            for w in self.style_blend_weights:
                _nonneg("style_blend_weights", w)
            if sum(self.style_blend_weights) <= 0:
                raise ConfigError("style_blend_weights must not all be 0")
        for name in ("content_weight", "style_weight", "tv_weight", "learning_rate", "adam_eps",
                     "init_noise_ratio", "init_scale"):
            _nonneg(name, getattr(self, name))
        _positive("learning_rate", self.learning_rate)
        _positive("style_scale", self.style_scale)
        if not 0 <= self.init_noise_ratio <= 1:
            raise ConfigError(f"init_noise_ratio must be in [0, 1]; got {self.init_noise_ratio}")
        for name in ("adam_b1", "adam_b2"):
            v = getattr(self, name)
            _nonneg(name, v)
            if v >= 1:
                raise ConfigError(f"{name} must be in [0, 1); got {v}")
        if self.lr_decay_rate is not None:
            _positive("lr_decay_rate", self.lr_decay_rate)
        if self.ema_decay is not None:
            _nonneg("ema_decay", self.ema_decay)
            if self.ema_decay >= 1:
                raise ConfigError(f"ema_decay must be in [0, 1); got {self.ema_decay}")
        _choice("content_loss", self.content_loss, losses.CONTENT_LOSSES)
        _choice("gram_norm", self.gram_norm, losses.GRAM_NORMS)
        _choice("style_reduce", self.style_reduce, losses.STYLE_REDUCES)
        _choice("style_divisor", self.style_divisor, losses.STYLE_DIVISORS)
        _choice("style_loss", self.style_loss, STYLE_LOSSES)
        _choice("tv_loss", self.tv_loss, losses.TV_LOSSES)
        _choice("tv_space", self.tv_space, VARIABLE_SPACES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("adam_eps_mode", self.adam_eps_mode, ADAM_EPS_MODES)
        _choice("lbfgs_linesearch", self.lbfgs_linesearch, LINESEARCHES)
        _choice("variable_space", self.variable_space, VARIABLE_SPACES)
        _choice("select", self.select, SELECTS)
        _choice("iteration_unit", self.iteration_unit, ITERATION_UNITS)
        if self.lbfgs_round is not None:
            _posint("lbfgs_round", self.lbfgs_round, most=MAX_ITERATIONS)
        _choice("init", self.init, INITS)
        _choice("size_side", self.size_side, SIZE_SIDES)
        _choice("style_size", self.style_size, STYLE_SIZES)
        _choice("resample", self.resample, RESAMPLES)
        _choice("save_rounding", self.save_rounding, ROUNDINGS)
        _choice("preserve_colors", self.preserve_colors, PRESERVE_COLORS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("conv_algorithm", self.conv_algorithm, CONV_ALGORITHMS)
        if self.conv_algorithm == "winograd" and self.precision == "bf16":
            raise ConfigError("conv_algorithm winograd needs float32 (its transforms lose too much in bf16); use direct or auto")
        _posint("iterations", self.iterations, allow_zero=True, most=MAX_ITERATIONS)
        _posint("chunk_size", self.chunk_size, most=MAX_CHUNK_SIZE)
        _posint("lr_decay_steps", self.lr_decay_steps)
        _posint("lbfgs_memory", self.lbfgs_memory, most=MAX_LBFGS_MEMORY)
        _posint("init_noise_range", self.init_noise_range, allow_zero=True)
        if self.size is not None:
            _posint("size", self.size)
            if self.size < 16:
                raise ConfigError(f"size must be at least 16 pixels (VGG pools 4 times before conv5); got {self.size}")
        for name in ("clamp", "original_size", "normalize_gradients", "remat"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if self.shape is not None:
            if not isinstance(self.shape, (tuple, list)):
                raise ConfigError(f"shape must be (height, width); got {self.shape!r}")
            shape = tuple(self.shape)
            object.__setattr__(self, "shape", shape)
            if len(shape) != 2:
                raise ConfigError(f"shape must be (height, width); got {self.shape!r}")
            for s in shape:
                _posint("shape", s)
                if s < 16:
                    raise ConfigError(f"shape sides must be at least 16 pixels; got {shape}")
        if self.size is None and self.shape is None:
            raise ConfigError("give a size or a fixed shape")
        if self.optimizer == "lbfgs" and self.ema_decay is not None:
            raise ConfigError("ema_decay averages iterates of first-order optimisers; use it with sgd or adam")

    @property
    def layer_weights(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(content layer weights, style layer weights) with None replaced by ones."""
        cw = self.content_layer_weights or (1.0,) * len(self.content_layers)
        sw = self.style_layer_weights or (1.0,) * len(self.style_layers)
        return cw, sw

    def replace(self, **changes) -> "StyleConfig":
        """``dataclasses.replace`` with a clear message for unknown field names."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; valid: {', '.join(field_names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(StyleConfig))
