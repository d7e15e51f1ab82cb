"""Features → the objective: targets computed once, and the loss as a sum of named terms (pure).

``targets`` (content features and style Gram targets), ``terms`` (``TERMS``: each loss term's name,
when a program has it, and its formula; the pure ``objective``), ``temporal``
(warping and the video terms' targets) and ``flax_modules`` (the same features and loss as Flax
modules, for a training loop).
"""
