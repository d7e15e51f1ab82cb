"""nst-jax: Gatys-style neural style transfer on JAX.

The public API::

    net = nst_jax.load_weights("weights/vgg19.h5")          # params pytree + input convention
    cfg = nst_jax.preset("default")                           # a frozen StyleConfig
    loss_fn = nst_jax.make_loss_fn(net, content, style, cfg)  # image -> (total, parts)
    # the pure form, params/targets/values as arguments: nst_jax.objective.objective(...)
    result = nst_jax.stylize(content, style, net, cfg)        # result.image, .best_image, .losses
    many = nst_jax.stylize_many(content, [style] * 4, net, cfg,
                                configs=cfg.sweep(style_weight=[1e2, 1e3, 1e4, 1e5]))  # one program

The data path, a module a stage: ``image`` (files, resizing) -> ``network`` / ``vgg`` / ``resnet``
(features) -> ``targets`` -> ``objective`` -> ``optimizers`` -> ``engine`` (the compiled loop) ->
``batching`` (many results in one program); ``control`` (colours, scales) and ``cli`` sit on top.
"""

from .config import StyleConfig
from .errors import ConfigError, ImageError, NSTError, NSTWarning, WeightsError
from .presets import PRESETS, preset
from .batching import ManyResult, stylize_many
from .config import Program, Values
from .engine import Result, stylize
from .objective import make_loss_fn
from .weights import Network, load_weights

__all__ = [
    "StyleConfig", "Program", "Values", "preset", "PRESETS", "make_loss_fn", "stylize", "stylize_many", "Result", "ManyResult",
    "load_weights", "Network", "NSTError", "ConfigError", "ImageError", "WeightsError", "NSTWarning",
]
__version__ = "0.1.0"
