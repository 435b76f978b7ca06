"""Mappings of 2D VGG16 kernels onto 3D convolution kernels.

The paper's mapping (Kolarik et al., ICPR 2020, Eq. 3) is *planar*: a 2D kernel of shape
``(kh, kw, Cin, Cout)`` becomes a 3D kernel with a size-1 spatial dimension, so the 3D
convolution does exactly the 2D convolution on every plane. Biases are unchanged.

Beside it (all in :data:`KERNEL_MAPPINGS`, biases always unchanged):

- ``"acs"`` (Yang et al. 2021; Baheti et al. 2023, Eq. 1): the output channels are split
  into three groups (:func:`acs_split`); group ``a`` applies the 2D kernel flat along spatial
  axis ``a``. The storage layout is the 2D kernel itself, ``(kh, kw, Cin, Cout)``, held by
  :class:`planar3d.nets.layers.ACSConv3D`.
- ``"inflate"`` (I3D, Carreira & Zisserman 2017): the 2D kernel repeated along one axis and
  divided by the repetitions (:func:`inflate_kernel`), a full Conv3D kernel.

:data:`MAPPINGS` also names ``"none"``: the same topology with random 3×3×3 encoder kernels
(no 2D kernels are mapped, so it has no entry in :data:`KERNEL_MAPPINGS`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from planar3d.errors import Planar3DError

__all__ = [
    "KERNEL_MAPPINGS",
    "MAPPINGS",
    "acs_kernel",
    "acs_split",
    "channel_kernel",
    "grey_kernel",
    "inflate_kernel",
    "map_vgg16",
    "planar_kernel",
]


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


def acs_split(channels: int) -> tuple[int, int, int]:
    """Output channels of the three ACS groups (Baheti et al. 2023, Eq. 1).

    Each group gets ``channels // 3``; the remainder goes to the first groups, one each
    (as the ACSConv reference implementation): 64 -> (22, 21, 21), 128 -> (43, 43, 42).

    Args:
        channels: the layer's output channels ``Cout`` (at least 1).

    Returns:
        ``(n_0, n_1, n_2)`` summing to ``channels``; group ``a`` is flat along spatial axis
        ``a`` (0 = slices, 1 = rows, 2 = cols) and owns output channels
        ``sum(n[:a]) ... sum(n[:a + 1]) - 1``.

    Raises:
        Planar3DError: ``channels`` < 1.
    """
    if channels < 1:
        raise Planar3DError(f"channels must be at least 1. Received: channels={channels}")
    base, remainder = divmod(int(channels), 3)
    return tuple(base + (1 if group < remainder else 0) for group in range(3))


def acs_kernel(kernel_2d: np.ndarray, axis: int = 0) -> np.ndarray:
    """The ACS storage layout of a 2D kernel: the kernel itself, `(kh, kw, Cin, Cout)`.

    :class:`planar3d.nets.layers.ACSConv3D` splits the output channels (:func:`acs_split`) and
    applies each group's slice of the kernel flat along its own axis, so no reshaping is
    needed: the 2D kernel maps in as it is.

    Args:
        kernel_2d: `(kh, kw, Cin, Cout)`.
        axis: checked for validity only; ACS uses all three axes.

    Returns:
        A copy of ``kernel_2d``.
    """
    _check_axis(axis)
    return _check_kernel_2d(kernel_2d).copy()


def inflate_kernel(kernel_2d: np.ndarray, axis: int = 0, depth: int | None = None) -> np.ndarray:
    """I3D inflation: repeat a 2D kernel ``depth`` times along spatial ``axis``, divide by ``depth``.

    A volume constant along ``axis`` then gives, at every position whose receptive field
    stays inside the volume, exactly the 2D response of its planes (with zero ``"same"``
    padding the first and last ``depth // 2`` planes see fewer repetitions).

    Args:
        kernel_2d: `(kh, kw, Cin, Cout)`.
        axis: 0 gives `(depth, kh, kw, Cin, Cout)` (repeated along slices); 1 gives
            `(kh, depth, kw, Cin, Cout)`; 2 gives `(kh, kw, depth, Cin, Cout)`.
        depth: repetitions; ``None`` uses ``kh`` (a cubic kernel for VGG16's 3×3).

    Returns:
        The Conv3D kernel, same dtype.

    Raises:
        Planar3DError: bad kernel shape, ``axis``, or ``depth`` < 1.
    """
    kernel_2d = _check_kernel_2d(kernel_2d)
    _check_axis(axis)
    depth = kernel_2d.shape[0] if depth is None else depth
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise Planar3DError(f"depth must be a positive int. Received: depth={depth}")
    repeated = np.repeat(np.expand_dims(kernel_2d, axis), depth, axis=axis)
    return (repeated / np.asarray(depth, dtype=kernel_2d.dtype)).astype(kernel_2d.dtype)


def grey_kernel(kernel: np.ndarray) -> np.ndarray:
    """Sum a first-layer kernel over its input channels (keeping that axis, now of size 1).

    A grey image repeated on the three colour channels gives exactly the output of the
    one-channel image convolved with this kernel.
    """
    kernel = np.asarray(kernel)
    return kernel.sum(axis=-2, keepdims=True)


def channel_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Map a first-layer kernel trained on RGB to ``channels`` input channels.

    - 3: unchanged.
    - 1: :func:`grey_kernel` (summed over R, G, B): exactly the response to the grey image
      copied onto the three colour channels.
    - any other ``C``: the mean of the R, G and B kernels repeated ``C`` times and scaled by
      ``3 / C`` (the rule of timm's ``adapt_input_conv``). A volume whose ``C`` channels all
      hold the same grey image then gives exactly the grey-to-RGB response, so the
      pretrained activations keep their scale (what batch norm and the ReLU thresholds
      downstream were trained on) whatever the number of MRI sequences; no channel is
      favoured, because sequences have no natural order to match R, G, B.

    Args:
        kernel: `(..., 3, Cout)`, input channels on the second last axis (any rank).
        channels: input channels ``C`` of the new kernel (at least 1).

    Returns:
        `(..., C, Cout)`, same dtype.

    Raises:
        Planar3DError: ``channels`` < 1 or a kernel without 3 input channels.
    """
    kernel = np.asarray(kernel)
    if channels < 1:
        raise Planar3DError(f"channels must be at least 1. Received: channels={channels}")
    if kernel.ndim < 2 or kernel.shape[-2] != 3:
        raise Planar3DError(f"the kernel must have 3 input channels. Received: shape={kernel.shape}")
    if channels == 3:
        return kernel.copy()
    if channels == 1:
        return grey_kernel(kernel)
    mean = kernel.mean(axis=-2, keepdims=True) * np.asarray(3.0 / channels, dtype=kernel.dtype)
    return np.repeat(mean, channels, axis=-2).astype(kernel.dtype)


#: mode name -> function (kernel_2d, axis) -> 3D kernel in the storage layout of that mode.
KERNEL_MAPPINGS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "planar": planar_kernel,
    "acs": acs_kernel,
    "inflate": inflate_kernel,
}
#: every encoder mapping a model can be built with: the pretrained ones, then ``"none"``.
MAPPINGS: tuple[str, ...] = (*KERNEL_MAPPINGS, "none")


def map_vgg16(vgg2d, mode: str = "planar", axis: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Map every convolution of a 2D VGG16 onto 3D kernels.

    Args:
        vgg2d: a Keras VGG16 (see :func:`planar3d.nets.weights.load_vgg16_2d`).
        mode: a key of :data:`KERNEL_MAPPINGS` (``"planar"``, ``"acs"``, ``"inflate"``).
        axis: the spatial axis the mapping is built around (0 = slices).

    Returns:
        ``{"block1_conv1": (kernel, bias), ..., "block5_conv3": (kernel, bias)}`` as NumPy
        float32 arrays, kernels in the storage layout of ``mode``; biases unchanged.

    Raises:
        Planar3DError: unknown ``mode`` or ``axis``.
    """
    from planar3d.nets.weights import VGG16_CONV_LAYERS

    if mode not in KERNEL_MAPPINGS:
        raise Planar3DError(f"mode must be one of {sorted(KERNEL_MAPPINGS)}. Received: mode={mode!r}")
    _check_axis(axis)
    mapping = KERNEL_MAPPINGS[mode]
    mapped = {}
    for name, _, _ in VGG16_CONV_LAYERS:
        kernel, bias = (np.asarray(w, dtype="float32") for w in vgg2d.get_layer(name).get_weights())
        mapped[name] = (mapping(kernel, axis), bias)
    return mapped
