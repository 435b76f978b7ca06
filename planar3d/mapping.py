"""Mappings of 2D VGG16 kernels onto 3D convolution kernels.

The paper's mapping (Kolarik et al., ICPR 2020, Eq. 3) is *planar*: a 2D kernel of shape
``(kh, kw, Cin, Cout)`` becomes a 3D kernel with a size-1 spatial dimension, so the 3D
convolution does exactly the 2D convolution on every plane. Biases are unchanged.
Other mappings are added beside it in :data:`KERNEL_MAPPINGS` without changing
:func:`map_vgg16`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from planar3d.errors import Planar3DError

__all__ = ["KERNEL_MAPPINGS", "grey_kernel", "map_vgg16", "planar_kernel"]


def _check_kernel_2d(kernel_2d: np.ndarray) -> np.ndarray:
    kernel_2d = np.asarray(kernel_2d)
    if kernel_2d.ndim != 4:
        raise Planar3DError(
            f"a 2D kernel must have shape (kh, kw, Cin, Cout). Received: shape={kernel_2d.shape}"
        )
    return kernel_2d


def _check_axis(axis: int) -> int:
    if axis not in (0, 1, 2):
        raise Planar3DError(f"axis must be 0 (slices), 1 (rows) or 2 (cols). Received: axis={axis}")
    return axis


def planar_kernel(kernel_2d: np.ndarray, axis: int = 0) -> np.ndarray:
    """Insert a size-1 spatial dimension into a 2D kernel at spatial ``axis``.

    Args:
        kernel_2d: `(kh, kw, Cin, Cout)`.
        axis: 0 gives `(1, kh, kw, Cin, Cout)`, the paper's choice (kernel flat along the
            slice axis of a `(slices, rows, cols, channels)` tensor); 1 gives
            `(kh, 1, kw, Cin, Cout)`; 2 gives `(kh, kw, 1, Cin, Cout)`.

    Returns:
        The Conv3D kernel, same dtype and values.
    """
    return np.expand_dims(_check_kernel_2d(kernel_2d), _check_axis(axis))


def grey_kernel(kernel: np.ndarray) -> np.ndarray:
    """Sum a first-layer kernel over its input channels (keeping that axis, now of size 1).

    A grey image repeated on the three colour channels gives exactly the output of the
    one-channel image convolved with this kernel.
    """
    kernel = np.asarray(kernel)
    return kernel.sum(axis=-2, keepdims=True)


#: mode name -> function (kernel_2d, axis) -> 3D kernel in the storage layout of that mode.
KERNEL_MAPPINGS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "planar": planar_kernel,
}


def map_vgg16(vgg2d, mode: str = "planar", axis: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Map every convolution of a 2D VGG16 onto 3D kernels.

    Args:
        vgg2d: a Keras VGG16 (see :func:`planar3d.weights.load_vgg16_2d`).
        mode: a key of :data:`KERNEL_MAPPINGS` (``"planar"``).
        axis: the spatial axis the mapping is built around (0 = slices).

    Returns:
        ``{"block1_conv1": (kernel, bias), ..., "block5_conv3": (kernel, bias)}`` as NumPy
        float32 arrays; biases unchanged.

    Raises:
        Planar3DError: unknown ``mode`` or ``axis``.
    """
    from planar3d.weights import VGG16_CONV_LAYERS

    if mode not in KERNEL_MAPPINGS:
        raise Planar3DError(f"mode must be one of {sorted(KERNEL_MAPPINGS)}. Received: mode={mode!r}")
    _check_axis(axis)
    mapping = KERNEL_MAPPINGS[mode]
    mapped = {}
    for name, _, _ in VGG16_CONV_LAYERS:
        kernel, bias = (np.asarray(w, dtype="float32") for w in vgg2d.get_layer(name).get_weights())
        mapped[name] = (mapping(kernel, axis), bias)
    return mapped
