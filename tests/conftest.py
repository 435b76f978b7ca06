"""Shared test fixtures.

The real VGG16 ImageNet weights come from ``PLANAR3D_VGG16_WEIGHTS`` (``.ci/run`` points it
at ``../shared/weights/...notop.h5``). Tests that need them skip on a developer machine
without the file, but fail under ``CI=true``: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
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
