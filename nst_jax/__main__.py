"""``python -m nst_jax``: the ``nst-jax`` command."""

from .entry import run

run()
