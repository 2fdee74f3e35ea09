"""Run settings: where and how a run computes, resolved once at the entry point and passed down.

Every entry point (the CLI, the service, the Ray runner, a Python caller) builds one ``RunOptions``
and hands it to the tasks; nothing below re-declares batch size, workers, precision or pixel limits
with defaults of its own, so a setting means the same thing wherever it is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .data.images import MAX_PIXELS
from .data.urls import URL_TIMEOUT_S
from .data.video import DEFAULT_FRAMES, MAX_VIDEO_FRAMES, Sampling
from .errors import InputError
from .precision import DEFAULT_PRECISION, PRECISIONS
from .runtimes import DEFAULT_RUNTIME, GRAPH_RUNTIMES, check_calibration, check_runtime

#: Where JPEGs can be decoded (see RunOptions.decode).
DECODE_MODES = ("auto", "cpu", "device")
#: labels per image the command line and the service answer with unless told (the Python API's default is 5)
DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class RunOptions:
    """How images are decoded and encoded.

    Attributes:
        device: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:N" or "mps".
        precision: "auto" (bf16 on CUDA GPUs that have it, else fp16 there; fp32 on CPUs), "fp32", "bf16",
            "fp16", or "int8" (CPU image towers only; classifiers stay fp32).
        batch_size: images per forward pass.
        workers: decoding processes; None = one per core (at most 8), 0 = decode in this process.
        max_pixels: refuse images with more pixels than this (decompression bombs).
        draft: decode large JPEGs at a reduced scale when the model's input is small (same answers,
            a fraction of the decode time; see data/images.py).
        url_timeout: seconds a whole URL download may take (not per read).
        decode: where JPEGs are decoded: "auto" (on the GPU when the model runs on CUDA with open_clip's
            standard preprocessing, else on the CPU), "cpu" (PIL in the decoding workers), or
            "device" (torchvision on the model's device, CPU included; other formats and rejected
            files fall back to PIL). See pipeline/device_decode.py.
        frames: frames sampled per video (uniformly), or per segment with ``segment``.
        segment: seconds per row of a video (None = one row per video).
        max_video_frames: sampled frames per video at most (a longer video is cut, with a note row).
        runtime: what runs the towers: "torch" (eager PyTorch), "onnxruntime" or "openvino" (graphs exported
            once per model, CPU only; with device "auto" the model then loads on the CPU), or "auto" (the
            fastest measured on this machine for this model; see runtimes.py and encoders/runtime.py).
        calibration: image files to calibrate a graph runtime's int8 image tower on (full post-training
            quantisation, weights and activations; encoders/ptq.py); empty = weight-only / dynamic int8.
            Needs precision "int8" and runtime "onnxruntime" or "openvino".
    """

    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    batch_size: int = 64
    workers: int | None = None
    max_pixels: int = MAX_PIXELS
    draft: bool = True
    url_timeout: float = URL_TIMEOUT_S
    decode: str = "auto"
    frames: int = DEFAULT_FRAMES
    segment: float | None = None
    max_video_frames: int = MAX_VIDEO_FRAMES
    runtime: str = DEFAULT_RUNTIME
    calibration: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        check_runtime(self.runtime, self.device, self.precision)
        if isinstance(self.calibration, (str, bytes)) or not all(isinstance(p, str) for p in self.calibration):
            raise InputError("calibration must be a sequence of image paths (str), e.g. a list of files")
        object.__setattr__(self, "calibration", tuple(self.calibration))  # hashable, as every other field
        check_calibration(self.runtime, self.precision, bool(self.calibration))
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size!r} must be a whole number >= 1")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise InputError(f"workers {self.workers!r} must be a whole number >= 0 (0 decodes in this process)")
        if not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise InputError(f"max pixels {self.max_pixels!r} must be a whole number >= 1")
        if self.decode not in DECODE_MODES:
            raise InputError(f"decode {self.decode!r}: choose one of {', '.join(DECODE_MODES)}")
        if not (isinstance(self.url_timeout, (int, float)) and 0 < self.url_timeout < float("inf")):
            raise InputError(f"URL timeout {self.url_timeout!r} must be a number of seconds > 0")
        try:
            Sampling(self.frames, self.segment, self.max_video_frames)
        except ValueError as error:
            raise InputError(str(error)) from None

    @property
    def model_device(self) -> str:
        """Where the model loads: ``device``, except that a graph runtime (CPU only) makes "auto" the CPU."""
        return "cpu" if self.runtime in GRAPH_RUNTIMES and self.device == "auto" else self.device

    @property
    def decode_workers(self) -> int:
        """The number of decoding processes this run uses (``workers`` with its default applied)."""
        return default_workers() if self.workers is None else self.workers

    def with_(self, **changes) -> RunOptions:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)


def default_workers() -> int:
    """Decode workers: one per core the process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


__all__ = ["DECODE_MODES", "RunOptions", "default_workers"]
