"""One frozen dataclass holds every setting of a run; its fields are the one place names, defaults and help live.

Presets (``presets.py``) are instances of it. Every field can be changed with
``StyleConfig.replace``; invalid values fail at construction with a message that lists what is
valid (``ConfigError``, a ``ValueError``). The CLI's options and ``--set`` are generated from the
fields' metadata (``cli.py``).

Each field belongs to one of four parts, by what changing it changes:

* **program** (``Program``, static under ``jit``): network structure, loss formulas, optimiser kind
  and structural sizes, chunk length. The only part that keys a compilation.
* **values** (``Values``, a pytree of float32 arrays, traced): every number in a formula (weights,
  learning rate and schedule, Adam's constants, EMA decay, start-noise constants). Changing one never
  recompiles, and a batch of them runs as one vmapped program (``stylize_many(values=...)``).
* **run** (plain Python): iterations, the start image kind, L-BFGS rounds; the seed, callbacks and
  save cadence are arguments of ``stylize``.
* **pictures** (the CLI and ``image`` side; the engine never sees them): working size, resampling,
  rounding, original size, colour preservation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import numpy as np

from . import losses, optimizers
from ..network import backbones as network, vgg
from ..errors import ConfigError

OPTIMIZERS = tuple(optimizers.OPTIMIZERS)  # the optimisers' table
ARCHS = tuple(network.NETWORKS)  # the networks' table
VARIABLE_SPACES = ("network", "rgb")
INITS = ("content", "style", "noise", "randn", "blend")
NOISE_INITS = ("noise", "randn", "blend")  # the start images a seed changes
SELECTS = ("last", "best", "after_best")
ITERATION_UNITS = ("step", "evaluation")
SIZE_SIDES = ("long", "height", "width")
STYLE_SIZES = ("content", "scale")
RESAMPLES = ("nearest", "bilinear", "bicubic", "lanczos", "area")
ROUNDINGS = ("round", "floor")
LINESEARCHES = ("none", "zoom")
ADAM_EPS_MODES = ("sqrt_vhat", "sqrt_v")
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


PROGRAM, VALUES, RUN, PICTURES = "program", "values", "run", "pictures"
PARTS = (PROGRAM, VALUES, RUN, PICTURES)

# Option values are named after the formula they compute. The names of the programs they came
# from (0.x releases) are still accepted and mean the same formula: ``StyleConfig`` turns them into
# the new name, so a config's value is always the formula's name.
ALIASES: dict[str, dict[str, str]] = {
    "style_divisor": {"gatys": "4n2m2", "matlab": "n2m2", "keras": "4n2m2_input"},
    "tv_loss": {"keras": "pow1.25"},
    "adam_eps_mode": {"optax": "sqrt_vhat", "matlab": "sqrt_v"},
    "select": {"matlab_best": "after_best"},
}


def _f(default: Any, part: str, help: str, *, choices: Optional[Sequence[Any]] = None, kind: Optional[str] = None,
       option: Union[None, str, tuple[str, ...]] = None, metavar: Optional[str] = None, sweep: bool = False) -> Any:
    """A config field with its part, help text and CLI facts in its metadata.

    Args:
      default: the default value.
      part: PROGRAM, VALUES, RUN or PICTURES.
      help: one line for ``--help`` and ``nst-jax presets``.
      choices: the valid values of a name field.
      kind: how text parses (``cli.parse_field``): "float", "int", "floats", "names", "shape"; by
        default the default's type.
      option: the CLI option(s) that set it directly (every field is also ``--set FIELD=VALUE``).
      metavar: the option's placeholder in ``--help``.
      sweep: the option takes a comma list, run as one vmapped sweep (``cli``, ``--grid``).
    """
    if kind is None:
        kind = "bool" if isinstance(default, bool) else type(default).__name__ if default is not None else "str"
    meta = dict(part=part, help=help, choices=tuple(choices) if choices is not None else None, kind=kind,
                option=(option,) if isinstance(option, str) else option, metavar=metavar, sweep=sweep)
    return dataclasses.field(default=default, metadata=meta)


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
    """Everything that defines a style-transfer run: a preset is one of these (frozen, hashable).

    The engine never takes it whole under ``jit``: ``program()`` is the static part, ``values()``
    the traced one (see the module docstring for the four parts).

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

    # network (program)
    arch: str = _f("vgg19", PROGRAM, "the feature network", choices=ARCHS, option="--arch")
    pooling: str = _f("max", PROGRAM, "VGG's pooling: max, or avg (Gatys, MATLAB)", choices=vgg.POOLINGS,
                      option="--pooling")
    pixel_scale: Optional[float] = _f(None, PROGRAM, "override the weights' 0-255 pixel scale (neural-style: 256)",
                                      kind="float")
    # content
    content_layers: tuple[str, ...] = _f(("relu4_2",), PROGRAM, "content layers, e.g. relu4_2", kind="names",
                                         option="--content-layers", metavar="L1,L2")
    content_layer_weights: Optional[tuple[float, ...]] = _f(None, VALUES, "a weight per content layer (default 1 each)",
                                                            kind="floats", option="--content-layer-weights",
                                                            metavar="W1,W2")
    content_weight: float = _f(1.0, VALUES, "weight of the content term", option="--content-weight", sweep=True)
    content_loss: str = _f("mean", PROGRAM, "content formula: sum, mean, half_mean, half_sum of squared differences",
                           choices=losses.CONTENT_LOSSES)
    # style
    style_layers: tuple[str, ...] = _f(("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), PROGRAM,
                                       "style layers, e.g. relu1_1,relu2_1,relu3_1", kind="names",
                                       option="--style-layers", metavar="L1,L2,...")
    style_layer_weights: Optional[tuple[float, ...]] = _f(None, VALUES, "a weight per style layer (default 1 each)",
                                                          kind="floats", option="--style-layer-weights",
                                                          metavar="W1,W2,...")
    style_weight: float = _f(1e3, VALUES, "weight of the style term", option="--style-weight", sweep=True)
    style_blend_weights: Optional[tuple[float, ...]] = _f(
        None, VALUES, "blend several styles into one result with these weights (as neural-style)", kind="floats",
        option="--style-blend-weights", metavar="W1,W2,...")
    gram_norm: str = _f("chw", PROGRAM, "Gram matrix divided by: none, chw (C·H·W), hw (H·W)", choices=losses.GRAM_NORMS)
    style_reduce: str = _f("mean", PROGRAM, "sum or mean of a layer's squared Gram differences",
                           choices=losses.STYLE_REDUCES)
    style_divisor: str = _f("none", PROGRAM, "a layer's style term divided by (N channels, M = H·W): none; "
                            "4n2m2 4·N²·M² (Gatys); n2m2 (N·M)² (MATLAB); 4n2m2_input 4·3²·(input H·W)² "
                            "(Keras)", choices=losses.STYLE_DIVISORS)
    style_loss: str = _f("gram", PROGRAM, "style statistic: gram, or wasserstein (Gaussian W2, crowsonkb)",
                         choices=STYLE_LOSSES, option="--style-loss")
    normalize_gradients: bool = _f(False, PROGRAM, "L1-normalise each loss term's gradient "
                                   "(neural-style's -normalize_gradients)", option="--normalize-gradients")
    # total variation
    tv_weight: float = _f(0.0, VALUES, "weight of the total-variation term", option="--tv-weight", sweep=True)
    tv_loss: str = _f("none", PROGRAM, "total variation: pow1.25 Σ(dx²+dy²)^1.25 (Keras); l2 ½Σ(dx²+dy²) "
                      "(neural-style); l1 Σ|dx|+|dy| (neural-style-pt)", choices=losses.TV_LOSSES)
    tv_space: str = _f("network", PROGRAM, "TV measured on the network input or on RGB [0, 1]", choices=VARIABLE_SPACES)
    # video (Ruder et al. 2016): the weight of the temporal term, used when a run is given a
    # temporal target (``stylize(temporal=...)``: the previous stylised frame warped, and its mask)
    # One unit: a masked mean squared difference of one level² on the network's input (0-255 for
    # Caffe weights), Ruder et al.'s units; 1e3 is their artistic_video.lua default (next to
    # neural-style's content 5 and style 100, the default preset's balance).
    temporal_weight: float = _f(1000.0, VALUES, "video: weight of the temporal term (masked mean squared "
                                "difference to the earlier stylised frames, warped by the flow, on the network's "
                                "input: 0-255 levels for Caffe weights)", option="--temporal-weight")
    # optimisation
    optimizer: str = _f("adam", PROGRAM, "the optimiser", choices=OPTIMIZERS, option="--optimizer")
    learning_rate: float = _f(0.02, VALUES, "step size (L-BFGS without line search: torch's lr)",
                              option=("--lr", "--learning-rate"), sweep=True)
    lr_decay_rate: Optional[float] = _f(None, VALUES, "exponential decay: lr · rate^(step / lr_decay_steps)",
                                        kind="float")
    lr_decay_steps: int = _f(100, VALUES, "steps over which the learning rate decays by lr_decay_rate")
    adam_b1: float = _f(0.9, VALUES, "Adam's first-moment decay")
    adam_b2: float = _f(0.999, VALUES, "Adam's second-moment decay")
    adam_eps: float = _f(1e-8, VALUES, "Adam's epsilon")
    adam_eps_mode: str = _f("sqrt_vhat", PROGRAM, "where Adam's eps enters: sqrt_vhat m̂/(sqrt(v̂) + eps) (optax, "
                            "torch) or sqrt_v (sqrt(v) + eps, bias correction in the step: MATLAB)",
                            choices=ADAM_EPS_MODES)
    lbfgs_memory: int = _f(100, PROGRAM, "L-BFGS history pairs")
    lbfgs_linesearch: str = _f("none", PROGRAM, "L-BFGS line search", choices=LINESEARCHES, option="--linesearch")
    variable_space: str = _f("rgb", PROGRAM, "the optimised variable: the network input (Keras, MATLAB) or "
                             "RGB [0, 1] (the tutorial)", choices=VARIABLE_SPACES)
    clamp: bool = _f(True, PROGRAM, "clamp to the valid pixel range before each evaluation")
    iterations: int = _f(500, RUN, "steps (for L-BFGS without line search: function evaluations)",
                         option="--iterations")
    iteration_unit: str = _f("step", PROGRAM, "what iterations count: steps, or function evaluations "
                             "(SciPy's maxfun)", choices=ITERATION_UNITS)
    lbfgs_round: Optional[int] = _f(None, RUN, "restart L-BFGS every this many iterations (SciPy called in rounds)",
                                    kind="int")
    select: str = _f("last", PROGRAM, "the output: last iterate, best (lowest loss), or after_best (the "
                     "iterate after the lowest-loss one: MATLAB's off-by-one)", choices=SELECTS)
    ema_decay: Optional[float] = _f(None, VALUES, "average the iterates (e.g. 0.99); sgd/adam only", kind="float",
                                    option="--ema")
    chunk_size: int = _f(50, PROGRAM, "steps per compiled chunk (progress updates between chunks)",
                         option="--chunk-size")
    precision: str = _f("default", PROGRAM, "convolution precision", choices=PRECISIONS, option="--precision")
    # "winograd": VGG's wide 3x3 convolutions as Winograd F(4x4, 3x3) (vgg.with_winograd), float32
    # only; "auto": that on a CPU backend in float32, else direct. The seed presets keep "direct".
    conv_algorithm: str = _f("direct", PROGRAM, "VGG convolutions: direct, winograd (faster on CPUs for wide "
                             "layers), auto (winograd on CPU)", choices=CONV_ALGORITHMS, option="--conv")
    remat: bool = _f(False, PROGRAM, "jax.checkpoint per VGG block (recompute activations in the backward pass); "
                     "meant for large images on GPUs: on CPUs it measured slower and no smaller", option="--remat")
    # start image (the run: computed once before the loop)
    init: str = _f("content", RUN, "the start image", choices=INITS)
    init_noise_ratio: float = _f(0.7, VALUES, "blend start: weight of the noise")
    init_noise_range: int = _f(20, RUN, "blend start: integer noise in -range..range")
    init_scale: float = _f(0.001, VALUES, "randn start: standard deviation in network units")
    # sizes and colour (the pictures: the engine never sees these)
    size: Optional[int] = _f(512, PICTURES, "long side of the working image in pixels (aspect ratio kept)",
                             kind="int")
    size_side: str = _f("long", PICTURES, "which side size measures", choices=SIZE_SIDES)
    shape: Optional[tuple[int, int]] = _f(None, PICTURES, "fixed working size HxW", kind="shape")
    style_size: str = _f("content", PICTURES, "style resized to the content's size, or by style_scale",
                         choices=STYLE_SIZES)
    style_scale: float = _f(1.0, PICTURES, "style size relative to the content's working size")
    resample: str = _f("bicubic", PICTURES, "resampling filter", choices=RESAMPLES)
    save_rounding: str = _f("round", PICTURES, "float to 8-bit: round, or floor (Keras' astype('uint8') truncates)",
                            choices=ROUNDINGS)
    original_size: bool = _f(False, PICTURES, "resize the result back to the content image's size",
                             option="--original-size")
    preserve_colors: str = _f("none", PICTURES, "keep the content's colours: lum = luminance-only transfer, "
                              "match = recolour the style first, swap = take the content's chroma afterwards",
                              choices=PRESERVE_COLORS, option="--preserve-colors")

    def __post_init__(self) -> None:
        # one check a part of the config, in this order (the first problem found is the one reported)
        _check_network(self)
        _check_weights(self)
        _check_numbers(self)
        _check_choices(self)
        _check_sizes(self)

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

    def program(self) -> Any:
        """The static ``Program`` of this config: what keys compilation."""
        return _program(self)

    def values(self) -> Values:
        """The traced ``Values`` of this config (float32 arrays)."""
        return _values(self)

    def part(self, part: str) -> dict[str, Any]:
        """The fields of one part (PROGRAM, VALUES, RUN, PICTURES) as a dict."""
        return {f.name: getattr(self, f.name) for f in fields_of(part)}

    def sweep(self, **lists: Sequence[Any]) -> list["StyleConfig"]:
        """One config per combination of the given value fields (the product, first field slowest).

        Args:
          lists: VALUES field name -> sequence of values, e.g. ``style_weight=[1e2, 1e3]``.

        Returns:
          The configs, all with this config's program (``stylize_many(configs=...)`` runs them as
          one compiled program).
        """
        for name in lists:
            if name not in {f.name for f in fields_of(VALUES)}:
                raise ConfigError(f"only value fields can be swept ({', '.join(f.name for f in fields_of(VALUES))}); "
                                  f"got {name!r}")
        names = list(lists)
        return [self.replace(**dict(zip(names, combo))) for combo in itertools.product(*(lists[n] for n in names))]


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(StyleConfig))


def fields_of(part: str) -> tuple[dataclasses.Field, ...]:
    """The StyleConfig fields of one part (PROGRAM, VALUES, RUN or PICTURES)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}; got {part!r}")
    return tuple(f for f in dataclasses.fields(StyleConfig) if f.metadata["part"] == part)


# The program: every static fact the compiled loop depends on, and nothing else (hashable; two
# configs that differ only in values, run settings or pictures give equal programs, so they share one
# compiled chunk). Generated from the fields marked PROGRAM, plus two switches whose *presence* is
# structure while their numbers are values: an EMA of the iterates, and a decaying learning rate.
Program = dataclasses.make_dataclass(
    "Program",
    [(f.name, f.type, dataclasses.field(default=f.default)) for f in fields_of(PROGRAM)]
    + [("ema", "bool", dataclasses.field(default=False)), ("lr_decay", "bool", dataclasses.field(default=False))],
    frozen=True,
    namespace={"__doc__": "The static part of a StyleConfig (build it with ``StyleConfig.program()``)."},
)
Program.__module__ = __name__


# A number of the values: a float32 host or device array (a tracer inside jit).
ArrayLike = Union[np.ndarray, jax.Array]


class Values(NamedTuple):
    """The traced part of a StyleConfig: every number in a formula, as float32 arrays.

    A pytree: pass it to jitted functions as an argument (changing a number never recompiles) and
    stack several to batch them (``stylize_many``). Build it with ``StyleConfig.values()``.
    Per-layer weights are vectors, one entry per layer of the program. Fields unused by the program
    (Adam's constants under L-BFGS, the EMA decay without an EMA) are carried and ignored.
    """

    content_weight: ArrayLike
    style_weight: ArrayLike
    tv_weight: ArrayLike
    content_layer_weights: ArrayLike  # (len(content_layers),)
    style_layer_weights: ArrayLike  # (len(style_layers),)
    learning_rate: ArrayLike
    lr_decay_rate: ArrayLike  # 1 without decay
    lr_decay_steps: ArrayLike
    adam_b1: ArrayLike
    adam_b2: ArrayLike
    adam_eps: ArrayLike
    # log(b1), log(b2) computed in float64 on the host: MATLAB's bias correction 1 - b^t needs them
    # to ~1e-8 absolute, which log(float32(b)) misses (0.999 is not exact in binary).
    adam_log_b1: ArrayLike
    adam_log_b2: ArrayLike
    ema_decay: ArrayLike  # 0 without an EMA
    init_noise_ratio: ArrayLike
    init_scale: ArrayLike
    temporal_weight: ArrayLike


def _values(config: "StyleConfig") -> Values:
    def f32(x: Any) -> np.ndarray:  # host arrays: no device work until used
        with np.errstate(over="ignore"):  # a weight beyond float32 becomes inf: the run says so
            return np.asarray(x, np.float32)

    cw, sw = config.layer_weights
    return Values(
        content_weight=f32(config.content_weight),
        style_weight=f32(config.style_weight),
        tv_weight=f32(config.tv_weight),
        content_layer_weights=f32(cw).reshape(len(cw)),
        style_layer_weights=f32(sw).reshape(len(sw)),
        learning_rate=f32(config.learning_rate),
        lr_decay_rate=f32(1.0 if config.lr_decay_rate is None else config.lr_decay_rate),
        lr_decay_steps=f32(config.lr_decay_steps),
        adam_b1=f32(config.adam_b1),
        adam_b2=f32(config.adam_b2),
        adam_eps=f32(config.adam_eps),
        adam_log_b1=f32(math.log(config.adam_b1) if config.adam_b1 > 0 else -np.inf),
        adam_log_b2=f32(math.log(config.adam_b2) if config.adam_b2 > 0 else -np.inf),
        ema_decay=f32(0.0 if config.ema_decay is None else config.ema_decay),
        init_noise_ratio=f32(config.init_noise_ratio),
        init_scale=f32(config.init_scale),
        temporal_weight=f32(config.temporal_weight),
    )


def stack_values(values: Sequence[Values]) -> Values:
    """N ``Values`` as one with a leading batch axis (what ``stylize_many`` vmaps over)."""
    return Values(*(np.stack([np.asarray(getattr(v, name)) for v in values]) for name in Values._fields))


def _program(config: "StyleConfig") -> Any:
    kw = {f.name: getattr(config, f.name) for f in fields_of(PROGRAM)}
    return Program(**kw, ema=config.ema_decay is not None, lr_decay=config.lr_decay_rate is not None)


def _check_network(cfg: "StyleConfig") -> None:
    """The network, its pooling and its layers (aliases resolved first)."""
    for name, old in ALIASES.items():
        value = getattr(cfg, name)
        if isinstance(value, str) and value in old:
            object.__setattr__(cfg, name, old[value])
    _choice("arch", cfg.arch, tuple(network.NETWORKS))
    _choice("pooling", cfg.pooling, vgg.POOLINGS)
    if cfg.pixel_scale is not None:
        _positive("pixel_scale", cfg.pixel_scale)
    for field in ("content_layers", "style_layers"):
        layers = getattr(cfg, field)
        if isinstance(layers, str) or not isinstance(layers, (tuple, list)) or not all(isinstance(x, str) for x in layers):
            raise ConfigError(f"{field} must be a sequence of layer names such as ('relu4_2',); got {layers!r}")
        object.__setattr__(cfg, field, tuple(layers))
    try:
        network.NETWORKS[cfg.arch].validate_layers(cfg.arch, cfg.content_layers + cfg.style_layers)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not cfg.content_layers and not cfg.style_layers:
        raise ConfigError("at least one content or style layer is needed")


def _check_weights(cfg: "StyleConfig") -> None:
    """Layer and blend weights: sequences of non-negative numbers of the right length."""
    for field, layers in (("content_layer_weights", cfg.content_layers), ("style_layer_weights", cfg.style_layers)):
        weights = getattr(cfg, field)
        if weights is None:
            continue
        if not isinstance(weights, (tuple, list)):
            raise ConfigError(f"{field} must be a sequence of numbers or None; got {weights!r}")
        weights = tuple(weights)
        object.__setattr__(cfg, field, weights)
        if len(weights) != len(layers):
            raise ConfigError(f"{field} has {len(weights)} values for {len(layers)} layers")
        for w in weights:
            _nonneg(field, w)
    if cfg.style_blend_weights is not None:
        if not isinstance(cfg.style_blend_weights, (tuple, list)):
            raise ConfigError(f"style_blend_weights must be a sequence of numbers; got {cfg.style_blend_weights!r}")
        object.__setattr__(cfg, "style_blend_weights", tuple(cfg.style_blend_weights))
        for w in cfg.style_blend_weights:
            _nonneg("style_blend_weights", w)
        if sum(cfg.style_blend_weights) <= 0:
            raise ConfigError("style_blend_weights must not all be 0")


def _check_numbers(cfg: "StyleConfig") -> None:
    """The loss weights, learning rate and the optimiser's numbers."""
    for name in ("content_weight", "style_weight", "tv_weight", "temporal_weight", "learning_rate", "adam_eps",
                 "init_noise_ratio", "init_scale"):
        _nonneg(name, getattr(cfg, name))
    _positive("learning_rate", cfg.learning_rate)
    _positive("style_scale", cfg.style_scale)
    if not 0 <= cfg.init_noise_ratio <= 1:
        raise ConfigError(f"init_noise_ratio must be in [0, 1]; got {cfg.init_noise_ratio}")
    for name in ("adam_b1", "adam_b2"):
        v = getattr(cfg, name)
        _nonneg(name, v)
        if v >= 1:
            raise ConfigError(f"{name} must be in [0, 1); got {v}")
    if cfg.lr_decay_rate is not None:
        _positive("lr_decay_rate", cfg.lr_decay_rate)
    if cfg.ema_decay is not None:
        _nonneg("ema_decay", cfg.ema_decay)
        if cfg.ema_decay >= 1:
            raise ConfigError(f"ema_decay must be in [0, 1); got {cfg.ema_decay}")


def _check_choices(cfg: "StyleConfig") -> None:
    """Every named option against its table (the optimiser and loss tables as they are now)."""
    _choice("content_loss", cfg.content_loss, losses.CONTENT_LOSSES)
    _choice("gram_norm", cfg.gram_norm, losses.GRAM_NORMS)
    _choice("style_reduce", cfg.style_reduce, losses.STYLE_REDUCES)
    _choice("style_divisor", cfg.style_divisor, losses.STYLE_DIVISORS)
    _choice("style_loss", cfg.style_loss, STYLE_LOSSES)
    _choice("tv_loss", cfg.tv_loss, losses.TV_LOSSES)
    _choice("tv_space", cfg.tv_space, VARIABLE_SPACES)
    _choice("optimizer", cfg.optimizer, tuple(optimizers.OPTIMIZERS))  # the table as it is now
    _choice("adam_eps_mode", cfg.adam_eps_mode, ADAM_EPS_MODES)
    _choice("lbfgs_linesearch", cfg.lbfgs_linesearch, LINESEARCHES)
    _choice("variable_space", cfg.variable_space, VARIABLE_SPACES)
    _choice("select", cfg.select, SELECTS)
    _choice("iteration_unit", cfg.iteration_unit, ITERATION_UNITS)
    if cfg.lbfgs_round is not None:
        _posint("lbfgs_round", cfg.lbfgs_round, most=MAX_ITERATIONS)
    _choice("init", cfg.init, INITS)
    _choice("size_side", cfg.size_side, SIZE_SIDES)
    _choice("style_size", cfg.style_size, STYLE_SIZES)
    _choice("resample", cfg.resample, RESAMPLES)
    _choice("save_rounding", cfg.save_rounding, ROUNDINGS)
    _choice("preserve_colors", cfg.preserve_colors, PRESERVE_COLORS)
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("conv_algorithm", cfg.conv_algorithm, CONV_ALGORITHMS)
    if cfg.conv_algorithm == "winograd" and cfg.precision == "bf16":
        raise ConfigError("conv_algorithm winograd needs float32 (its transforms lose too much in bf16); use direct or auto")


def _check_sizes(cfg: "StyleConfig") -> None:
    """Counts, sizes and the fixed shape; flags are booleans."""
    _posint("iterations", cfg.iterations, allow_zero=True, most=MAX_ITERATIONS)
    _posint("chunk_size", cfg.chunk_size, most=MAX_CHUNK_SIZE)
    _posint("lr_decay_steps", cfg.lr_decay_steps)
    _posint("lbfgs_memory", cfg.lbfgs_memory, most=MAX_LBFGS_MEMORY)
    _posint("init_noise_range", cfg.init_noise_range, allow_zero=True)
    if cfg.size is not None:
        _posint("size", cfg.size)
        if cfg.size < 16:
            raise ConfigError(f"size must be at least 16 pixels (VGG pools 4 times before conv5); got {cfg.size}")
    for name in ("clamp", "original_size", "normalize_gradients", "remat"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"{name} must be true or false; got {getattr(cfg, name)!r}")
    if cfg.shape is not None:
        if not isinstance(cfg.shape, (tuple, list)):
            raise ConfigError(f"shape must be (height, width); got {cfg.shape!r}")
        shape = tuple(cfg.shape)
        object.__setattr__(cfg, "shape", shape)
        if len(shape) != 2:
            raise ConfigError(f"shape must be (height, width); got {cfg.shape!r}")
        for s in shape:
            _posint("shape", s)
            if s < 16:
                raise ConfigError(f"shape sides must be at least 16 pixels; got {shape}")
    if cfg.size is None and cfg.shape is None:
        raise ConfigError("give a size or a fixed shape")
    if cfg.optimizer == "lbfgs" and cfg.ema_decay is not None:
        raise ConfigError("ema_decay averages iterates of first-order optimisers; use it with sgd or adam")
