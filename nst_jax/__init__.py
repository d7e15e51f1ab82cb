"""nst-jax: Gatys-style neural style transfer on JAX.

The public API::

    net = nst_jax.load_weights("weights/vgg19.h5")          # params pytree + input convention
    cfg = nst_jax.preset("default")                           # a frozen StyleConfig
    loss_fn = nst_jax.make_loss_fn(net, content, style, cfg)  # pure, jittable: image -> (total, parts)
    result = nst_jax.stylize(content, style, net, cfg)        # result.image, .best_image, .losses
"""

from .config import StyleConfig
from .errors import ConfigError, ImageError, NSTError, NSTWarning, WeightsError
from .presets import PRESETS, preset
from .transfer import ManyResult, Result, make_loss_fn, stylize, stylize_many
from .weights import Network, load_weights

__all__ = [
    "StyleConfig", "preset", "PRESETS", "make_loss_fn", "stylize", "stylize_many", "Result", "ManyResult",
    "load_weights", "Network", "NSTError", "ConfigError", "ImageError", "WeightsError", "NSTWarning",
]
__version__ = "0.1.0"
