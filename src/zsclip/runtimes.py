"""Which library runs the towers' forward passes (``--runtime``): checked while options are parsed.

``torch`` is eager PyTorch (the reference). ``onnxruntime`` and ``openvino`` run both towers as graphs
exported once per model (encoders/runtime.py) on the CPU; ``auto`` measures them against eager PyTorch
on this machine for this model (once, remembered) and runs the fastest. A run that cannot apply is
refused here, in one line, before any model loads: a runtime that is not installed, a GPU device, a
precision the runtime cannot give on this CPU. Nothing here imports torch or a runtime (``--help`` and
``import zsclip`` stay light): installation is checked with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import functools
import importlib.util

from .errors import InputError

#: the values of ``--runtime`` (RunOptions.runtime, the service's ``runtime`` field)
RUNTIMES = ("torch", "onnxruntime", "openvino", "auto")
DEFAULT_RUNTIME = "torch"
#: the runtimes that run exported graphs (CPU only)
GRAPH_RUNTIMES = ("onnxruntime", "openvino")
INSTALL_HINT = 'pip install "zsclip[runtime]"'
#: CPU flags that mean native bf16 matrix multiplies (AVX512-BF16, AMX)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def installed(runtime: str) -> bool:
    """Whether ``runtime``'s Python package is importable (``torch`` always counts as installed)."""
    return runtime in ("torch", "auto") or importlib.util.find_spec(runtime) is not None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere, which reads as "no native bf16")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Native bf16 on this CPU: AVX512-BF16 or AMX (elsewhere bf16 is emulated, slower than fp32)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def no_bf16_line() -> str:
    """The one line that says why bf16 does not run on a graph runtime here."""
    return (f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)} missing from its flags), so a runtime would "
            "emulate it slower than fp32: use --precision fp32 or int8")


def check_runtime(runtime: str, device: str, precision: str) -> None:
    """Refuse, in one line, a ``runtime`` that cannot run here with ``device`` and ``precision``."""
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime not in GRAPH_RUNTIMES:
        return
    if not installed(runtime):
        raise InputError(f"runtime {runtime} is not installed: {INSTALL_HINT}")
    device_type = str(device).split(":", 1)[0]
    if device_type not in ("auto", "cpu"):
        raise InputError(f"runtime {runtime} runs on the CPU, not on device {device}: use --device cpu, "
                         "or --runtime torch on the GPU")
    if precision == "fp16":
        raise InputError(f"runtime {runtime} runs fp32, bf16 or int8 on the CPU, not fp16: use --precision fp32")
    if precision == "bf16" and runtime == "onnxruntime":
        raise InputError("runtime onnxruntime has no bf16 kernels on the CPU: use --runtime openvino for bf16, "
                         "or --precision fp32 or int8")
    if precision == "bf16" and not cpu_has_bf16():
        raise InputError(no_bf16_line())


def check_calibration(runtime: str, precision: str, calibrated: bool) -> None:
    """Refuse, in one line, calibration images (``--calibration-images``) where they cannot apply: they calibrate
    the activations of a graph runtime's int8 image tower, so they need ``--precision int8`` and ``--runtime
    onnxruntime`` or ``openvino`` (eager PyTorch's int8 is dynamic; ``auto`` would calibrate every runtime to
    time them: name one)."""
    if not calibrated:
        return
    if precision != "int8":
        raise InputError(f"--calibration-images calibrates int8 activations, and the precision is {precision}: "
                         "add --precision int8 (or drop --calibration-images)")
    if runtime not in GRAPH_RUNTIMES:
        raise InputError(f"--calibration-images applies to --runtime onnxruntime or openvino (static int8 of the "
                         f"exported image graph), not --runtime {runtime}: name one of them")


__all__ = ["RUNTIMES", "DEFAULT_RUNTIME", "GRAPH_RUNTIMES", "INSTALL_HINT", "installed", "cpu_flags",
           "cpu_has_bf16", "no_bf16_line", "check_runtime",
           "check_calibration"]
