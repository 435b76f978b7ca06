"""Shared test fixtures.

The real VGG16 ImageNet weights come from ``PLANAR3D_VGG16_WEIGHTS`` (``.ci/run`` points it
at ``../shared/weights/...notop.h5``). Tests that need them skip on a developer machine
without the file, but fail under ``CI=true``: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

_DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[1].parent
    / "shared" / "weights" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)


# The README's test command gives the path relative to the repository; notebook kernels and
# symlinks made by tests resolve paths elsewhere, so make it absolute once, here.
if os.environ.get("PLANAR3D_VGG16_WEIGHTS"):
    os.environ["PLANAR3D_VGG16_WEIGHTS"] = str(Path(os.environ["PLANAR3D_VGG16_WEIGHTS"]).resolve())


@pytest.fixture(scope="session")
def vgg16_weights_path() -> Path:
    """Absolute path of the real VGG16 notop ImageNet weights file."""
    path = Path(os.environ.get("PLANAR3D_VGG16_WEIGHTS", _DEFAULT_WEIGHTS)).resolve()
    if not path.is_file():
        message = f"VGG16 ImageNet weights not found at {path}; set PLANAR3D_VGG16_WEIGHTS"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _release_memory(clear_session: bool) -> None:
    """Collect the reference cycles that hold models (and their weights, out of sight of the
    collector's counts) and give the freed heap back to the OS."""
    import gc

    if clear_session and "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
    gc.collect()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # another C library (musl)
            pass


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_each_module():
    """Drop what a test module's models left in Keras' global state, so that the suite's peak
    memory is one module's, not the sum of all of them."""
    yield
    _release_memory(clear_session=True)


@pytest.fixture(autouse=True)
def _release_memory_after_each_slow_test(request):
    """A slow test builds full-size or many models: free them before the next test builds its own
    (test_mappings.py's round trips otherwise took a worker from 5.5 to 7.6 GB)."""
    yield
    if request.node.get_closest_marker("slow"):
        _release_memory(clear_session=False)


#: (raise of the peak RSS in MB, peak after, test id, worker) of every test that raised its process's
#: or its children's peak resident memory, for the summary at the end (which module sets the peak).
_PEAK_STEPS: list[tuple[float, float, str, str]] = []
_PEAK_BEFORE: dict[str, float] = {}


def _peak_rss_mb() -> float:
    import resource

    usage = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return max(usage) / 1024  # Linux reports KiB


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _PEAK_BEFORE[item.nodeid] = _peak_rss_mb()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Carry the test's peak-memory raise on its teardown report: under pytest-xdist the reports
    are what reaches the controller, which prints the summary."""
    outcome = yield
    if call.when == "teardown" and item.nodeid in _PEAK_BEFORE:
        outcome.get_result().user_properties.append(("peak_rss_mb", (_PEAK_BEFORE.pop(item.nodeid), _peak_rss_mb())))


def pytest_runtest_logreport(report):
    for name, value in report.user_properties:
        if name == "peak_rss_mb" and value[1] - value[0] >= 50:
            node = getattr(report, "node", None)
            worker = getattr(getattr(node, "gateway", None), "id", "")
            _PEAK_STEPS.append((value[1] - value[0], value[1], report.nodeid, worker))


def pytest_terminal_summary(terminalreporter):
    if not _PEAK_STEPS or not sys.platform.startswith("linux"):
        return
    terminalreporter.section("peak memory: the tests that raised it (max RSS of their process or one child)")
    for raise_mb, peak_mb, nodeid, worker in sorted(_PEAK_STEPS, reverse=True)[:10]:
        terminalreporter.write_line(f"+{raise_mb:7.0f} MB -> {peak_mb:7.0f} MB  {worker + ' ' if worker else ''}{nodeid}")


# ----------------------------------------------------------------------------- two workers (pytest -n 2)
#: Test modules that share a session fixture run on one pytest-xdist worker (each worker would
#: otherwise build it again): module -> its group.
_SHARED_GROUPS = {"test_reproducibility": "test_train",  # tiny_fold_0
                  "test_runtime": "test_export"}  # exports
#: The groups that take longest (seconds on the 2-core CI machine, serial), sent to the workers first
#: so that no long group starts last while the other worker idles; the rest follow in file order.
_LONGEST_FIRST = ("test_train", "test_distribute", "test_classify", "test_grid", "test_notebooks",
                  "test_real_scans", "test_bids", "test_backbones", "test_export", "test_inference")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Group each module's tests (module-scoped fixtures are built once) and order the groups
    longest first, for pytest-xdist's ``loadgroup`` scheduling (see pytest_configure)."""
    def group(item) -> str:
        module = Path(str(item.fspath)).stem
        return _SHARED_GROUPS.get(module, module)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
    rank = {name: index for index, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group(item), len(rank)))  # stable: file order within and after


def pytest_configure(config):
    """``pytest -n N`` sends whole groups (a module, or the modules that share a session fixture) to
    a worker, in the order of the collection (longest first), instead of test by test: pytest-xdist's
    ``loadgroup`` without its reordering by the number of tests. An explicit ``--dist`` other than
    ``load`` is kept. (The workers parse the command line again: the controller tells them to name
    the groups through ``workerinput``.)"""
    if getattr(config, "workerinput", {}).get("planar3d_groups"):
        config.option.loadgroup = True
    elif getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
        config.option.loadscopereorder = False


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    if node.config.getoption("dist") == "loadgroup":
        node.workerinput["planar3d_groups"] = True


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def home(tmp_path_factory, vgg16_weights_path):
    """A private PLANAR3D_HOME (phantom and cache, made on first use, shared by the test modules
    that train); subprocesses started by tests inherit it with the weights path."""
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLANAR3D_HOME", str(root))
        patch.setenv("PLANAR3D_VGG16_WEIGHTS", str(vgg16_weights_path))
        yield root


#: The cheapest phantom run that trains end to end (resuming, reuse, refusals, reproducibility),
#: as ``make_config("demo", **TINY)`` and as ``python -m planar3d.train`` flags.
TINY = dict(size=32, epochs=2, batch_size=2, patience=5, lr=1e-3, lr_decay=0.0, lr_schedule="constant", phantom_n_per_centre=3)
TINY_FLAGS = ["--preset", "demo", "--size", "32", "--epochs", "2", "--batch-size", "2", "--patience", "5",
              "--lr", "1e-3", "--lr-decay", "0", "--lr-schedule", "constant", "--phantom-n-per-centre", "3"]


@pytest.fixture(scope="session")
def tiny_fold_0(home, tmp_path_factory):
    """Fold 0 of TINY trained once in this process (op determinism on): ``(fold folder, test rows)``.
    Read-only for the tests that share it (the uninterrupted run of the SIGKILL test, the first
    run of the reproducibility tests)."""
    from planar3d.config import make_config
    from planar3d.training import segment

    out = tmp_path_factory.mktemp("tiny")
    rows = segment.train_fold(make_config("demo", **TINY), 0, out, verbose=0)
    return out / "fold_0", rows


def toy_sigmoid_model(path: Path, slope: float, bias: float):
    """A saved model computing sigmoid(slope * x + bias) per voxel, on 16x32x32 windows: its output
    is known, so probabilities, averages and temperatures can be checked exactly."""
    import keras

    model = keras.Sequential([keras.Input((16, 32, 32, 1)), keras.layers.Conv3D(1, 1, activation="sigmoid")])
    model.layers[-1].set_weights([np.full((1, 1, 1, 1, 1), slope, np.float32), np.full((1,), bias, np.float32)])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if a tool starts working (picks a device, loads a model, reads the data set,
    computes metrics) before its refusal: arguments and destinations are checked first."""
    from planar3d.cli import predict as predict_cli
    from planar3d.training import segment

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the arguments and destinations were checked")

    monkeypatch.setattr(predict_cli, "load_members", refuse)
    monkeypatch.setattr(predict_cli, "select_device", refuse)
    monkeypatch.setattr(segment, "dataset_records", refuse)
    monkeypatch.setattr("planar3d.evaluation.evaluate.msseg_metrics", refuse)


#: How the OS words a refused write below ``/sys``: ``Operation not permitted`` for root (EPERM),
#: ``Permission denied`` for other users (EACCES); tests assert the refusal, not one wording.
OS_REFUSAL = "(?:Operation not permitted|Permission denied)"


def kernels_sum_alike() -> bool:
    """True when TensorFlow's oneDNN kernels compute a sum the same way whatever the input's shape:
    measured so on AVX-512 CPUs; AVX2 kernels (an AVX2-only CPU, or ``ONEDNN_MAX_CPU_ISA=AVX2``)
    block the sums per shape, so one convolution of a whole window and of its two halves differ
    in the last bits."""
    from planar3d.machine import cpu_isa_flags

    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    return "avx512f" in cpu_isa_flags() and not capped.startswith(("AVX2", "AVX_", "SSE"))


def assert_same_sums(actual, desired) -> None:
    """Two float32 computations of the same sums in other blockings (a streamed chunk and the whole
    window, the kept slices and all): bit for bit where :func:`kernels_sum_alike`, else equal to
    float32 rounding (1e-6 absolute on values of order 1; the AVX2 kernels measured 4.5e-8)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    if kernels_sum_alike():
        np.testing.assert_array_equal(actual, desired)
    else:
        np.testing.assert_allclose(actual, desired, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- one tiny export per session
@pytest.fixture(scope="session")
def export_scan(tmp_path_factory) -> Path:
    """A small raw phantom FLAIR (14 x 51 x 51), preprocessed to 32^3 by the export's check."""
    from planar3d.io.phantom import make_phantom_dataset

    return make_phantom_dataset(tmp_path_factory.mktemp("phantom") / "msseg", n_per_centre=1, scale=0.1, seed=0)[0].flair


@pytest.fixture(scope="session")
def export_model_file(tmp_path_factory, export_scan) -> Path:
    """A tiny planar res-u-net (16 x 32 x 32, random weights) whose output bias puts the paper's threshold
    at the median probability inside the head: about half the head is 'lesion', so a changed
    probability changes the mask."""
    from planar3d.config import make_config
    from planar3d.data.preprocess import preprocess
    from planar3d.inference.predict import predict_volume
    from planar3d.io.nifti import load_scan
    from planar3d.nets.model import build_model

    model = build_model((16, 32, 32, 1), encoder_weights=None, seed=1)
    volume, _, _ = preprocess(load_scan(export_scan), size=32)
    prob = predict_volume(model, volume, crop="auto", precision="float32")
    median = float(np.median(prob[prob > 0]))
    kernel, bias = model.get_layer("output").get_weights()
    threshold = make_config("paper").threshold
    shift = np.log(threshold / (1 - threshold)) - np.log(median / (1 - median))
    model.get_layer("output").set_weights([kernel, bias + np.float32(shift)])
    path = tmp_path_factory.mktemp("model") / "best.keras"
    model.save(path)
    return path


#: export format -> the optional packages it needs here (export and check).
EXPORT_NEEDS = {"savedmodel": (), "onnx": ("tf2onnx", "onnx", "onnxruntime"), "openvino": ("openvino",),
                "onnx-int8": ("tf2onnx", "onnx", "onnxruntime")}


def missing_packages(fmt: str) -> list[str]:
    """The optional packages of an export format that are not installed here."""
    import importlib.util

    return [name for name in EXPORT_NEEDS[fmt] if importlib.util.find_spec(name) is None]


def skip_without(fmt: str) -> None:
    """Skip a test whose export format's optional packages are not installed."""
    missing = missing_packages(fmt)
    if missing:
        pytest.skip(f"{fmt} export needs {', '.join(missing)} (pip install planar3d[{'openvino' if fmt == 'openvino' else 'onnx'}])")


#: Exports every format given, in a child process: the ONNX conversion alone raises a process's
#: peak memory by ~3 GB, which the test process would keep to its end.
_EXPORT_FORMATS = r"""
import json, sys
from planar3d.apps.export import export_model

from pathlib import Path

model, scan, root, *formats = sys.argv[1:]
others = [str(p) for p in sorted(Path(scan).parents[1].glob("*/3DFLAIR.nii.gz")) if p != Path(scan)]
metadata = {fmt: export_model(model, fmt.split("-")[0], f"{root}/{fmt}/{fmt}", check=scan,
                              quantize="int8" if fmt.endswith("-int8") else "none",
                              calibrate=others if fmt.endswith("-int8") else None).metadata for fmt in formats}
with open(f"{root}/metadata.json", "w", encoding="utf-8") as handle:
    json.dump(metadata, handle)
"""


@pytest.fixture(scope="session")
def exports(export_model_file, export_scan, tmp_path_factory):
    """``exports(fmt)``: the tiny model exported once per format in the session (an export takes 5-20 s;
    ``onnx-int8``: ONNX with ``--quantize int8``, calibrated on the phantom's other two scans),
    all installed formats at the first call, in one child process; shared by tests/test_export.py
    and tests/test_runtime.py. A format whose packages are missing skips its test."""
    import json
    import subprocess

    from planar3d.apps.export import ExportResult

    done = {}

    def export(fmt: str):
        skip_without(fmt)
        if not done:
            formats = [f for f in EXPORT_NEEDS if not missing_packages(f)]
            root = tmp_path_factory.mktemp("exports")
            result = subprocess.run([sys.executable, "-c", _EXPORT_FORMATS, str(export_model_file), str(export_scan),
                                     str(root), *formats], capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, result.stderr[-3000:]
            metadata = json.loads((root / "metadata.json").read_text(encoding="utf-8"))
            done.update({f: ExportResult(root / f / f, metadata[f]) for f in formats})
        return done[fmt]

    return export
