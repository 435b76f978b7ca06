"""The network side of planar3d: 2D->3D kernel mappings, the 3D layers, the ImageNet weights
and the models built from them.

Modules: :mod:`~planar3d.nets.layers` (``PlanarConv3D``, ``ACSConv3D``),
:mod:`~planar3d.nets.mapping` (2D kernel -> 3D kernel), :mod:`~planar3d.nets.weights`
(loading the 2D VGG16 ImageNet weights), :mod:`~planar3d.nets.model` (the paper's planar 3D
res-u-net), :mod:`~planar3d.nets.backbones` (any 2D Keras backbone to 3D: ``to_3d``,
``BACKBONES``, ``build_encoder``), :mod:`~planar3d.nets.heads` (``build_segmenter``,
``build_classifier``).
"""
