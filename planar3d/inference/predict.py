"""The one inference of a preprocessed scan: window, predict, recompose (paper Eq. 1), with optional levers.

:func:`predict_volume` is the only predictor of the package; every option is an argument:

* ``crop``: ``"off"`` runs the network on the whole field of view (the paper); ``"auto"``
  (= ``"window"``), ``"window"`` and ``"scan"`` run it on the head's rows x cols only
  (:mod:`planar3d.data.foreground`), skip windows without head and paste the prediction back,
  0 outside the crop.
* ``stream``: for the planar res-u-net at a stride that is a multiple of 8 dividing the window
  (the paper's 16/8), encoder blocks 1-4 run once per chunk of ``stride`` slices and their
  features are reused by every window holding that chunk (:mod:`planar3d.nets.stream`: exact,
  the slices are only mixed by aligned poolings). Only the chunks of the current window are
  held, never the whole volume's features (block 1 alone would be 4 GB at 256³). Other
  mappings (``acs``, ``inflate``, ``none``, whose encoders mix slices) and other strides fall
  back to the per-window path.
* ``precision``: ``"float32"`` (the paper), ``"bfloat16"`` / ``"float16"`` (Keras' ``mixed_*``
  policy: weights kept in float32, the sigmoid output in float32), ``"auto"``
  (:func:`planar3d.inference.precision.resolve_precision`). In a reduced format the forward
  steps run as ``tf.function`` graphs; float32 stays eager, so its results stay bit-identical
  to the paper's path.
* ``tta``: the prediction averaged over the 8 flips of the slice, row and column axes.
* ``mode``: the recomposition (:func:`planar3d.inference.recompose.recompose`). With
  ``"middle"`` the decoder of each window computes only the slices the recomposition keeps
  (:func:`planar3d.data.geometry.kept_slices`), exactly.

``crop="off", precision="float32"`` is the paper's whole-volume path: the whole windows through
``model(batch)`` in batches of ``batch_size``, recomposed in TensorFlow, bit for bit on every CPU
(the streamed encoder and the kept-slice decoder are the same sums, but oneDNN's AVX2 kernels
block them per input shape, so they match the whole windows only to the last bits there; on
AVX-512 they match exactly). The other settings were measured against it
(``docs/bench_inference.md``).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from planar3d.config import CROPS
from planar3d.data.foreground import Box, ForegroundWarning, crop_boxes, head_mask
from planar3d.data.geometry import check_blend, check_window_geometry, flip_sets, kept_slices, window_starts
from planar3d.data.windows import extract_windows, volume_tensor
from planar3d.errors import Planar3DError
from planar3d.inference.precision import Forward, forward_functions, inference_model, resolve_precision
from planar3d.inference.recompose import recompose
from planar3d.inference.runtimes import ExportedNetwork
from planar3d.nets.stream import ENCODER_CHUNK, SKIP_SCALES, has_res_unet_layers, is_planar_res_unet

__all__ = ["can_stream", "predict_members", "predict_volume", "shares_encoder"]


def _predict_whole_windows(
    model: Any,
    volume: Any,
    size: int = 16,
    stride: int = 8,
    mode: str = "middle",
    batch_size: int = 1,
    tta: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """The paper's path of :func:`predict_volume`: whole windows, predicted in batches, recomposed.

    The grey volume is repeated to the model's channel count (``model.input_shape[-1]``).
    Windows are fed as ``model(batch, training=False)``; recomposition runs in TensorFlow.
    With ``tta=True`` the prediction is repeated for all 8 combinations of flipping the
    slice, row and column axes (identity included), each un-flipped, then averaged (8x the
    time).

    Args:
        model: Keras model mapping `(batch, size, rows, cols, channels)` to sigmoid
            probabilities `(batch, size, rows, cols, 1)`.
        volume: `(slices, rows, cols)` or `(slices, rows, cols, channels)` preprocessed scan.
        size: slices per window (paper: 16); must match the model's input if that is fixed.
        stride: slices between window starts (paper: 8).
        mode: recomposition, see :func:`recompose` (paper: ``"middle"``).
        batch_size: windows per forward pass.
        tta: average over flips (test-time augmentation).

    Returns:
        `(slices, rows, cols)` float32 NumPy array of probabilities.

    Raises:
        Planar3DError: bad window geometry or mode, wrong rank, a channel count the model
            does not take, or a window size that differs from the model's.
    """
    check_window_geometry(size, stride)
    check_blend(mode, size, stride)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise Planar3DError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    volume = volume_tensor(volume)
    depth = int(volume.shape[0])
    window_starts(depth, size, stride)
    input_shape = tuple(model.input_shape)
    if input_shape[1] is not None and input_shape[1] != size:
        raise Planar3DError(f"the model takes windows of {input_shape[1]} slices. Received: size={size}")
    model_channels = input_shape[-1]
    if volume.shape[-1] != model_channels:
        if volume.shape[-1] != 1:
            raise Planar3DError(
                f"the model takes {model_channels} channels. Received: volume.shape={tuple(volume.shape)}"
            )
        volume = tf.repeat(volume, model_channels, axis=-1)
    volume = tf.cast(volume, tf.float32)

    passes = flip_sets(tta)
    n_windows = len(window_starts(depth, size, stride))
    total = None
    with tqdm(total=n_windows * len(passes), desc="windows", unit="window", leave=False,
              disable=None if progress else True) as bar:
        for axes in passes:
            flipped = tf.reverse(volume, axes) if axes else volume
            windows = extract_windows(flipped, size, stride)  # (n, size, rows, cols, channels)
            # predict
            outputs = []
            for first in range(0, n_windows, batch_size):
                outputs.append(tf.cast(model(windows[first : first + batch_size], training=False), tf.float32))
                bar.update(int(outputs[-1].shape[0]))
            # stitch
            probability = recompose(tf.concat(outputs, axis=0), depth, size, stride, mode)[..., 0]
            probability = tf.reverse(probability, axes) if axes else probability
            # float64 sum: averaging identical passes returns them bit for bit
            probability = tf.cast(probability, tf.float64)
            total = probability if total is None else total + probability
    return (total / len(passes)).numpy().astype(np.float32)


#: the box ``crop="auto"`` uses: one per window (measured in ``docs/bench_inference.md``).
_AUTO_CROP = "window"


def can_stream(model: Any, size: int, stride: int) -> bool:
    """True when the streamed encoder is exact for ``model`` at this window geometry.

    Needs the planar res-u-net (encoder convolutions flat along the slice axis) and a stride
    that is a multiple of 8 (one ``block4_conv3`` slice) and divides the window size.
    """
    return stride % ENCODER_CHUNK == 0 and size % stride == 0 and is_planar_res_unet(model)


def _crop_skips(features: dict[str, Any], computed: Any, box: Any) -> dict[str, Any]:
    """Skips computed on box ``computed`` cut down to ``box`` (corners multiples of 16)."""
    out = {}
    for name, tensor in features.items():
        scale = SKIP_SCALES[name]
        r0, c0 = (box.row0 - computed.row0) // scale, (box.col0 - computed.col0) // scale
        rows, cols = box.shape[0] // scale, box.shape[1] // scale
        out[name] = tensor if (r0, c0, rows, cols) == (0, 0, *tensor.shape[2:4]) else tensor[:, :, r0:r0 + rows, c0:c0 + cols]
    return out


def _one_pass(net: Any, forwards: list[Forward], volume: np.ndarray, boxes: list, size: int, stride: int, stream: bool,
              mode: str, progress) -> np.ndarray:
    """Window outputs `(members, n, size, rows, cols)` float32 of one (possibly flipped) volume.

    With the ``"middle"`` recomposition and a res-u-net whose layers can be replayed, each
    window's decoder computes only the slices the recomposition keeps (the others stay 0).
    Several ``forwards`` (an ensemble whose encoders are identical, :func:`shares_encoder`) decode
    the features of the first one's encoder, computed once.
    """

    starts = window_starts(volume.shape[0], size, stride)
    replay = isinstance(net, ExportedNetwork) or has_res_unet_layers(net)
    keeps = kept_slices(volume.shape[0], size, stride) if replay and mode == "middle" else [(0, size)] * len(starts)
    encode = forwards[0].encode
    out = np.zeros((len(forwards), len(starts), size, *volume.shape[1:3]), dtype=np.float32)
    chunks = size // stride
    # each chunk's box: the union of the boxes of the windows holding it
    chunk_boxes: dict[int, Any] = {}
    for k, box in enumerate(boxes):
        for c in range(k, k + chunks):
            if box is not None:
                chunk_boxes[c] = box if c not in chunk_boxes else chunk_boxes[c].union(box)
    cache: dict[int, dict[str, Any]] = {}
    for k, (start, box) in enumerate(zip(starts, boxes)):
        if box is not None:
            if stream:
                for c in range(k, k + chunks):
                    if c not in cache:
                        cbox = chunk_boxes[c]
                        chunk = volume[start + (c - k) * stride : start + (c - k + 1) * stride][None, :, cbox.row0:cbox.row1, cbox.col0:cbox.col1]
                        cache[c] = encode(tf.constant(chunk))
                parts = [_crop_skips(cache[c], chunk_boxes[c], box) for c in range(k, k + chunks)]
                skips = {name: tf.concat([p[name] for p in parts], axis=1) for name in parts[0]}
                predictions = [forward.decode(skips, keeps[k]) for forward in forwards]
                for c in [c for c in cache if c <= k]:  # chunk k is in no later window
                    del cache[c]
            else:
                window = tf.constant(volume[start : start + size][None, :, box.row0:box.row1, box.col0:box.col1])
                # the replay takes any rows x cols; a Keras model call only its input shape
                if replay:
                    skips = encode(window)
                    predictions = [forward.decode(skips, keeps[k]) for forward in forwards]
                else:
                    predictions = [forwards[0].whole(window)]
            lo, hi = keeps[k]
            for member, prediction in enumerate(predictions):
                out[member, k][(slice(lo, hi), *box.slices)] = tf.cast(prediction, tf.float32).numpy()[0, ..., 0]
        progress.update(1)
    return out


def predict_volume(
    model: Any,
    volume: Any,
    size: int = 16,
    stride: int = 8,
    mode: str = "middle",
    batch_size: int = 1,
    tta: bool = False,
    crop: str = "auto",
    precision: str = "auto",
    stream: bool | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Probability volume of one preprocessed scan (see the module docstring for the options).

    Args:
        model: the trained Keras model (sigmoid output), `(batch, size, rows, cols, channels)`;
            a grey volume is repeated to its channel count. Or an exported network opened in
            another runtime (:class:`planar3d.inference.runtimes.ExportedNetwork`): its encoder
            and window decoder run through the same crop, stream and kept-slice structure.
        volume: `(slices, rows, cols)` preprocessed scan (rows and cols multiples of 16 for a
            crop), or `(slices, rows, cols, channels)` with the model's channels (several
            modalities stacked, FLAIR first: the head is found on channel 0).
        size: slices per window (paper: 16); must match the model's input if that is fixed.
        stride: slices between window starts (paper: 8).
        mode: recomposition, ``"middle"`` (paper Eq. 1), ``"mean"`` or ``"gaussian"``.
        batch_size: windows per forward pass of the paper's path; the cropped and streamed
            paths run one window at a time (their shapes differ per window; on a CPU batch 1 is
            as fast, with less memory).
        tta: average over the 8 flips (8x the time).
        crop: ``"auto"`` (default), ``"window"``, ``"scan"`` or ``"off"`` (the paper).
        precision: ``"auto"`` (default), ``"float32"`` (the paper), ``"bfloat16"`` or ``"float16"``.
            Ignored for an exported network, which computes in the precision it was opened in.
        stream: reuse encoder features between windows when :func:`can_stream` (silently the
            per-window path otherwise); ``None`` (default): stream except on the paper's path
            (``crop="off", precision="float32"``).
        progress: a tqdm bar over the windows on a terminal (never in a pipe).

    Returns:
        `(slices, rows, cols)` float32 probabilities; 0 outside the crop and in windows
        without head.

    Raises:
        Planar3DError: a bad ``crop``, ``precision``, window geometry, mode or batch size, a
            wrong rank, a channel count the model does not take, or a window size that differs
            from the model's.
    """
    return _predict([model], volume, size=size, stride=stride, mode=mode, batch_size=batch_size, tta=tta, crop=crop,
                    precision=precision, stream=stream, progress=progress)[0]


def shares_encoder(models: list) -> bool:
    """True when the planar res-u-nets ``models`` have one encoder: the same layer types and settings
    and bit-identical weights in blocks 1-4 (models trained from one frozen ImageNet encoder), so
    that its features can be computed once for all of them."""
    from planar3d.nets.model import encoder_layer_names

    if not models or any(isinstance(m, ExportedNetwork) or not has_res_unet_layers(m) for m in models):
        return False
    def computes(layer) -> dict:  # what a layer computes with, not how it was made or trained
        return {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")
                and not k.endswith(("_initializer", "_regularizer", "_constraint"))}

    first = models[0]
    for name in encoder_layer_names():
        reference = first.get_layer(name)
        settings = computes(reference)
        for model in models[1:]:
            layer = model.get_layer(name)
            if type(layer) is not type(reference) or computes(layer) != settings:
                return False
            if any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(layer.get_weights(),
                                                                                  reference.get_weights())):
                return False
    return all(tuple(model.input_shape) == tuple(first.input_shape) for model in models[1:])


def predict_members(models: list, volume: Any, size: int = 16, stride: int = 8, mode: str = "middle",
                    batch_size: int = 1, tta: bool = False, crop: str = "auto", precision: str = "auto",
                    stream: bool | None = None, progress: bool = False) -> list[np.ndarray]:
    """:func:`predict_volume` of each member of an ensemble, in one pass when they share an encoder.

    Members with one encoder (:func:`shares_encoder`: frozen ImageNet planar encoders) get its
    features computed once per window (or streamed chunk) and only their decoders run apart, each
    member's result equal to its own :func:`predict_volume` (the same operations on the same
    features). Other ensembles, and the paper's whole-window path (``crop="off",
    precision="float32"`` without ``stream=True``), run one member after the other. Arguments as
    :func:`predict_volume`.

    Returns:
        One `(slices, rows, cols)` float32 probability volume per member, in order.
    """
    models = list(models)
    kwargs = dict(size=size, stride=stride, mode=mode, batch_size=batch_size, tta=tta, crop=crop, precision=precision,
                  stream=stream, progress=progress)
    whole_windows = crop == "off" and resolve_precision(precision) == "float32" and not stream  # the paper's path
    if len(models) > 1 and not whole_windows and shares_encoder(models):
        return _predict(models, volume, **kwargs)
    return [predict_volume(model, volume, **kwargs) for model in models]


def _predict(models: list, volume: Any, size: int, stride: int, mode: str, batch_size: int, tta: bool, crop: str,
             precision: str, stream: bool | None, progress: bool) -> list[np.ndarray]:
    """:func:`predict_volume` of ``models``: one model, or several that share an encoder."""
    model = models[0]
    if crop not in CROPS:
        raise Planar3DError(f"crop must be one of {list(CROPS)}. Received: crop={crop!r}")
    exported = isinstance(model, ExportedNetwork)
    precision = model.precision if exported else resolve_precision(precision)
    paper_path = crop == "off" and precision == "float32"
    streamable = stride % ENCODER_CHUNK == 0 and size % stride == 0 if exported else can_stream(model, size, stride)
    stream = (not paper_path if stream is None else bool(stream)) and streamable
    if paper_path and not stream and not exported:
        return [_predict_whole_windows(member, volume, size=size, stride=stride, mode=mode, batch_size=batch_size,
                                       tta=tta, progress=progress) for member in models]

    check_window_geometry(size, stride)
    check_blend(mode, size, stride)
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 4 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    input_shape = tuple(model.input_shape)
    channels = int(input_shape[-1])
    if volume.ndim not in (3, 4) or (volume.ndim == 4 and volume.shape[-1] != channels):
        raise Planar3DError(f"volume must have shape (slices, rows, cols) or (slices, rows, cols, {channels}) for this "
                            f"model. Received: volume.shape={volume.shape}")
    depth = volume.shape[0]
    starts = window_starts(depth, size, stride)
    if input_shape[1] is not None and input_shape[1] != size:
        raise Planar3DError(f"the model takes windows of {input_shape[1]} slices. Received: size={size}")

    # head boxes (flipped with the volume for each TTA pass)
    if crop == "off":
        mask = None
        full = Box(0, volume.shape[1], 0, volume.shape[2])
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ForegroundWarning)
            mask = head_mask(volume if volume.ndim == 3 else volume[..., 0])
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
    members = models
    nets = members if exported else [inference_model(member, precision) for member in members]
    forwards = nets if exported else [forward_functions(net, precision) for net in nets]

    passes = flip_sets(tta)
    totals = [None] * len(members)
    with tqdm(total=len(starts) * len(passes), desc="windows", unit="window", leave=False,
              disable=None if progress else True) as bar:
        for axes in passes:
            flipped = np.flip(volume, axes) if axes else volume
            if mask is None:
                boxes = [full] * len(starts)
            else:
                per = _AUTO_CROP if crop == "auto" else crop
                boxes = crop_boxes(np.flip(mask, axes) if axes else mask, size, stride, per=per)
            if flipped.ndim == 3:
                flipped = np.repeat(flipped[..., None], channels, axis=-1)  # (slices, rows, cols, channels)
            windows = _one_pass(nets[0], forwards, np.ascontiguousarray(flipped), boxes, size, stride, stream, mode, bar)
            for member, member_windows in enumerate(windows):
                probability = recompose(tf.constant(member_windows[..., None]), depth, size, stride, mode)[..., 0]
                probability = tf.reverse(probability, axes) if axes else probability
                probability = tf.cast(probability, tf.float64)
                totals[member] = probability if totals[member] is None else totals[member] + probability
    return [(total / len(passes)).numpy().astype(np.float32) for total in totals]
