"""Numeric precision: which dtype a forward pass runs in, and the autocast context for it.

``"auto"`` picks bf16 only where the hardware computes it natively (CUDA with bf16, CPUs with
AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32, so auto falls back to fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from .errors import InputError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """True when this CPU executes bf16 matrix multiplies in hardware (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Turn ``"auto"`` into a concrete precision for ``device``; validate the others."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """Autocast to ``precision`` (already resolved) on ``device``; fp32 runs as is."""
    if precision == "fp32":
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=_DTYPES[precision]):
        yield
