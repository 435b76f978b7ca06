"""The inference number format: which one a device computes natively (``--precision auto``), the
fall-back to float32 for a model whose lesion volume a reduced format moves (:func:`precision_for_model`),
the model rebuilt under Keras' mixed policy, and its forward steps (graphs in a reduced format).
"""

from __future__ import annotations

import os
import platform
from typing import Any

from planar3d.config import PRECISIONS
from planar3d.errors import Planar3DError
from planar3d.machine import cpu_isa_flags

__all__ = ["VOLUME_TOLERANCE", "Forward", "fallback_notice", "forward_functions", "inference_model", "precision_for_model",
           "relative_volume_difference", "resolve_precision"]


#: The bound a reduced format must keep: the relative lesion-volume difference from float32 on a
#: model's validation scans (1 % of the volume; LST-AI's port found +14 % from a numerics change).
VOLUME_TOLERANCE = 0.01

_POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


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
    flags = set(cpu_isa_flags())
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False")
    arm = platform.machine().lower() in ("aarch64", "arm64")
    native = bool({"avx512_bf16", "amx_bf16"} & flags) or (arm and "bf16" in flags)
    return "bfloat16" if native and onednn else "float32"


def relative_volume_difference(record: dict) -> float:
    """``|V_reduced - V_float32| / V_float32`` of a precision record (its ``volume_ml_float32`` and
    ``volume_ml_reduced``); 0 when both volumes are 0, infinite when only the float32 one is."""
    reference, other = float(record["volume_ml_float32"]), float(record["volume_ml_reduced"])
    if reference > 0:
        return abs(other - reference) / reference
    return 0.0 if other == reference else float("inf")


def precision_for_model(requested: str, auto_choice: str, record: dict | None,
                        tolerance: float = VOLUME_TOLERANCE) -> str:
    """The number format one model runs in: ``--precision auto`` keeps a reduced format only where
    the model's fold measured it within ``tolerance`` of float32's lesion volume.

    Args:
        requested: the ``precision`` asked for; anything but ``"auto"`` is returned as given
            (an explicit float32, bfloat16 or float16 is never overridden).
        auto_choice: what ``"auto"`` resolves to on this device (:func:`resolve_precision`).
        record: the model's precision record (``calibration.json``'s ``precision``: ``format``,
            the reduced format measured, ``volume_ml_float32`` and ``volume_ml_reduced``, the
            validation scans' total lesion volume in each), or None.
        tolerance: the bound on :func:`relative_volume_difference`.

    Returns:
        ``requested`` unless it is ``"auto"``; else ``"float32"`` when the record measured
        ``auto_choice`` and found the volume moved by more than ``tolerance``; else
        ``auto_choice`` (no record, or a record of another format: today's rule).
    """
    if requested != "auto":
        return requested
    if auto_choice == "float32" or not record or record.get("format") != auto_choice:
        return auto_choice
    return "float32" if relative_volume_difference(record) > tolerance else auto_choice


def fallback_notice(model: str, auto_choice: str, record: dict) -> str:
    """The line said when :func:`precision_for_model` runs ``model`` in float32 instead of ``auto_choice``."""
    moved = relative_volume_difference(record)
    return (f"{model}: float32 instead of {auto_choice}: {auto_choice} moved its validation lesion volume by "
            f"{100 * moved:.2f} % (bound {100 * VOLUME_TOLERANCE:g} %)")


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


class _Step:
    """One forward step with its ``keep`` bound, as a callable object: TensorFlow counts retracings
    per Python code object (every lambda of one line shares one), and a graph per input shape
    would then read as retracing and log its warning; an object is counted on its own."""

    def __init__(self, run: Any, keep: tuple[int, int] | None):
        self.run, self.keep = run, keep

    def __call__(self, inputs: Any) -> Any:
        return self.run(inputs, self.keep)


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
            self._graphs[key] = tf.function(_Step(self._steps[step], keep))
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
