"""Video: frames in and out, optical flow, and the frame loops.

``io`` (decoding and encoding clips and frame folders, checked before reading), ``flow`` (optical
flow with OpenCV and its cache on disk), ``frames`` (the sequential, independent and multi-pass
loops over the engine, with the temporal terms from ``objective.temporal``).
"""
