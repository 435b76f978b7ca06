"""What of the machine a result depends on: CPU instruction sets, threads, numerics settings.

TensorFlow's CPU kernels come from oneDNN, which picks its code path at run time from the
CPU's instruction sets (AVX2, AVX-512, AVX512_BF16/VNNI, AMX) unless ``ONEDNN_MAX_CPU_ISA``
caps it; a different path sums in a different order, so float32 results differ in the last
bits and a training run drifts apart (README, "What is reproducible"). Every run records
:func:`numerics_record` in its ``versions.json``.
"""

from __future__ import annotations

import os
import platform

__all__ = ["NUMERICS_ENVIRONMENT", "cpu_identity", "cpu_isa_flags", "cpu_name", "numerics_record"]

#: environment variables that change which kernels run or how many threads they use.
NUMERICS_ENVIRONMENT = (
    "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS", "ONEDNN_DEFAULT_FPMATH_MODE",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "TF_DETERMINISTIC_OPS",
    "CUDA_VISIBLE_DEVICES",
)

_ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "bf16")


def cpu_isa_flags(cpuinfo: str | None = None) -> list[str]:
    """The CPU's vector instruction-set flags (``avx2``, ``avx512f``, ``avx512_bf16``, ``amx_*``, ...).

    Args:
        cpuinfo: text of ``/proc/cpuinfo``; default: read it (Linux). Elsewhere the list is
            empty and :func:`numerics_record` still names the processor.

    Returns:
        Sorted, de-duplicated flags of the first processor that start with ``avx``, ``amx``,
        ``fma``, ``f16c``, ``sse4`` or ``bf16`` (Arm).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return sorted({flag for flag in value.split() if flag.startswith(_ISA_PREFIXES)})
    return []


def cpu_name() -> str:
    """The processor's name (``model name`` of ``/proc/cpuinfo``, else what :mod:`platform` says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_identity() -> str:
    """What a CPU speed measurement holds for: processor name, logical cores and ISA flags, in one
    line (two machines with the same identity run the same kernels at about the same speed)."""
    return f"{cpu_name()} | {os.cpu_count()} cores | {' '.join(cpu_isa_flags())}"


def numerics_record() -> dict[str, object]:
    """Machine facts that decide a run's float results, for ``versions.json``.

    Returns:
        ``cpu`` (processor name), ``cpu_count``, ``cpu_isa`` (:func:`cpu_isa_flags`),
        ``intra_op_threads`` / ``inter_op_threads`` (TensorFlow's setting, 0 = one per
        core), ``onednn_env`` (the :data:`NUMERICS_ENVIRONMENT` variables that are set) and
        ``op_determinism`` (whether TensorFlow op determinism is on).
    """
    import tensorflow as tf

    try:  # TensorFlow exports the setter only; the getter lives beside it
        from tensorflow.python.framework.config import is_op_determinism_enabled

        determinism = bool(is_op_determinism_enabled())
    except ImportError:
        determinism = None
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_isa": cpu_isa_flags(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "onednn_env": {name: os.environ[name] for name in NUMERICS_ENVIRONMENT if name in os.environ},
        "op_determinism": determinism,
    }
