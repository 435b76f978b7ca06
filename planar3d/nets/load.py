"""Loading saved ``.keras`` models with ``safe_mode=True``: any model, a segmenter, a classifier.
"""

from __future__ import annotations

from pathlib import Path

from planar3d.errors import InputFileError

__all__ = ["load_classifier", "load_keras_model", "load_segmentation_model"]


def load_classifier(path: str | Path):
    """Load a classifier ``.keras`` model with ``safe_mode=True``.

    Raises:
        InputFileError: missing file, not loadable, or not a volume classifier
            (input `(batch, slices, rows, cols, channels)`, output `(batch, classes)`).
    """

    path = Path(path)
    model = load_keras_model(path)
    if len(model.input_shape) != 5 or len(model.output_shape) != 2:
        raise InputFileError(path, f"not a planar3d classifier model (input {model.input_shape}, output {model.output_shape})")
    return model


def load_keras_model(path: str | Path):
    """Load any planar3d ``.keras`` model (custom layers registered) with ``safe_mode=True``.

    Raises:
        InputFileError: missing file, or a file Keras cannot load.
    """
    import keras

    import planar3d.nets.layers  # noqa: F401  (registers the custom layers)

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "model file not found")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise InputFileError(path, f"not a loadable planar3d .keras model ({reason})") from error


def load_segmentation_model(path: str | Path):
    """Load a planar3d segmentation ``.keras`` model with ``safe_mode=True``.

    Raises:
        InputFileError: missing file, or not a planar3d segmentation model.
    """
    path = Path(path)
    model = load_keras_model(path)
    shape, output = tuple(model.input_shape), tuple(model.output_shape)
    if len(shape) == 5 and len(output) == 2:
        raise InputFileError(path, f"a classifier (output {output}), not a segmentation model: give --output a .csv file")
    if len(shape) != 5 or len(output) != 5 or output[-1] != 1:
        raise InputFileError(path, f"not a planar3d segmentation model (input {shape}, output {output})")
    return model
