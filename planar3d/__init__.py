"""planar3d: planar 3D transfer learning for MS lesion segmentation in raw FLAIR MRI.

Reproduces Kolarik et al., "Planar 3D Transfer Learning for End to End Unimodal MRI
Unbalanced Data Segmentation", ICPR 2020: VGG16 ImageNet 2D kernels become (1, 3, 3)
Conv3D kernels of a frozen encoder feeding a residual dilated Conv3D decoder.

Importing this package does not import TensorFlow; the modules that need it do.
Arrays are channels last, axis order ``(slices, rows, cols, channels)``; slices run
along the sagittal (left-right) axis after preprocessing.
"""

__version__ = "0.1.0"
