"""Numeric precision: which dtype a forward pass runs in, and the autocast context for it.

``"auto"`` has one meaning, decided in one function (``resolve_precision``) for every entry point
(the CLI, ``zsclip.load_model`` / the Python API, ``serve``, Ray actors, and the cache lookup that runs
without torch, ``known_without_torch``): bf16 on CUDA GPUs that have it (fp16 on the others), fp32 on
every other device, CPUs included. On CPUs bf16 buys nothing dependable: where it is emulated (AVX2) it
is several times slower than fp32 (benchmarks/precision_auto.py), its speed swings with the batch size
(serve's round-3 note, ViT-B-32: 35 images/s at batch 1, 3 at batch 4, 11 at 16, 30 at 64, against 14-22
for fp32 at every size), and a new user's run (issue 32) found it no faster for ViT-B-32; native CPU bf16
(AVX512-BF16 / AMX) was not measured here. It also moves scores by up to 1.5e-3, so one image would
score differently by entry point or machine. ``--precision bf16`` still runs bf16 on a CPU when asked.
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


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Turn ``"auto"`` into a concrete precision for ``device``; validate the others. The one place
    "auto" is decided (see the module docstring); torch is imported only to ask a CUDA device."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    device_type = getattr(device, "type", None) or str(device).split(":", 1)[0]
    if precision == "int8" and device_type != "cpu":
        raise InputError(f"precision int8 is for CPUs; on {device} use bf16 or fp16 (or auto)")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def known_without_torch(precision: str, device: str) -> str | None:
    """What ``resolve_precision(precision, resolve_device(device))`` gives, where the machine makes it
    certain without importing torch (seconds): ``device`` "cpu", or "auto" on a Linux machine that has
    no GPU device nodes (so "auto" picks the CPU). None: only torch can say which device "auto" is.

    A store classified with a cached classifier needs nothing else from torch (``ZeroShotClassifier.cached``)."""
    import os
    import sys

    if precision not in PRECISIONS or str(device) not in ("auto", "cpu"):
        return None
    if str(device) == "auto":
        gpu_nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")  # NVIDIA, AMD (ROCm), WSL
        if not sys.platform.startswith("linux") or any(os.path.exists(node) for node in gpu_nodes):
            return None
    return resolve_precision(precision, "cpu")


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
