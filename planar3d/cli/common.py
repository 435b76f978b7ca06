"""What the command-line tools share: the common flags, config resolution, error handling.

Every tool is a ``main(argv=None)`` over a Python API. User errors (:class:`Planar3DError`)
print one line ``error: ...`` on stderr and exit with status 2, without a traceback. An
output that cannot be written once the work is under way (:class:`~planar3d.errors.OutputError`,
or any other ``OSError``: disk full, a folder removed under the run) prints one line naming
the path and exits with status 1; Ctrl-C exits with 130. Unfinished progress bars are closed
first, so the error starts its own line. TensorFlow's C++ start-up lines are hidden unless
``--verbose``; ``--help`` never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import functools
import importlib.abc
import os
import re
import sys
import tempfile
from typing import Callable

from planar3d.config import (
    BACKBONES,
    BLENDS,
    CALIBRATIONS,
    CHOICES,
    CROPS,
    DEVICES,
    LAUNCHERS,
    MAPPINGS,
    MODALITIES,
    PRECISIONS,
    PRESETS,
    RUNTIME_CHOICES,
    TARGETS,
    THRESHOLD_RULES,
    Config,
    make_config,
)
from planar3d.errors import Planar3DError
from planar3d.inference.pipeline import INFERENCE_BATCH_SIZE  # no TensorFlow at import

__all__ = [
    "add_bids_flags", "add_config_flags", "add_inference_flags", "add_launcher_flags", "add_run_flags",
    "add_segment_flags", "config_from_args", "make_parser", "os_error_line", "run_cli"
]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, like the rest of planar3d."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a flag's default unless its help already states it or it has none."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def make_parser(description: str, prog: str) -> argparse.ArgumentParser:
    """The parser of a planar3d tool, with the shared ``--verbose`` flag."""
    parser = _Parser(prog=prog, description=description, formatter_class=_DefaultsFormatter)
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ start-up and log lines (default: hidden)")
    return parser


def _bool_flag(parser, name: str, help_text: str) -> None:
    parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=help_text)


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False) -> Callable[[str], float | int]:
    """An argparse ``type`` that parses ``kind`` and refuses values outside ``[low, high]`` (open
    ends where asked), so that ``--batch-size 0`` ends in one line naming the flag, exit 2."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            span = f"in {left}{low:g}, {high:g}{right}" if high is not None else f"{'>' if low_open else '>='} {low:g}"
            raise argparse.ArgumentTypeError(f"must be {span}. Received: {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
POSITIVE_FLOAT = _number(float, 0, low_open=True)
NON_NEGATIVE_FLOAT = _number(float, 0)
PROBABILITY = _number(float, 0, 1, low_open=True, high_open=True)
UNIT_INTERVAL = _number(float, 0, 1, low_open=True)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that map onto :class:`Config`; unset flags keep the preset's value."""
    defaults = Config()
    group = parser.add_argument_group("configuration (defaults: the chosen preset)")
    group.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                       help="settings to start from: 'paper' (the paper's) or 'demo' (minutes on 2 CPU cores)")
    group.add_argument("--data", help="BIDS dataset root, dataset folder (MSSEG-2016, Ljubljana MS or BRATS layout, as "
                       "distributed) or CSV/TSV table (subject, centre, flair, mask); default: the built-in phantom")
    group.add_argument("--target", choices=TARGETS,
                       help="what the masks mark: auto (default: the lesion mask; the whole tumour of BRATS label "
                       "maps) or a BRATS region: whole_tumour, tumour_core, enhancing_tumour")
    group.add_argument("--cache-dir", help="preprocessed-volume cache (default: $PLANAR3D_HOME/cache or ~/.cache/planar3d/cache)")
    group.add_argument("--size", type=POSITIVE_INT, help=f"edge of the resampled cube (paper {defaults.size})")
    group.add_argument("--window", type=POSITIVE_INT, help=f"slices per window (paper {defaults.window})")
    group.add_argument("--stride", type=POSITIVE_INT, help=f"slices between windows (paper {defaults.stride})")
    group.add_argument("--channels", nargs="+", metavar="CHANNEL",
                       help="model input: 1 (default) or 3 (the paper code's grey FLAIR repeated, identical output), or "
                       f"the scans to stack, FLAIR first, among {' '.join(MODALITIES)} (e.g. 'flair t1c' for BRATS)")
    group.add_argument("--epochs", type=POSITIVE_INT, help=f"maximum epochs (paper {defaults.epochs})")
    group.add_argument("--batch-size", type=POSITIVE_INT, help=f"windows per batch (paper {defaults.batch_size})")
    group.add_argument("--lr", type=POSITIVE_FLOAT, help=f"Adam learning rate (paper {defaults.lr})")
    group.add_argument("--lr-decay", type=NON_NEGATIVE_FLOAT, help=f"Keras-2 inverse-time decay per step (paper {defaults.lr_decay})")
    group.add_argument("--lr-schedule", choices=CHOICES["lr_schedule"],
                       help="learning rate over training: constant (paper, with --lr-decay) or cosine decay to 0 "
                       "over all epochs (default: the preset's; demo cosine)")
    group.add_argument("--patience", type=NON_NEGATIVE_INT, help=f"early-stopping patience on val_loss (paper {defaults.patience})")
    group.add_argument("--empty-window-weight", type=float,
                       help="weight of windows without lesion voxels: 1 keeps all (paper), 0 drops them")
    group.add_argument("--encoder-weights", help="imagenet | PATH to a VGG16 .h5 | none (default imagenet)")
    group.add_argument("--bottleneck-init", choices=CHOICES["bottleneck_init"],
                       help="conv51/conv52 from VGG16 block5 (default) or random frozen (reference code)")
    group.add_argument("--mapping", choices=MAPPINGS,
                       help="2D->3D kernel mapping (default planar; soft_acs needs a --backbone)")
    group.add_argument("--backbone", choices=BACKBONES, metavar="BACKBONE", help=f"one of {', '.join(BACKBONES)}: ""'paper' (default: the paper's planar 3D res-u-net) or a Keras "
                       "Applications name of planar3d.nets.backbones.BACKBONES (vgg16, resnet50, ...) mapped to 3D")
    group.add_argument("--task", choices=CHOICES["task"],
                       help="segmentation (default: lesion masks) or classification (one label per whole volume "
                       "resampled to --size; needs a registry --backbone)")
    group.add_argument("--labels", help="classification labels: CSV/TSV table with the columns subject,label "
                       "(class indices 0, 1, ...); default: none, the built-in phantom's lesion-load target")
    _bool_flag(group, "--freeze-encoder", "freeze the pretrained encoder and bottleneck (paper: yes)")
    group.add_argument("--seed", type=int, help="seed of the initialisers and the window shuffling (default 0; "
                       "the built-in phantom's is --phantom-seed)")
    group.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                       help="repeat the run once per seed into OUT/seed_<s>/ (finished ones reused) and summarise "
                       "over seeds (default: one run with --seed, in OUT itself)")
    _bool_flag(group, "--mixed-precision", "Keras mixed_float16 policy (GPU); output and loss stay float32")
    _bool_flag(group, "--deterministic", "TensorFlow op determinism (default on): deterministic kernels where TensorFlow has "
               "a choice (GPUs) and an error for ops without one. A re-run or resume on the same machine, thread count "
               "and software is bit-identical (on CPU also without it); other CPUs (AVX2 vs AVX-512) or thread counts "
               "give other bits and a different Dice: see README, What is reproducible")
    group.add_argument("--strategy", choices=CHOICES["strategy"],
                       help="tf.distribute strategy: one device or all local GPUs (default: default); multiworker is refused, "
                       "Keras 3 cannot fit under it")
    add_inference_flags(group)
    group.add_argument("--eval-space", choices=CHOICES["eval_space"],
                       help="metrics on the scan's grid (default) or in the resampled cube (reference code)")
    group.add_argument("--split", choices=CHOICES["split"],
                       help="folds: 'patient' (paper: one test patient per centre, default) or 'centre' "
                       "(leave-one-centre-out: train on the other centres, validate on one patient of each)")
    group.add_argument("--phantom-scale", type=POSITIVE_FLOAT, help="built-in phantom grid scale (default: the phantom's default)")
    group.add_argument("--phantom-n-per-centre", type=POSITIVE_INT, help="built-in phantom subjects per centre (default 5, as MSSEG-2016)")
    group.add_argument("--phantom-seed", type=int, help="seed of the built-in phantom's subjects and lesions (default 0)")
    group.add_argument("--phantom-mode", choices=CHOICES["phantom_mode"],
                       help="built-in phantom: 'simple' (default) or 'realistic' (MS lesion types, sizes and "
                       "partial volume; per-centre contrast, bias field and SNR)")
    group.add_argument("--phantom-lesion-load", type=PROBABILITY,
                       help="built-in phantom's fraction of lesion voxels per subject, e.g. 0.002 (default: per centre, paper Table 1)")
    _bool_flag(group, "--robust", "percentile (0.5-99.5) instead of min-max intensity scaling (default off, paper); "
               "the same as data_prep/prepare_msseg2016.py --robust")
    add_bids_flags(parser)


def add_inference_flags(parser, from_run: bool = False) -> None:
    """The inference choices, defined once: ``--threshold``, ``--threshold-rule``, ``--blend``,
    ``--tta``, ``--crop`` and ``--precision`` (test-scan inference of train/crossval; with
    ``from_run`` the defaults are the model's run config, for predict and the BIDS App)."""
    default = "the run's config, else " if from_run else ""
    parser.add_argument("--threshold", type=PROBABILITY,
                        help=f"probability threshold in (0, 1) (default: {default}16/256 = 0.0625, the paper)")
    parser.add_argument("--threshold-rule", choices=THRESHOLD_RULES,
                        help=f"'fixed' (default: {default}the paper) or 'reference' (released code: max(prob)//16 on "
                        "0-255, per scan; planar3d.inference.postprocess.binarize)")
    parser.add_argument("--blend", choices=BLENDS, help=f"window recomposition (default: {default}middle, paper Eq. 1)")
    _bool_flag(parser, "--tta", "average predictions over flips (8x slower; default off)")
    parser.add_argument("--crop", choices=CROPS,
                        help="'auto' (default) = 'window': run the network on the head's rows/cols only, a box per "
                        "window, skipping windows without head; 'scan': one box for the scan; 'off': the whole field "
                        "of view (paper)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="inference number format; 'auto' (default): bfloat16 where the CPU (avx512_bf16/amx) "
                        "or GPU computes it natively, float16 on GPUs with float16 tensor cores only, else float32 "
                        "(paper: float32); a model whose calibration.json records that format moving its validation "
                        "lesion volume by more than 1 %% from float32 runs in float32")


def add_bids_flags(parser: argparse.ArgumentParser, masks_help: str | None = None) -> None:
    """The flags that read a BIDS dataset (see :mod:`planar3d.io.bids`)."""
    group = parser.add_argument_group("BIDS input (when the data is a BIDS dataset root)")
    group.add_argument("--masks-from", metavar="PIPELINE",
                       help=masks_help or "lesion masks from derivatives/PIPELINE (or a folder); default: masks beside "
                       "the raw scans (*_label-lesion_roi)")
    group.add_argument("--acq", metavar="LABEL", help="use only the FLAIR images with this acq- label (default: the BIDS "
                       "App takes every FLAIR; train and crossval the only one of a subject/session)")
    group.add_argument("--run", metavar="INDEX", type=int, help="use only the FLAIR images with this run- index (default: "
                       "the BIDS App takes every run; train and crossval the only one)")
    group.add_argument("--centre-column", metavar="COLUMN",
                       help="participants.tsv column naming each subject's centre for the CV split, e.g. site "
                       "(default: the scanner, Manufacturer + MagneticFieldStrength from the JSON sidecar)")
    group.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL", help="subjects to use, with or without sub- (default: all)")
    group.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL", help="sessions to use, with or without ses- (default: all)")


def add_segment_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the tools that segment with a trained model (defaults: the model's run config)."""
    group = parser.add_argument_group("inference (defaults: the config.json beside the model, else the paper's)")
    add_inference_flags(group, from_run=True)
    group.add_argument("--calibration", choices=CALIBRATIONS,
                       help="'none' (default): the network's probabilities; 'temperature': each model's probabilities "
                       "rescaled by the temperature fitted on its fold's validation scans (calibration.json beside the "
                       "model, written by train; refused without it). T > 0 keeps which side of 0.5 a voxel is on, "
                       "not of the 16/256 threshold")
    group.add_argument("--stride", type=POSITIVE_INT, help="slices between windows (default: the run's, 8)")
    group.add_argument("--batch-size", type=POSITIVE_INT, default=INFERENCE_BATCH_SIZE,
                       help=f"windows per forward pass (default {INFERENCE_BATCH_SIZE}: on a CPU as fast as 2, with less "
                       "memory)")
    group.add_argument("--device", choices=DEVICES, default="auto", help="where to run")
    group.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto",
                       help="engine: 'auto' (default) runs a .keras model in tensorflow and an export folder (planar3d "
                       "export --out) in the fastest installed runtime of its format, timed on this CPU at export or "
                       "now; or name one: tensorflow (a .keras model or a savedmodel export), onnxruntime "
                       "(pip install planar3d[onnx]) or openvino (pip install planar3d[openvino]) for an export, whose "
                       "export.json gives window, stride, size, threshold and preprocessing, with the same crop, "
                       "streamed encoder and kept slices, on the CPU, in float32 (openvino also --precision bfloat16; "
                       "an export made with --quantize int8 in int8); one model, no --calibration temperature")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The run-folder flags of the tools that train: ``--out``, ``--overwrite``, ``--resume``."""
    parser.add_argument("--out", default=None, help="run folder (default: runs/<preset>)")
    parser.add_argument("--overwrite", action="store_true", help="discard existing results in the run folder")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                        help="resume an interrupted run from its backup (default: automatically when one exists)")


def add_launcher_flags(parser: argparse.ArgumentParser) -> None:
    """Where the grid's trainings run: ``--launcher`` and the SLURM options (:mod:`planar3d.runs.launch`)."""
    group = parser.add_argument_group("launcher (one job per seed, fold and variant; local and slurm need "
                                      "pip install -e \".[cluster]\")")
    group.add_argument("--launcher", choices=LAUNCHERS, default="none",
                       help="none: train here, in this process (default); local: one process per job on this "
                       "machine (submitit); slurm: one SLURM job array (crossval --gather RUN_DIR builds the outputs once "
                       "the jobs have run)")
    group.add_argument("--slurm-partition", help="SLURM partition (default: the cluster's)")
    group.add_argument("--slurm-time", help="time limit per job, minutes or [D-]HH:MM:SS (default 360; a job "
                       "reaching it is requeued and resumes from its last epoch; also the local jobs' limit)")
    group.add_argument("--slurm-gpus-per-job", type=NON_NEGATIVE_INT, help="GPUs per job (default 1)")
    group.add_argument("--slurm-mem", type=POSITIVE_FLOAT, help="memory per job in GB (default: the cluster's)")
    group.add_argument("--slurm-array-parallelism", type=POSITIVE_INT,
                       help="jobs running at once (default: all on SLURM, 1 with --launcher local)")
    group.add_argument("--slurm-config", metavar="FILE", help="YAML/JSON file of SLURM options: partition, time, "
                       "gpus_per_job, mem, array_parallelism and submitit's (account, qos, cpus_per_task, setup, "
                       "...); the flags above override it (default: none)")


def config_from_args(args: argparse.Namespace, **extra) -> Config:
    """Build the effective :class:`Config`: preset, then every flag that was given."""
    names = [f.name for f in dataclasses.fields(Config) if f.name not in ("preset", "robust_normalisation")]
    overrides = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if overrides.get("channels") is not None:
        overrides["channels"], overrides["modalities"] = parse_channels(overrides["channels"])
    if overrides.get("seed") is not None and overrides.get("seeds") is not None:
        raise Planar3DError("pass either --seed (one run) or --seeds (one run per seed), not both. "
                            f"Received: --seed {overrides['seed']} --seeds {' '.join(map(str, overrides['seeds']))}")
    if getattr(args, "robust", None) is not None:
        overrides["robust_normalisation"] = args.robust
    overrides.update(extra)
    return make_config(args.preset, **overrides)


def parse_channels(values: list[str]) -> tuple[int, list[str]]:
    """``--channels`` -> ``(channels, modalities)``: ``1``/``3`` (the grey FLAIR, repeated) or modality names."""
    if len(values) == 1 and values[0].isdigit():
        return int(values[0]), ["flair"]
    names = [value.lower() for value in values]
    return len(names), names


#: TensorFlow's start-up lines: absl's pre-initialisation notice, C++ log lines
#: (``I0000 00:00:... port.cc:153] ...``) and the CPU feature guard's second line.
_TF_STARTUP_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] .*"
    r"|To enable the following instructions: .*)$"
)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Import ``tensorflow`` with file descriptor 2 captured, then pass on what is not start-up noise."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    """The real loader of ``tensorflow``, executing the package with its start-up lines filtered."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _filtered_stderr():
            self._loader.exec_module(module)
            with contextlib.suppress(Exception):  # device discovery logs its own lines (cuInit)
                module.config.list_physical_devices()


@contextlib.contextmanager
def _filtered_stderr():
    """Capture file descriptor 2; afterwards write back every line but TensorFlow's start-up lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not _TF_STARTUP_LINE.match(line.rstrip("\n"))]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _close_progress_bars() -> None:
    """Close unfinished tqdm bars so that the next line starts at the left margin."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()


def os_error_line(error: OSError) -> str:
    """One line for an ``OSError``: the path first, then the reason (disk full said as such)."""
    path = error.filename if error.filename is not None else None
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"the disk is full ({error.strerror})"
    else:
        reason = error.strerror or str(error) or type(error).__name__
    return f"{path}: {reason}" if path is not None else reason


def _fail(message: str, status: int) -> int:
    _close_progress_bars()
    sys.stdout.flush()
    print(message, file=sys.stderr)
    return status


def run_cli(function: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorate a ``main(argv)``: errors become one line on stderr with the documented exit status.

    :class:`Planar3DError` exits 2 (its ``exit_status``: 1 for an
    :class:`~planar3d.errors.OutputError`), any other ``OSError`` 1, ``MemoryError`` 1,
    Ctrl-C 130. Without ``--verbose`` in ``argv``, TensorFlow's start-up lines are hidden.
    """

    @functools.wraps(function)
    def main(argv: list[str] | None = None) -> int:
        verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)
        if verbose:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        else:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        finder = None
        if not verbose and "tensorflow" not in sys.modules:
            finder = _QuietTensorFlowFinder()
            sys.meta_path.insert(0, finder)
        try:
            return function(argv)
        except Planar3DError as error:
            return _fail(f"error: {error}", getattr(error, "exit_status", 2))
        except OSError as error:
            return _fail(f"error: {os_error_line(error)}", 1)
        except KeyboardInterrupt:
            return _fail("interrupted", 130)
        except MemoryError:
            return _fail("error: out of memory: try --batch-size 1 or a smaller --size", 1)
        finally:
            if finder is not None and finder in sys.meta_path:
                sys.meta_path.remove(finder)

    return main
