"""The objective → results: the optimiser loop, compiled once and run in chunks.

``loop`` (the step and the chunk, the ``jit``-ed core), ``driver`` (``prepare`` and ``drive``: the
one loop over chunks for a batch of any size, with callbacks, stop, L-BFGS rounds and sharding),
``single`` (``stylize``: a batch of one), ``batching`` (``stylize_many``: many members in one
program), ``sharding`` (device meshes), ``memory`` (the memory model), ``checkpoint``
(resumable states on disk).
"""
