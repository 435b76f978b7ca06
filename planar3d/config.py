"""One configuration object for every entry point, with the ``paper`` and ``demo`` presets.

A run's effective configuration is saved as ``config.json`` in its folder; command-line
flags override preset values (see :mod:`planar3d.cli.common`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planar3d.errors import InputFileError, Planar3DError

__all__ = [
    "BACKBONES", "BLENDS", "CALIBRATIONS", "CHOICES", "CROPS", "Config", "DEVICES", "LAUNCHERS", "MAPPINGS", "PAPER_MAPPINGS", "PRECISIONS",
    "PRESETS", "TARGETS", "THRESHOLD_RULES", "load_config", "make_config", "read_mapping_file",
    "EXPORT_FORMATS", "EXPORT_QUANTIZATIONS", "MODALITIES", "RUNTIME_CHOICES", "RUNTIMES",
]

# ----------------------------------------------------------------------------- the vocabulary
# Every choice a user can make, defined once: Config validates against these, the command-line
# flags take their ``choices`` from them, and the modules that act on a choice import it.

#: 2D->3D kernel mappings (planar3d.nets.mapping, planar3d.nets.backbones).
MAPPINGS = ("planar", "acs", "soft_acs", "inflate", "none")
#: the mappings of the paper's own network (soft ACS needs a registry backbone).
PAPER_MAPPINGS = ("planar", "acs", "inflate", "none")
#: ``"paper"`` (the paper's planar res-u-net) and the registry backbones of planar3d.nets.backbones.
BACKBONES = ("paper", "vgg16", "vgg19", "resnet50", "resnet101", "densenet121", "efficientnetb0", "mobilenetv2",
             "convnext_tiny")
#: window recomposition (planar3d.inference.recompose; the paper: middle, Eq. 1).
BLENDS = ("middle", "mean", "gaussian")
#: probability -> mask rules (planar3d.inference.postprocess.binarize).
THRESHOLD_RULES = ("fixed", "reference")
#: inference crop: auto (= window), off (the paper), a box per window or one per scan.
CROPS = ("auto", "off", "window", "scan")
#: inference number formats.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
#: formats of planar3d export (planar3d.apps.export): a TensorFlow SavedModel, ONNX, OpenVINO IR.
EXPORT_FORMATS = ("savedmodel", "onnx", "openvino")
#: planar3d export --quantize: none (float32) or int8 (the decoder, ONNX only; planar3d.apps.quantize).
EXPORT_QUANTIZATIONS = ("none", "int8")
#: engines that run an exported network (planar3d.inference.runtimes).
RUNTIMES = ("tensorflow", "onnxruntime", "openvino")
#: predict's --runtime: a runtime, or auto (the one that runs the model fastest here, measured).
RUNTIME_CHOICES = ("auto", *RUNTIMES)
#: probability calibration at inference: none (the network's sigmoid, the paper) or the temperature
#: fitted on a fold's validation scans (planar3d.inference.temperature, RUN/fold_k/calibration.json).
CALIBRATIONS = ("none", "temperature")
#: where a grid's trainings run (planar3d.runs.launch).
LAUNCHERS = ("none", "local", "slurm")
#: where inference runs.
DEVICES = ("auto", "cpu", "gpu")
#: the scans a data set may offer per patient, as ``--channels`` names them (planar3d.io.records.Record):
#: FLAIR, T1-weighted, T1-weighted after contrast (BRATS T1c, Ljubljana T1WKS/T1POST, MSSEG GADO),
#: T2-weighted, proton density (MSSEG DP).
MODALITIES = ("flair", "t1", "t1c", "t2", "pd")
#: what a data set's masks mark: ``auto`` (the layout's binary lesion mask; the whole tumour of a
#: BRATS label map) or a BRATS tumour region (planar3d.io.brats.TARGET_LABELS).
TARGETS = ("auto", "whole_tumour", "tumour_core", "enhancing_tumour")

CHOICES: dict[str, tuple[str, ...]] = {
    "mapping": MAPPINGS,
    "backbone": BACKBONES,
    "task": ("segmentation", "classification"),
    "bottleneck_init": ("vgg", "random"),
    "blend": BLENDS,
    "threshold_rule": THRESHOLD_RULES,
    "strategy": ("default", "mirrored", "multiworker"),
    "eval_space": ("native", "resampled"),
    "lr_schedule": ("constant", "cosine"),
    "split": ("patient", "centre"),
    "phantom_mode": ("simple", "realistic"),
    "crop": CROPS,
    "precision": PRECISIONS,
    "calibration": CALIBRATIONS,
    "target": TARGETS,
}


@dataclass
class Config:
    """Every setting of a run. Defaults are the paper's (the ``paper`` preset).

    Data:
        data: a dataset folder (MSSEG-2016 layout) or CSV/TSV table; ``None`` for the
            built-in phantom (generated on first use).
        cache_dir: preprocessed-volume cache; ``None`` for the default.
        size: edge of the resampled cube (paper: 256), a multiple of 16.
        robust_normalisation: percentile instead of min-max intensity scaling.
        phantom_scale, phantom_n_per_centre, phantom_lesion_load, phantom_seed: built-in phantom
            options (``--seed`` does not change the phantom); phantom_mode: ``simple`` (bright
            white-matter ovoids, one acquisition) or ``realistic`` (MS lesion types and sizes,
            partial volume, per-centre contrast, bias and SNR; :mod:`planar3d.io.phantom_realistic`).
    BIDS input (when ``data`` is a BIDS root; see :mod:`planar3d.io.bids`): masks_from
        (derivatives pipeline holding the lesion masks), acq and run (pick one FLAIR among
        several), centre_column (participants.tsv column naming the centre; default the
        sidecar's scanner), participant_label and session_label (subjects and sessions to use).
    target: what the masks mark (``auto``: the layout's lesion mask, the whole tumour of a BRATS
        label map; ``whole_tumour``, ``tumour_core``, ``enhancing_tumour``: BRATS regions, see
        :mod:`planar3d.io.brats`).
    Windows: window (slices per window, 16) and stride (8); channels of the model input (1:
        grey, 3: the paper's repeated grey; with several modalities, their number); modalities
        (the scans stacked as input channels, :data:`MODALITIES` names, FLAIR first: its grid is
        the masks'; ``["flair"]``: the paper); empty_window_weight (1 keeps all windows as
        the paper, 0 drops windows without lesion voxels).
    Model: encoder_weights (``"imagenet"``, a path, or ``"none"``), freeze_encoder,
        bottleneck_init, mapping; backbone (``"paper"``: the paper's planar 3D res-u-net of
        :func:`planar3d.nets.model.build_model`; a :data:`planar3d.nets.backbones.BACKBONES`
        name: that encoder mapped to 3D under a U-Net decoder or a classification head).
    Task: task (``"segmentation"``: lesion masks from windows; ``"classification"``: one
        label per whole volume resampled to ``size``), labels (a ``subject,label`` table;
        ``None`` with the built-in phantom uses its lesion-load target, see
        :func:`planar3d.data.labels.lesion_load_labels`).
    Training: batch_size, epochs, lr (Adam), lr_decay (Keras-2 per-step inverse-time
        decay: lr / (1 + decay * step)), lr_schedule (``constant``: lr, with ``lr_decay``
        if set, as the paper; ``cosine``: lr decayed to 0 over all epochs' steps by a half
        cosine), patience (early stopping on val_loss), seed,
        lr_schedule, mixed_precision, deterministic (TensorFlow op determinism: deterministic
        kernels where TensorFlow has a choice, i.e. on GPUs, and an error for ops without one;
        re-runs and resumes are bit-identical on the same machine, thread count and software,
        which on CPU holds with or without it; it does not make machines with other
        instruction sets or core counts agree, see ``benchmarks/reproducibility.py``), strategy.
    Repetition: seeds (``None``: one run with ``seed`` in today's layout; a list: one run per
        seed in ``seed_<s>/`` folders, summarised over seeds, see :mod:`planar3d.runs.grid`).
    Inference: threshold (on probabilities; paper 16/256), threshold_rule, blend, tta,
        eval_space (``native``: metrics on the scan's own grid; ``resampled``: in the
        size³ space, as the reference code), crop (``auto``: the network runs on the head's
        rows and columns only, windows without head skipped; ``off``: the whole field of view,
        the paper), precision (``auto``: bfloat16 where the CPU or GPU computes it natively,
        float16 on GPUs with float16 tensor cores only, float32 elsewhere; see
        :func:`planar3d.inference.precision.resolve_precision`; a model whose fold measured its
        validation lesion volume moving more than 1 % in that format runs in float32, see
        :func:`planar3d.inference.precision.precision_for_model`), calibration (``none``: the
        network's probabilities, the paper; ``temperature``: each model's probabilities rescaled by
        the temperature fitted on its fold's validation scans, :mod:`planar3d.inference.temperature`).
        ``crop="off", precision="float32"`` is the paper's whole-volume float32 inference, bit for bit
        (docs/deviations.md).
    Cross-validation: split (``patient``: the paper's folds, one test patient per centre,
        :func:`planar3d.data.splits.cv_split`; ``centre``: leave-one-centre-out,
        :func:`planar3d.data.splits.centre_split`), folds.
    """

    preset: str = "paper"
    data: str | None = None
    cache_dir: str | None = None
    size: int = 256
    robust_normalisation: bool = False
    phantom_scale: float | None = None
    phantom_n_per_centre: int = 5
    phantom_lesion_load: float | None = None
    phantom_seed: int = 0
    phantom_mode: str = "simple"
    masks_from: str | None = None
    acq: str | None = None
    run: int | None = None
    centre_column: str | None = None
    participant_label: list[str] | None = None
    session_label: list[str] | None = None
    target: str = "auto"
    window: int = 16
    stride: int = 8
    channels: int = 1
    modalities: list[str] = field(default_factory=lambda: ["flair"])
    empty_window_weight: float = 1.0
    encoder_weights: str = "imagenet"
    freeze_encoder: bool = True
    bottleneck_init: str = "vgg"
    mapping: str = "planar"
    backbone: str = "paper"
    task: str = "segmentation"
    labels: str | None = None
    batch_size: int = 2
    epochs: int = 100
    lr: float = 5e-5
    lr_decay: float = 1.99e-7
    lr_schedule: str = "constant"
    patience: int = 40
    seed: int = 0
    seeds: list[int] | None = None
    mixed_precision: bool = False
    deterministic: bool = True
    strategy: str = "default"
    threshold: float = 16 / 256
    threshold_rule: str = "fixed"
    blend: str = "middle"
    tta: bool = False
    eval_space: str = "native"
    crop: str = "auto"
    precision: str = "auto"
    calibration: str = "none"
    split: str = "patient"
    folds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])

    def validate(self) -> "Config":
        """Check every value; return self.

        Raises:
            Planar3DError: the first invalid value, named with the value received.
        """
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise Planar3DError(f"{name} must be one of {list(choices)}. Received: {name}={value!r}")
        positive = ("size", "window", "stride", "batch_size", "epochs")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise Planar3DError(f"{name} must be positive. Received: {name}={getattr(self, name)}")
        if self.size % 16 or self.window % 16:
            raise Planar3DError(
                f"size and window must be multiples of 16. Received: size={self.size}, window={self.window}"
            )
        if self.stride > self.window:
            raise Planar3DError(f"stride must not exceed window. Received: stride={self.stride}")
        self._validate_channels()
        if self.empty_window_weight not in (0, 1):
            raise Planar3DError(
                "empty_window_weight must be 1 (train on every window, the paper) or 0 (drop windows "
                f"without lesion voxels). Received: empty_window_weight={self.empty_window_weight}"
            )
        if self.lr <= 0 or self.lr_decay < 0 or self.patience < 0:
            raise Planar3DError(
                f"lr must be > 0, lr_decay and patience >= 0. Received: lr={self.lr}, "
                f"lr_decay={self.lr_decay}, patience={self.patience}"
            )
        if self.lr_schedule == "cosine" and self.lr_decay > 0:
            raise Planar3DError(
                "lr_schedule 'cosine' replaces the inverse-time lr_decay; set lr_decay to 0. "
                f"Received: lr_schedule={self.lr_schedule!r}, lr_decay={self.lr_decay}"
            )
        self._validate_backbone()
        if not 0 < self.threshold < 1:
            raise Planar3DError(f"threshold must be in (0, 1). Received: threshold={self.threshold}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise Planar3DError(f"seeds must be a non-empty list without repeats. Received: seeds={self.seeds}")
        return self

    def _validate_channels(self) -> None:
        modalities = list(self.modalities)
        unknown = [name for name in modalities if name not in MODALITIES]
        if unknown or not modalities or len(set(modalities)) != len(modalities) or modalities[0] != "flair":
            raise Planar3DError(
                f"channels must be distinct names among {list(MODALITIES)}, flair first (the scan whose grid the "
                f"masks take), or 1 or 3 (the grey FLAIR repeated). Received: channels={' '.join(map(str, modalities))}"
            )
        if modalities == ["flair"]:
            if self.channels not in (1, 3):
                raise Planar3DError(f"channels must be 1 or 3. Received: channels={self.channels}")
        elif self.channels != len(modalities):
            raise Planar3DError(
                f"channels must equal the number of modalities ({len(modalities)}: {' '.join(modalities)}). "
                f"Received: channels={self.channels}"
            )

    def _validate_backbone(self) -> None:
        if self.backbone == "paper":
            if self.task == "classification":
                raise Planar3DError(
                    "task classification needs a registry backbone (e.g. --backbone vgg16); 'paper' is the "
                    "paper's segmentation network. Received: backbone='paper'"
                )
            if self.mapping not in PAPER_MAPPINGS:
                raise Planar3DError(
                    "mapping soft_acs needs a registry backbone (e.g. --backbone vgg16); the paper's network "
                    "takes planar, acs, inflate or none. Received: mapping='soft_acs'"
                )
            return
        if self.task == "segmentation" and (self.window % 32 or self.size % 32):
            raise Planar3DError(
                "a registry backbone's U-Net downsamples slices, rows and cols 32-fold: window and size must be "
                f"multiples of 32 (e.g. --window 32 --stride 16). Received: window={self.window}, size={self.size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def bids_options(self) -> dict[str, Any]:
        """The BIDS input settings, as :func:`planar3d.io.datasets.find_dataset` takes them (``bids=``)."""
        names = ("masks_from", "acq", "run", "centre_column", "participant_label", "session_label")
        return {name: getattr(self, name) for name in names}

    def weights_argument(self) -> str | None:
        """``encoder_weights`` as :func:`planar3d.nets.model.build_model` takes it."""
        return None if self.encoder_weights.lower() == "none" else self.encoder_weights

    #: settings that must match for a run folder to be resumed or a fold to be reused.
    def training_identity(self) -> dict[str, Any]:
        ignored = {"folds", "seeds", "threshold", "threshold_rule", "blend", "tta", "eval_space", "crop", "precision", "calibration",
                   "cache_dir", "strategy"}
        return {k: v for k, v in self.to_dict().items() if k not in ignored}


#: preset name -> values differing from the :class:`Config` defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Small enough that the whole job runs on 2 CPU cores in minutes on the phantom; the
    # differences from the paper are listed in docs/deviations.md.
    "demo": {
        "size": 64,
        "epochs": 4,
        "lr": 1e-3,
        "lr_decay": 0.0,
        "lr_schedule": "cosine",
        "patience": 4,
        "folds": [4],
    },
}


def make_config(preset: str = "paper", **overrides: Any) -> Config:
    """A validated :class:`Config` from a preset and keyword overrides (``None`` = keep).

    Raises:
        Planar3DError: unknown preset, unknown setting or invalid value.
    """
    if preset not in PRESETS:
        raise Planar3DError(f"preset must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise Planar3DError(f"unknown settings {unknown}. Known: {sorted(names)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return Config(preset=preset, **values).validate()


def read_mapping_file(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML (``.yaml``/``.yml``) or JSON file (any other suffix).

    Raises:
        InputFileError: one line naming the file and ``what`` it should hold (e.g.
            ``"configuration"``): missing, unreadable, or not a mapping.
    """
    if not path.is_file():
        raise InputFileError(path, f"{what} file not found")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as error:
        raise InputFileError(path, f"not a readable {what} file ({error})") from error
    if not isinstance(values, dict):
        raise InputFileError(path, f"{what} must be a mapping of names to values")
    return values


def load_config(path: str | os.PathLike) -> Config:
    """Read a ``config.json`` (or YAML) written next to a run.

    Raises:
        InputFileError: missing file, unreadable content or unknown settings.
    """
    path = Path(path)
    values = read_mapping_file(path, "configuration")
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputFileError(path, f"unknown settings {unknown}")
    try:
        return Config(**values).validate()
    except Planar3DError as error:
        raise InputFileError(path, str(error)) from error
