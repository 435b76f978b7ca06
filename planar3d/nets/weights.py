"""The 2D source network: Keras VGG16 (include_top=False) with ImageNet or local weights.

VGG16: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015. ImageNet weights by the Visual Geometry Group, Oxford (CC BY 4.0),
as converted for Keras.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import keras
import numpy as np

from planar3d.errors import InputFileError, Planar3DError

__all__ = [
    "VGG16_CONV_LAYERS",
    "VGG16_NOTOP_FILENAME",
    "WEIGHTS_ENV_VAR",
    "load_vgg16_2d",
    "resolve_imagenet_weights",
]

WEIGHTS_ENV_VAR = "PLANAR3D_VGG16_WEIGHTS"
VGG16_NOTOP_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_NOTOP_FILENAME
)
VGG16_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"

# (name, input channels, output channels) of the 13 convolutions, in network order.
VGG16_CONV_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("block1_conv1", 3, 64), ("block1_conv2", 64, 64),
    ("block2_conv1", 64, 128), ("block2_conv2", 128, 128),
    ("block3_conv1", 128, 256), ("block3_conv2", 256, 256), ("block3_conv3", 256, 256),
    ("block4_conv1", 256, 512), ("block4_conv2", 512, 512), ("block4_conv3", 512, 512),
    ("block5_conv1", 512, 512), ("block5_conv2", 512, 512), ("block5_conv3", 512, 512),
)

_NO_WEIGHTS_ADVICE = (
    f"set {WEIGHTS_ENV_VAR}=/path/to/{VGG16_NOTOP_FILENAME} or pass the file's path "
    "(--encoder-weights PATH); copying the file into $KERAS_HOME/models/ also works"
)


def _keras_cache_file() -> Path:
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(home) / "models" / VGG16_NOTOP_FILENAME


def resolve_imagenet_weights() -> Path:
    """Find the VGG16 notop ImageNet weights file, downloading it only as a last resort.

    Order: the file named by ``$PLANAR3D_VGG16_WEIGHTS``; the Keras cache
    (``$KERAS_HOME/models/`` or ``~/.keras/models/``) under the Keras file name; a download
    through ``keras.utils.get_file`` into that cache.

    Returns:
        Path of a local ``.h5`` file.

    Raises:
        InputFileError: ``$PLANAR3D_VGG16_WEIGHTS`` names a missing file.
        Planar3DError: nothing local and the download failed; the message says how to
            pass a local file.
    """
    from_env = os.environ.get(WEIGHTS_ENV_VAR)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise InputFileError(path, f"file named by {WEIGHTS_ENV_VAR} does not exist")
        return path
    cached = _keras_cache_file()
    if cached.is_file():
        return cached
    try:
        return Path(keras.utils.get_file(
            VGG16_NOTOP_FILENAME, VGG16_NOTOP_URL, cache_subdir="models", file_hash=VGG16_NOTOP_MD5
        ))
    except Exception as error:  # get_file wraps network errors in plain Exceptions
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise Planar3DError(
            f"could not download the VGG16 ImageNet weights ({reason}); {_NO_WEIGHTS_ADVICE}"
        ) from error


def _read_legacy_h5(handle: h5py.File) -> dict[str, list[np.ndarray]]:
    """Read the Keras 2 layout: one group per layer, ``weight_names`` attribute."""
    weights = {}
    for name in handle.keys():
        group = handle[name]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
        if names:
            weights[name] = [np.asarray(group[n]) for n in names]
    return weights


def _read_keras3_h5(handle: h5py.File) -> dict[str, list[np.ndarray]]:
    """Read the Keras 3 ``.weights.h5`` layout, matching conv layers by creation order."""
    groups = handle["layers"]

    def order(name: str) -> int:
        _, _, suffix = name.rpartition("_")
        return int(suffix) if suffix.isdigit() else 0

    convs = sorted((n for n in groups if n.startswith("conv2d")), key=order)
    weights = {}
    for (target, _, _), source in zip(VGG16_CONV_LAYERS, convs):
        variables = groups[source]["vars"]
        weights[target] = [np.asarray(variables[k]) for k in sorted(variables, key=int)]
    return weights


def _read_weights_file(path: Path) -> dict[str, list[np.ndarray]]:
    if not path.is_file():
        raise InputFileError(path, "VGG16 weights file does not exist")
    try:
        with h5py.File(path, "r") as handle:
            if "layers" in handle and "vars" in handle:
                return _read_keras3_h5(handle)
            return _read_legacy_h5(handle)
    except OSError as error:
        raise InputFileError(path, f"not a readable HDF5 weights file ({error})") from error


def _check_vgg16_weights(path: Path, weights: dict[str, list[np.ndarray]]) -> None:
    for name, cin, cout in VGG16_CONV_LAYERS:
        if name not in weights:
            raise InputFileError(path, f"no weights for VGG16 layer {name}: not a VGG16 notop file")
        if len(weights[name]) != 2:
            raise InputFileError(path, f"layer {name} holds {len(weights[name])} arrays, expected kernel and bias")
        kernel, bias = weights[name]
        if kernel.shape != (3, 3, cin, cout):
            raise InputFileError(
                path, f"layer {name} kernel has shape {kernel.shape}, expected {(3, 3, cin, cout)}"
            )
        if bias.shape != (cout,):
            raise InputFileError(path, f"layer {name} bias has shape {bias.shape}, expected {(cout,)}")


def _seeded_random_init(model: keras.Model, seed: int) -> None:
    """Re-initialise every conv with Glorot-uniform kernels from ``seed`` (zero biases)."""
    for index, (name, _, _) in enumerate(VGG16_CONV_LAYERS):
        layer = model.get_layer(name)
        kernel_shape = tuple(layer.kernel.shape)
        kernel = keras.initializers.GlorotUniform(seed=seed + index)(kernel_shape)
        layer.set_weights([keras.ops.convert_to_numpy(kernel), np.zeros(kernel_shape[-1], "float32")])


def load_vgg16_2d(weights: str | os.PathLike | None = "imagenet", seed: int = 0) -> keras.Model:
    """Build Keras VGG16 without its classifier (``include_top=False``) and load its weights.

    Args:
        weights: ``"imagenet"`` (see :func:`resolve_imagenet_weights`; never a silent
            fallback to random weights), a path to a local ``.h5`` file (the Keras 2
            "notop" layout or a Keras 3 ``.weights.h5`` of VGG16), or ``None`` for a
            random initialisation drawn from ``seed``.
        seed: seed of the random initialisation when ``weights`` is ``None``.

    Returns:
        A ``keras.Model`` taking ``(batch, rows, cols, 3)`` BGR images, with the 13 VGG16
        convolutions named ``block{i}_conv{j}``.

    Raises:
        Planar3DError: the weights cannot be found or downloaded.
        InputFileError: the file is missing, unreadable, or not VGG16 (names the layer and
            the shapes found and expected).
    """
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    if weights is None:
        _seeded_random_init(model, seed)
        return model
    path = resolve_imagenet_weights() if weights == "imagenet" else Path(weights)
    arrays = _read_weights_file(path)
    _check_vgg16_weights(path, arrays)
    for name, _, _ in VGG16_CONV_LAYERS:
        model.get_layer(name).set_weights(arrays[name])
    return model
