"""Images → features: the networks, as pure functions over a params pytree.

``vgg`` (VGG16/19 and its input conventions), ``convolutions`` (the 3x3 convolutions the engine
runs: direct with a plain input gradient, or Winograd F(4x4, 3x3)), ``resnet`` (ResNet50's
stages), and ``backbones`` (the ``NETWORKS`` table: a network's layer names, validation, features
and convention, chosen by name). Nothing here knows a config, a loss or a file.
"""
