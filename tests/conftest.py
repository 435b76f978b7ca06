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
