"""The program and its values: what a run computes, as data.

``losses`` (the Gram, content, style and TV formulas, chosen by name), ``optimizers`` (the
``OPTIMIZERS`` table of optax transforms), ``config`` (``StyleConfig``: which fields are the
static *program* and which are traced *values*, validated against the tables) and ``presets``
(each seed program as a config). Above ``network`` (the layer tables it validates against),
below everything that runs.
"""
