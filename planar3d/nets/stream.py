"""The planar res-u-net as two halves: encoder blocks 1-4, and the rest from ``block4_pool`` on.

With ``mapping="planar"`` the encoder's convolutions never mix slices; only its (2, 2, 2)
poolings do, and they pool slices in aligned groups of 2, 4 and 8. So blocks 1-4 of a chunk of
8 consecutive slices (starting at a multiple of 8 within the window) compute exactly what they
compute inside the whole window: ``encode(window) == concat(encode(chunk) for its chunks)``
along the slice axis. :func:`encode` and :func:`decode` replay the model's own layers (no copy
of the weights), so ``decode(model, encode(model, x)) == model(x)``; streaming inference
(:func:`planar3d.inference.predict.predict_volume`) encodes each chunk once and reuses it in the
windows that share it.
"""

from __future__ import annotations

from typing import Any

from planar3d.errors import Planar3DError
from planar3d.nets.model import BOTTLENECK_SOURCES, DECODER_SKIPS, ENCODER_LAYERS

__all__ = ["ENCODER_CHUNK", "SKIP_SCALES", "decode", "encode", "has_res_unet_layers", "is_planar_res_unet"]

#: slices pooled into one ``block4_conv3`` slice: chunks must hold a multiple of this.
ENCODER_CHUNK = 8
#: skip -> its downsampling factor (slices, rows, cols alike).
SKIP_SCALES: dict[str, int] = {f"block{block}_conv{n}": 2**i for i, (block, n, _) in enumerate(ENCODER_LAYERS)}


def _layer_names() -> set[str]:
    names = {f"block{b}_conv{c}" for b, n, _ in ENCODER_LAYERS for c in range(1, n + 1)}
    names |= {f"block{b}_pool" for b, _, _ in ENCODER_LAYERS} | set(BOTTLENECK_SOURCES) | {"block5_residual", "output"}
    for block in DECODER_SKIPS:
        names |= {f"block{block}_{part}" for part in ("up", "skip", "conv1", "conv2", "residual")}
    return names


def has_res_unet_layers(model: Any) -> bool:
    """True when ``model`` has every layer :func:`encode` and :func:`decode` replay (any mapping)."""
    return _layer_names() <= {layer.name for layer in getattr(model, "layers", [])}


def is_planar_res_unet(model: Any) -> bool:
    """True when ``model`` is the res-u-net with planar (slice-flat) encoder convolutions."""
    from planar3d.nets.layers import PlanarConv3D

    if not has_res_unet_layers(model):
        return False
    return all(isinstance(model.get_layer(f"block{b}_conv{c}"), PlanarConv3D) and model.get_layer(f"block{b}_conv{c}").axis == 0
               for b, n, _ in ENCODER_LAYERS for c in range(1, n + 1))


def encode(model: Any, inputs: Any) -> dict[str, Any]:
    """Encoder blocks 1-4 of ``model``: the four U-Net skips.

    Args:
        model: the planar res-u-net (:func:`planar3d.nets.model.build_model`, any mapping).
        inputs: `(batch, slices, rows, cols, channels)`; slices a multiple of 8, rows and cols
            multiples of 16.

    Returns:
        ``{"block1_conv2": (batch, slices, rows, cols, 64), "block2_conv2": (..., /2, 128),
        "block3_conv3": (..., /4, 256), "block4_conv3": (..., /8, 512)}``.
    """
    skips = {}
    x = inputs
    for block, n_convs, _ in ENCODER_LAYERS:
        for conv in range(1, n_convs + 1):
            x = model.get_layer(f"block{block}_conv{conv}")(x)
        skips[f"block{block}_conv{n_convs}"] = x
        if block < len(ENCODER_LAYERS):
            x = model.get_layer(f"block{block}_pool")(x)
    return skips


def _slice_halo(model: Any, block: int) -> int:
    """Slices on each side that the two convolutions of decoder ``block`` read beyond an output slice."""
    return sum((layer.kernel_size[0] - 1) // 2 * layer.dilation_rate[0]
               for layer in (model.get_layer(f"block{block}_conv1"), model.get_layer(f"block{block}_conv2")))


def decode(model: Any, skips: dict[str, Any], keep: tuple[int, int] | None = None) -> Any:
    """The rest of ``model`` from its skips: ``block4_pool``, bottleneck, decoder, output.

    With ``keep=(lo, hi)`` only output slices ``lo .. hi - 1`` are computed: the last
    (full-resolution) decoder block runs on those slices plus the halo its two convolutions
    read (2 slices each side, fewer at the window's ends, where the full computation pads with
    zeros too), its upsampling on the matching half-resolution slices (kernel 2, stride 2: each
    output slice comes from one input slice). The result equals ``decode(...)[:, lo:hi]``.
    The paper's middle recomposition keeps 8 of 16 slices of most windows
    (:func:`planar3d.data.geometry.kept_slices`), so the most expensive block runs on 12 of 16.

    Args:
        model: as for :func:`encode`.
        skips: :func:`encode`'s output for whole windows (slices a multiple of 16).
        keep: ``(lo, hi)`` slices of the window to compute, or ``None`` for all.

    Returns:
        `(batch, slices, rows, cols, 1)` sigmoid probabilities, as ``model(inputs)`` (only
        ``hi - lo`` slices with ``keep``).

    Raises:
        Planar3DError: a skip is missing.
    """
    missing = [name for _, (_, _, name) in DECODER_SKIPS.items() if name not in skips]
    if missing:
        raise Planar3DError(f"decode needs the skips {missing}. Received: {sorted(skips)}")
    x = model.get_layer("block4_pool")(skips["block4_conv3"])
    pooled = x
    for name in BOTTLENECK_SOURCES:
        x = model.get_layer(name)(x)
    x = model.get_layer("block5_residual")([pooled, x])
    last = list(DECODER_SKIPS)[-1]
    for block, (_, _, skip) in DECODER_SKIPS.items():
        skip_features = skips[skip]
        if block == last and keep is not None:
            lo, hi = keep
            halo, slices = _slice_halo(model, block), skip_features.shape[1]
            start, stop = max(0, lo - halo) // 2 * 2, min(slices, -(-(hi + halo) // 2) * 2)  # even: one input slice -> two
            x, skip_features = x[:, start // 2 : stop // 2], skip_features[:, start:stop]
        up = model.get_layer(f"block{block}_up")(x)
        up = model.get_layer(f"block{block}_skip")([up, skip_features])
        c2 = model.get_layer(f"block{block}_conv2")(model.get_layer(f"block{block}_conv1")(up))
        x = model.get_layer(f"block{block}_residual")([up, c2])
        if block == last and keep is not None:
            x = x[:, lo - start : hi - start]
    return model.get_layer("output")(x)
