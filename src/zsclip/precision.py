"""Numeric precision: which dtype a forward pass runs in, and the autocast context for it.

``"auto"`` picks bf16 only where the hardware computes it natively (CUDA with bf16, CPUs with
AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32, so auto falls back to fp32.
``"int8"`` (CPU only, opt-in) quantizes the image tower's linear layers (see quantize.py); text
towers then run in fp32, so classifiers stay exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: The one default, for every entry point and library call (see options.RunOptions).
DEFAULT_PRECISION = "auto"


def cpu_has_native_bf16() -> bool:
    """True when this CPU executes bf16 matrix multiplies in hardware (AVX512-BF16 or AMX)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Turn ``"auto"`` into a concrete precision for ``device``; validate the others."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    import torch

    device = torch.device(device)
    if precision == "int8" and device.type != "cpu":
        raise InputError(f"precision int8 is for CPUs; on {device} use bf16 or fp16 (or auto)")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def known_without_torch(precision: str, device: str) -> str | None:
    """What ``resolve_precision(precision, resolve_device(device))`` gives, where the machine makes it
    certain without importing torch (seconds): the CPU of a Linux machine that has no GPU device
    nodes, "auto" read from the CPU flags in /proc/cpuinfo. None: only torch can say. (Should the
    flags and torch ever disagree, the classifier cached for the flags' precision is used, or none is
    found and the model loads to build one: the cache key holds the precision.)

    A store classified with a cached classifier needs nothing else from torch (``ZeroShotClassifier.cached``)."""
    import os
    import sys

    if precision not in PRECISIONS or str(device) not in ("auto", "cpu"):
        return None
    if str(device) == "auto":
        gpu_nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")  # NVIDIA, AMD (ROCm), WSL
        if not sys.platform.startswith("linux") or any(os.path.exists(node) for node in gpu_nodes):
            return None
    if precision != "auto":
        return precision
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    # the CPU features torch asks cpuinfo about (cpu_has_native_bf16), as the kernel reports them
    return "bf16" if {"avx512_bf16", "amx_tile"} & set(flags) else "fp32"


def text_precision(precision: str) -> str:
    """The precision a text tower runs in: int8 quantizes image towers only."""
    return "fp32" if precision == "int8" else precision


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """Autocast to ``precision`` (already resolved) on ``device``; fp32 (and int8) run as is."""
    if precision in ("fp32", "int8"):
        yield
        return
    import torch

    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision]):
        yield
