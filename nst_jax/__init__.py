"""nst-jax: Gatys-style neural style transfer on JAX.

The public API::

    net = nst_jax.load_weights("weights/vgg19.h5")          # params pytree + input convention
    cfg = nst_jax.preset("default")                           # a frozen StyleConfig
    loss_fn = nst_jax.make_loss_fn(net, content, style, cfg)  # image -> (total, parts)
    # the pure form, params/targets/values as arguments: nst_jax.objective.terms.objective(...)
    result = nst_jax.stylize(content, style, net, cfg)        # result.image, .best_image, .losses
    many = nst_jax.stylize_many(content, [style] * 4, net, cfg,
                                configs=cfg.sweep(style_weight=[1e2, 1e3, 1e4, 1e5]))  # one program

The data path, a package a stage, each importing only the ones above it in this list:
``errors``/``files`` (shared) -> ``image`` (files <-> pictures) -> ``network`` (features, pure)
-> ``weights`` (files -> params) -> ``program`` (formulas, optimisers, configs, presets) ->
``objective`` (targets, the loss's terms) -> ``engine`` (the compiled loop, one driver) ->
``control`` (colours, scales) -> ``video`` (frame loops) -> ``cli`` and ``serve`` (the command
line, the job server). ``tests/test_structure.py`` checks the order.
"""

# The names below are imported on first use (PEP 562), so that ``import nst_jax.entry`` (the
# console script) is instant and can install its signal handlers before JAX loads.
_LAZY = {
    "StyleConfig": "program.config", "Program": "program.config", "Values": "program.config",
    "ConfigError": "errors", "ImageError": "errors", "NSTError": "errors", "NSTWarning": "errors",
    "WeightsError": "errors", "PRESETS": "program.presets", "preset": "program.presets",
    "ManyResult": "engine.batching", "stylize_many": "engine.batching", "Result": "engine.single",
    "stylize": "engine.single", "make_loss_fn": "engine.single",
    "Network": "weights", "load_weights": "weights",
}


def __getattr__(name: str):
    import importlib

    module = _LAZY.get(name)
    if module is None:  # a submodule (``nst_jax.network.vgg``), as when every module was imported eagerly
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'nst_jax' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "StyleConfig", "Program", "Values", "preset", "PRESETS", "make_loss_fn", "stylize", "stylize_many", "Result", "ManyResult",
    "load_weights", "Network", "NSTError", "ConfigError", "ImageError", "WeightsError", "NSTWarning",
]
__version__ = "0.1.0"
