"""Images → features: the networks, as pure functions over a params pytree.

``vgg`` (VGG16/19, its input conventions and Winograd convolutions), ``resnet`` (ResNet50's
stages), and ``backbones`` (the ``NETWORKS`` table: a network's layer names, validation,
features and convention, chosen by name). Nothing here knows a config, a loss or a file.
"""
