"""Fast inference of one preprocessed scan: only the head, each slice encoded once, bfloat16 where native.

:func:`predict_volume` computes what :func:`planar3d.windows.predict_volume` computes (window,
predict, recompose, optional flips) with these levers, each optional:

* ``crop``: the network runs on the head's rows x cols only (:mod:`planar3d.foreground`);
  windows without head are skipped; the prediction is pasted back, 0 outside the crop.
* ``stream``: for the planar res-u-net at a stride that is a multiple of 8 dividing the window
  (the paper's 16/8), encoder blocks 1-4 run once per chunk of ``stride`` slices and their
  features are reused by every window holding that chunk (:mod:`planar3d.nets.stream`: exact,
  the slices are only mixed by aligned poolings). Only the chunks of the current window are
  held, never the whole volume's features (block 1 alone would be 4 GB at 256³). Other
  mappings (``acs``, ``inflate``, ``none``, whose encoders mix slices) and other strides fall
  back to the per-window path.
* ``precision``: ``"bfloat16"`` / ``"float16"`` run the network under Keras' ``mixed_*`` policy
  (weights kept in float32, the sigmoid output in float32); ``"auto"`` picks per device with
  :func:`resolve_precision`. In a reduced format the forward steps run as ``tf.function``
  graphs (:func:`forward_functions`): eager bfloat16 pays a cast around every layer that the
  graph fuses away (measured in ``docs/bench_inference.md``); float32 stays eager, so its
  results stay bit-identical to the paper's path.

With the ``"middle"`` recomposition (the paper's Eq. 1), the decoder of each window computes
only the slices the recomposition keeps (:func:`planar3d.windows.kept_slices`: 8 of 16 for most
windows; the last, full-resolution block runs on those plus a 2-slice halo), exactly.

With ``crop="off"``, ``precision="float32"`` and ``stream=False`` the call is
:func:`planar3d.windows.predict_volume` itself, bit for bit.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from typing import Any

import numpy as np

from planar3d.errors import Planar3DError

__all__ = ["CROP_CHOICES", "PRECISIONS", "Forward", "can_stream", "forward_functions", "inference_model", "predict_volume", "resolve_precision"]

#: ``crop`` values: ``auto`` (the measured default, per-window boxes), ``off``, or a box per ``window`` / ``scan``.
CROP_CHOICES = ("auto", "off", "window", "scan")
#: ``precision`` values.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_AUTO_CROP = "window"
_POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


# ----------------------------------------------------------------------------- precision


def _cpu_flags() -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (Linux: x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(precision: str = "auto") -> str:
    """The number format inference runs in.

    ``"auto"`` detects what the device computes natively:

    * a visible GPU with compute capability >= 8.0 (Ampere and later: bfloat16 tensor cores) ->
      ``"bfloat16"``; 7.x (Volta, Turing: float16 tensor cores only) -> ``"float16"``; older ->
      ``"float32"``;
    * a CPU whose flags (``/proc/cpuinfo``) include ``avx512_bf16`` or ``amx_bf16`` (x86) or
      ``bf16`` (Arm), with oneDNN on (TensorFlow's x86 default; ``TF_ENABLE_ONEDNN_OPTS=0``
      turns it off, and bfloat16 then runs emulated, slower than float32) -> ``"bfloat16"``;
    * anything else (AVX2-only CPUs, macOS, Windows: no flags read) -> ``"float32"``.

    Args:
        precision: one of :data:`PRECISIONS`; anything but ``"auto"`` is returned as given.

    Returns:
        ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Raises:
        Planar3DError: an unknown ``precision``.
    """
    if precision not in PRECISIONS:
        raise Planar3DError(f"precision must be one of {list(PRECISIONS)}. Received: precision={precision!r}")
    if precision != "auto":
        return precision
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        return "bfloat16" if capability >= (8, 0) else "float16" if capability >= (7, 0) else "float32"
    flags = _cpu_flags()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False")
    arm = platform.machine().lower() in ("aarch64", "arm64")
    native = bool({"avx512_bf16", "amx_bf16"} & flags) or (arm and "bf16" in flags)
    return "bfloat16" if native and onednn else "float32"


def inference_model(model: Any, precision: str) -> Any:
    """``model`` itself for float32, else a clone under ``mixed_bfloat16`` / ``mixed_float16``.

    The clone has the same layers, names and (float32) weights; each layer computes in the
    reduced format except ``output``, which stays float32 (as :func:`planar3d.nets.model.build_model`
    builds it), so probabilities are float32.

    Raises:
        Planar3DError: ``precision`` is not ``"float32"``, ``"bfloat16"`` or ``"float16"``.
    """
    if precision == "float32":
        return model
    if precision not in _POLICIES:
        raise Planar3DError(f"precision must be float32, bfloat16 or float16. Received: precision={precision!r}")
    import keras

    def clone(layer):
        config = layer.get_config()
        if layer.name != "output":
            config["dtype"] = _POLICIES[precision]
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


class Forward:
    """The three forward steps of one inference network: ``encode``, ``decode`` and ``whole``.

    ``encode``/``decode`` replay the res-u-net's layers (:mod:`planar3d.nets.stream`), ``whole``
    is the model call. With ``graph=True`` each step is a ``tf.function`` traced once per input
    shape and kept in a cache: cropped windows come in a few distinct shapes (multiples of
    16), and a graph with unknown rows and columns (``reduce_retracing``) is not an option, as
    oneDNN's bfloat16 ``Conv3DTranspose`` refuses it.
    """

    def __init__(self, net: Any, graph: bool):
        from planar3d.nets.stream import decode, encode

        self.graph = graph
        self._steps = {"encode": lambda inputs, keep: encode(net, inputs),
                       "decode": lambda skips, keep: decode(net, skips, keep),
                       "whole": lambda inputs, keep: net(inputs, training=False)}
        self._graphs: dict[tuple, Any] = {}

    def _run(self, step: str, inputs: Any, keep: tuple[int, int] | None = None) -> Any:
        if not self.graph:
            return self._steps[step](inputs, keep)
        import tensorflow as tf

        tensors = inputs.values() if isinstance(inputs, dict) else [inputs]
        key = (step, keep, *(tuple(t.shape) for t in tensors))
        if key not in self._graphs:
            # a fresh Python function per graph: TensorFlow's retracing warning counts per function
            self._graphs[key] = tf.function(lambda x, run=self._steps[step], keep=keep: run(x, keep))
        return self._graphs[key](inputs)

    def encode(self, inputs: Any) -> dict[str, Any]:
        """:func:`planar3d.nets.stream.encode` of ``inputs``."""
        return self._run("encode", inputs)

    def decode(self, skips: dict[str, Any], keep: tuple[int, int] | None = None) -> Any:
        """:func:`planar3d.nets.stream.decode` of ``skips`` (only slices ``keep`` when given)."""
        return self._run("decode", skips, keep)

    def whole(self, inputs: Any) -> Any:
        """The model's output for ``inputs``."""
        return self._run("whole", inputs)

    @property
    def n_graphs(self) -> int:
        """Graphs traced so far (one per step and input shape)."""
        return len(self._graphs)


def forward_functions(net: Any, precision: str) -> Forward:
    """:class:`Forward` steps of ``net``: graphs in a reduced ``precision``, eager in float32."""
    return Forward(net, graph=precision != "float32")


# ----------------------------------------------------------------------------- streaming


def can_stream(model: Any, size: int, stride: int) -> bool:
    """True when the streamed encoder is exact for ``model`` at this window geometry.

    Needs the planar res-u-net (encoder convolutions flat along the slice axis) and a stride
    that is a multiple of 8 (one ``block4_conv3`` slice) and divides the window size.
    """
    from planar3d.nets.stream import ENCODER_CHUNK, is_planar_res_unet

    return stride % ENCODER_CHUNK == 0 and size % stride == 0 and is_planar_res_unet(model)


def _crop_skips(features: dict[str, Any], computed: Any, box: Any) -> dict[str, Any]:
    """Skips computed on box ``computed`` cut down to ``box`` (corners multiples of 16)."""
    from planar3d.nets.stream import SKIP_SCALES

    out = {}
    for name, tensor in features.items():
        scale = SKIP_SCALES[name]
        r0, c0 = (box.row0 - computed.row0) // scale, (box.col0 - computed.col0) // scale
        rows, cols = box.shape[0] // scale, box.shape[1] // scale
        out[name] = tensor if (r0, c0, rows, cols) == (0, 0, *tensor.shape[2:4]) else tensor[:, :, r0:r0 + rows, c0:c0 + cols]
    return out


# ----------------------------------------------------------------------------- one pass


def _one_pass(net: Any, forward: Forward, volume: np.ndarray, boxes: list, size: int, stride: int, stream: bool,
              mode: str, progress) -> np.ndarray:
    """Window outputs `(n, size, rows, cols)` float32 of one (possibly flipped) volume.

    With the ``"middle"`` recomposition and a res-u-net whose layers can be replayed, each
    window's decoder computes only the slices the recomposition keeps (the others stay 0).
    """
    import tensorflow as tf

    from planar3d.nets.stream import has_res_unet_layers
    from planar3d.windows import kept_slices, window_starts

    starts = window_starts(volume.shape[0], size, stride)
    replay = has_res_unet_layers(net)
    keeps = kept_slices(volume.shape[0], size, stride) if replay and mode == "middle" else [(0, size)] * len(starts)
    encode, decode = forward.encode, forward.decode
    out = np.zeros((len(starts), size, *volume.shape[1:3]), dtype=np.float32)
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
                prediction = decode(skips, keeps[k])
                for c in [c for c in cache if c <= k]:  # chunk k is in no later window
                    del cache[c]
            else:
                window = tf.constant(volume[start : start + size][None, :, box.row0:box.row1, box.col0:box.col1])
                # the replay takes any rows x cols; a Keras model call only its input shape
                prediction = decode(encode(window), keeps[k]) if replay else forward.whole(window)
            lo, hi = keeps[k]
            out[k][(slice(lo, hi), *box.slices)] = tf.cast(prediction, tf.float32).numpy()[0, ..., 0]
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
    stream: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Probability volume of one preprocessed scan, with the levers of this module.

    Args:
        model: the trained Keras model (sigmoid output), `(batch, size, rows, cols, channels)`.
        volume: `(slices, rows, cols)` preprocessed scan; rows and cols multiples of 16.
        size, stride, mode, tta: as :func:`planar3d.windows.predict_volume`.
        batch_size: windows per forward pass of the per-window path (``crop="off"``, no
            streaming); the cropped and streamed paths run one window at a time (their shapes
            differ per window; on a CPU batch 1 is as fast, with less memory).
        crop: ``"auto"`` (= ``"window"``, measured in ``docs/bench_inference.md``), ``"window"``
            (a box per window), ``"scan"`` (one box for all windows) or ``"off"`` (the whole
            field of view, the paper).
        precision: ``"auto"`` (:func:`resolve_precision`), ``"float32"`` (the paper),
            ``"bfloat16"`` or ``"float16"``.
        stream: reuse encoder features between windows when :func:`can_stream`; silently the
            per-window path otherwise (other mappings or strides).
        progress: a tqdm bar over the windows on a terminal (never in a pipe).

    Returns:
        `(slices, rows, cols)` float32 probabilities; 0 outside the crop and in windows
        without head.

    Raises:
        Planar3DError: a bad ``crop`` or ``precision``, or what :func:`planar3d.windows.predict_volume`
            raises.
    """
    import tensorflow as tf

    from planar3d import windows as plain
    from planar3d.foreground import ForegroundWarning, crop_boxes, head_mask

    if crop not in CROP_CHOICES:
        raise Planar3DError(f"crop must be one of {list(CROP_CHOICES)}. Received: crop={crop!r}")
    precision = resolve_precision(precision)
    stream = bool(stream) and can_stream(model, size, stride)
    if crop == "off" and precision == "float32" and not stream and not progress:
        return plain.predict_volume(model, volume, size=size, stride=stride, mode=mode, batch_size=batch_size, tta=tta)

    # checks: the plain path's, on an empty model call
    plain._check_window_geometry(size, stride)
    plain._check_mode(mode, size, stride)
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 4 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise Planar3DError(f"volume must have shape (slices, rows, cols). Received: volume.shape={volume.shape}")
    depth = volume.shape[0]
    starts = plain.window_starts(depth, size, stride)
    input_shape = tuple(model.input_shape)
    if input_shape[1] is not None and input_shape[1] != size:
        raise Planar3DError(f"the model takes windows of {input_shape[1]} slices. Received: size={size}")
    channels = int(input_shape[-1])

    # head boxes (flipped with the volume for each TTA pass)
    if crop == "off":
        from planar3d.foreground import Box

        mask = None
        full = Box(0, volume.shape[1], 0, volume.shape[2])
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ForegroundWarning)
            mask = head_mask(volume)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
    net = inference_model(model, precision)
    forward = forward_functions(net, precision)

    from tqdm.auto import tqdm

    passes = plain._flip_sets(tta)
    total = None
    with tqdm(total=len(starts) * len(passes), desc="windows", unit="window", leave=False,
              disable=None if progress else True) as bar:
        for axes in passes:
            flipped = np.flip(volume, axes) if axes else volume
            if mask is None:
                boxes = [full] * len(starts)
            else:
                per = _AUTO_CROP if crop == "auto" else crop
                boxes = crop_boxes(np.flip(mask, axes) if axes else mask, size, stride, per=per)
            flipped = np.repeat(flipped[..., None], channels, axis=-1)  # (slices, rows, cols, channels)
            windows = _one_pass(net, forward, np.ascontiguousarray(flipped), boxes, size, stride, stream, mode, bar)
            probability = plain.recompose(tf.constant(windows[..., None]), depth, size, stride, mode)[..., 0]
            probability = tf.reverse(probability, axes) if axes else probability
            probability = tf.cast(probability, tf.float64)
            total = probability if total is None else total + probability
    return (total / len(passes)).numpy().astype(np.float32)
