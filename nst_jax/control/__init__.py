"""Around the engine: colour preservation, coarse-to-fine scales and style scale.

``scales`` plans the working shapes and iterations of a run's scales; ``runs`` carries a run
(single or batch) from scale to scale, with colours and masks prepared before and after.
"""
