"""The machine this process runs on, in words (ground floor: standard library): what bench results, doctor and
closing notes name beside every number, since hosts differ (Xeon and AMD EPYC both occur here)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpuinfo(keys: tuple[str, ...], text: str | None = None) -> str | None:
    """The first value of one of ``keys`` in /proc/cpuinfo (or in ``text``), or None."""
    try:
        text = Path("/proc/cpuinfo").read_text() if text is None else text
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    return _cpuinfo(("model name",)) or platform.processor() or ""


def machine() -> dict[str, str]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_model(),
            "cpu_count": str(os.cpu_count())}


# The instruction-set features that decide which precisions run fast on a CPU, and what each enables.
INT8_UNITS = (("amx_int8", "AMX-INT8 tiles"), ("avx512_vnni", "AVX512-VNNI dot products"),
              ("avx_vnni", "AVX-VNNI dot products"), ("asimddp", "NEON dot product"), ("i8mm", "Arm I8MM"))
BF16_UNITS = (("amx_bf16", "AMX-BF16 tiles"), ("avx512_bf16", "AVX512-BF16 dot products (no AMX)"),
              ("bf16", "Arm BF16"))


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from /proc/cpuinfo, or from ``cpuinfo``'s text."""
    return frozenset((_cpuinfo(("flags", "Features"), cpuinfo) or "").split())


def precision_units(flags: frozenset[str] | set[str] | None = None) -> dict[str, str | None]:
    """Which unit runs each reduced precision on this CPU (``int8``, ``bf16``), in words, or None: without a bf16
    unit a bf16 model is emulated (slower than FP32), without a dot-product unit INT8 gains less."""
    f = cpu_flags() if flags is None else frozenset(flags)
    return {"int8": next((words for flag, words in INT8_UNITS if flag in f), None),
            "bf16": next((words for flag, words in BF16_UNITS if flag in f), None)}


def unit_flags(flags: frozenset[str] | set[str] | None = None) -> list[str]:
    """The flags of the units :func:`precision_units` names (the first of each kind): what tells apart two CPUs sold
    under one model name ("AMD EPYC" is a Zen 3 without VNNI or bf16 and a Zen 4 with both)."""
    f = cpu_flags() if flags is None else frozenset(flags)
    return [next(flag for flag, _ in units if flag in f) for units in (INT8_UNITS, BF16_UNITS)
            if any(flag in f for flag, _ in units)]


def int8_may_saturate(flags: frozenset[str] | set[str] | None = None) -> bool:
    """An x86 CPU without a VNNI or AMX unit: ONNX Runtime's INT8 convolutions (uint8 activations x int8 weights) run
    on ``vpmaddubsw`` there, whose 16-bit sums of products saturate, so an INT8 model's scores can move far from those
    measured on a CPU with a dot-product unit, depending on the model and its calibration; OpenVINO's INT8 kernels
    do not (measured: docs/experiments.md, the CPU paths of a host without VNNI)."""
    f = cpu_flags() if flags is None else frozenset(flags)
    return "avx2" in f and precision_units(f)["int8"] is None
