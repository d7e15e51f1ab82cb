"""The ``nst-jax`` command line (see ``nst_jax.cli.main``): the only modules that parse arguments or print."""

from .main import build_parser, enable_compilation_cache, main
from .options import config_from_args

__all__ = ["build_parser", "config_from_args", "enable_compilation_cache", "main"]
