"""Helpers shared by the benchmark scripts: interleaved timing and machine description."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Callable


def machine() -> str:
    """One line describing this machine and the software stack."""
    import tensorflow as tf

    return (f"{platform.node()} | {os.cpu_count()} CPU | {platform.processor() or platform.machine()} | "
            f"Python {platform.python_version()} | TensorFlow {tf.__version__} | "
            f"GPU: {len(tf.config.list_physical_devices('GPU'))} | ISA: {isa_summary()}")


def isa_summary() -> str:
    """The CPU's vector instruction sets that decide oneDNN's kernels (avx2, avx512*, amx*),
    plus ``ONEDNN_MAX_CPU_ISA`` when it caps them."""
    from planar3d.machine import cpu_isa_flags

    flags = [f for f in cpu_isa_flags() if f.startswith(("avx2", "avx512", "amx"))]
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return (" ".join(flags) or "unknown") + (f" (ONEDNN_MAX_CPU_ISA={cap})" if cap else "")


def interleaved_medians(functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time (s) of each function, runs interleaved so machine drift hits all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def isa_line() -> str:
    """The CPU's vector instruction-set flags, as recorded in ``versions.json``."""
    from planar3d.machine import cpu_isa_flags

    return "ISA: " + (" ".join(cpu_isa_flags()) or "unknown")
