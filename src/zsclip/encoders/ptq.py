"""Full post-training quantisation of the image graph (int8 weights *and* activations), calibrated on the user's
images (``--calibration-images``).

Weight-only int8 (OpenVINO) and dynamic int8 (ONNX Runtime) need no data; static int8 fixes each activation's
range once, from images run through the fp32 graph, so its answers depend on which images those were. Hence:

* **The set**: up to ``SELECT_MAX`` files, evenly spaced over the sorted list the user named (a bounded read of
  any folder), each hashed by content. Ordered by that hash, every ``HELD_OUT_EVERY``-th image is **held out**
  (at most ``HELD_OUT_MAX``) for the gate and never calibrates; the others calibrate (at most
  ``CALIBRATION_MAX``, NNCF's default subset size). Pixels are what the model sees: read with zsclip's image
  reader, resized by the model's own preprocessing.
* **The cache**: the graph is named by the set's fingerprint (the content hashes of both parts, the caps and the
  recipe), beside the model's fp32 graph, which is itself named by the model's fingerprint: other images, or
  the same names with other content, make another graph; a file name alone is never trusted.
* **The gate** (gate.py) measures top-1 agreement with fp32 on the rendered shapes *and* on the held-out part.
* **Bounds**: the calibration pixels are held in memory once (``len x 3 x side x side x 4`` bytes: 300 images
  at 224 px = 181 MB); ONNX Runtime's MinMax calibrator adds ReduceMin/ReduceMax outputs to the graph, so
  what it keeps per batch is two numbers per tensor. (Its ``CalibMaxIntermediateOutputs`` option is not used:
  in onnxruntime 1.32 reaching that count *drops* the batches collected so far, and a count that divides the
  number of batches ends in "No data is collected".) Time is one fp32 forward per calibration image per
  statistics pass (NNCF runs two for transformers: SmoothQuant's and the range/bias pass).

Recipes: OpenVINO with NNCF ``quantize`` (``ModelType.TRANSFORMER`` and the MIXED preset, symmetric weights
and asymmetric activations, for vision transformers; the PERFORMANCE preset for convolutional towers); ONNX
Runtime ``quantize_static`` on the graph after ``quant_pre_process`` (shape inference and ONNX Runtime's own
graph optimisation), QDQ format, per-channel int8 weights in 7 bits (``reduce_range``: ONNX Runtime's advice for
CPUs without VNNI, where uint8 x int8 products can saturate; on the demo model it took agreement on the shapes
from 99.2% to 100%), uint8 activations, MinMax ranges.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.images import ImageReadError, decode_bytes, read_image_bytes
from ..errors import InputError, ZsclipWarning
from . import graphs

if TYPE_CHECKING:
    from .base import Encoder

#: calibration images at most (NNCF's default ``subset_size``)
CALIBRATION_MAX = 300
#: held-out images at most, and one of every this many (by content hash) is held out
HELD_OUT_MAX = 100
HELD_OUT_EVERY = 5
#: files read at most from what the user named (calibration + held out)
SELECT_MAX = CALIBRATION_MAX + HELD_OUT_MAX
#: fewer readable images than this cannot both calibrate and hold some out
MIN_IMAGES = 2
#: images per calibration batch of ONNX Runtime's calibrator
ORT_BATCH = 16
#: bumped when a recipe changes, so graphs calibrated under another recipe are not reused
RECIPE = 2


def select(paths: Sequence[str], limit: int = SELECT_MAX) -> list[str]:
    """At most ``limit`` of ``paths`` (sorted), evenly spaced: what a calibration reads of a large folder."""
    ordered = sorted(dict.fromkeys(paths))
    if len(ordered) <= limit:
        return ordered
    step = len(ordered) / limit
    return [ordered[int(i * step)] for i in range(limit)]


@dataclass
class CalibrationSet:
    """The user's calibration images: which calibrate, which are held out for the gate, and their fingerprint."""

    paths: tuple[str, ...]
    _read: list[tuple[str, str, bytes]] | None = field(default=None, repr=False)
    _pixels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _files(self) -> list[tuple[str, str, bytes]]:
        """(content hash, path, bytes) of every readable file, ordered by hash (unreadable ones: one warning)."""
        if self._read is None:
            read, bad = [], []
            for path in select(self.paths):
                try:
                    data = read_image_bytes(path)
                except ImageReadError as error:
                    bad.append(f"{path} ({error})")
                    continue
                read.append((hashlib.sha256(data).hexdigest(), path, data))
            if bad:
                warnings.warn(f"--calibration-images: {len(bad)} file(s) skipped: {'; '.join(bad[:3])}",
                              ZsclipWarning, stacklevel=2)
            read = sorted({digest: (digest, path, data) for digest, path, data in read}.values())  # same bytes: once
            self._read = read
        return self._read

    def split(self) -> tuple[list[tuple[str, str, bytes]], list[tuple[str, str, bytes]]]:
        """(calibration files, held-out files): every ``HELD_OUT_EVERY``-th by content hash is held out."""
        files = self._files()
        held = [item for i, item in enumerate(files) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1][:HELD_OUT_MAX]
        if not held and len(files) >= MIN_IMAGES:
            held = files[-1:]
        kept = {item[0] for item in held}
        calibrate = [item for item in files if item[0] not in kept][:CALIBRATION_MAX]
        if len(calibrate) < 1 or len(files) < MIN_IMAGES:
            raise InputError(f"--calibration-images: {len(files)} readable image(s) among the "
                             f"{len(self.paths)} given; calibrating int8 needs at least {MIN_IMAGES} (one is held "
                             "out to check it): give a folder of images like the ones you will classify")
        return calibrate, held

    @property
    def fingerprint(self) -> str:
        """What the calibrated graph depends on: both parts' content hashes, the caps and the recipe."""
        calibrate, held = self.split()
        blob = json.dumps([RECIPE, CALIBRATION_MAX, HELD_OUT_MAX, HELD_OUT_EVERY, [item[0] for item in calibrate],
                           [item[0] for item in held]])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def pixels(self, encoder: Encoder, part: str) -> np.ndarray:
        """The ``part`` ("calibrate" or "held_out") as the model's preprocessed pixels [N, 3, H, W] float32."""
        if part not in self._pixels:
            import torch

            calibrate, held = self.split()
            files = calibrate if part == "calibrate" else held
            tensors = [encoder.preprocess(decode_bytes(data, encoder.image_size)) for _, _, data in files]
            self._pixels[part] = np.ascontiguousarray(torch.stack(tensors).numpy().astype(np.float32))
        return self._pixels[part]

    def describe(self) -> dict:
        calibrate, held = self.split()
        return {"fingerprint": self.fingerprint, "calibration_images": len(calibrate), "held_out_images": len(held),
                "given": len(self.paths)}


def is_transformer(encoder: Encoder) -> bool:
    """Whether the image tower is a vision transformer (NNCF's TRANSFORMER model type then applies): open_clip's
    VisionTransformer (or a timm ViT), or a transformers vision model (CLIP, SigLIP)."""
    model = getattr(encoder, "model", None)
    visual = getattr(model, "visual", None)
    if visual is None:
        return getattr(model, "vision_model", None) is not None
    return hasattr(visual, "transformer") or "Transformer" in type(visual).__name__ or \
        "vit" in type(getattr(visual, "trunk", None)).__name__.lower()


def graph_name(runtime: str, fingerprint: str) -> str:
    """The stem of a calibrated graph and of its gate note, beside the fp32 graph."""
    return f"{runtime}-int8-static-{fingerprint}"


def openvino_static(ir: Path, encoder: Encoder, calibration: CalibrationSet) -> Path:
    """NNCF ``quantize`` of the OpenVINO fp32 image graph ``ir``, calibrated on ``calibration`` (cached)."""
    path = ir.with_name(graph_name("openvino", calibration.fingerprint) + ".xml")
    if path.is_file():
        return path
    import nncf
    import openvino as ov

    pixels = calibration.pixels(encoder, "calibrate")
    transformer = is_transformer(encoder)
    options = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    preset = nncf.QuantizationPreset.MIXED if transformer else nncf.QuantizationPreset.PERFORMANCE
    model = ov.Core().read_model(str(ir))
    dataset = nncf.Dataset([pixels[i:i + 1] for i in range(len(pixels))])
    with graphs._quiet_exporter():
        quantized = nncf.quantize(model, dataset, preset=preset, subset_size=len(pixels), **options)
    with graphs.staged(path, ".bin") as temporary:
        ov.save_model(quantized, str(temporary), compress_to_fp16=False)
    return path


def onnxruntime_static(graph: Path, encoder: Encoder, calibration: CalibrationSet) -> Path:
    """``quantize_static`` of the ONNX fp32 image graph (after ``quant_pre_process``), QDQ, per-channel 7-bit int8
    weights, uint8 activations with MinMax ranges from ``calibration`` (cached)."""
    path = graph.with_name(graph_name("onnxruntime", calibration.fingerprint) + ".onnx")
    if path.is_file():
        return path
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pixels = calibration.pixels(encoder, "calibrate")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(pixels), ORT_BATCH))

        def get_next(self) -> dict | None:
            start = next(self.batches, None)
            return None if start is None else {"pixels": pixels[start:start + ORT_BATCH]}

    with graphs.staged(path.with_name(".pre-" + path.name)) as prepared, graphs.staged(path) as temporary, \
            graphs._quiet_exporter():
        quant_pre_process(str(graph), str(prepared))
        quantize_static(str(prepared), str(temporary), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                        calibrate_method=CalibrationMethod.MinMax)
    path.with_name(".pre-" + path.name).unlink(missing_ok=True)
    return path


__all__ = ["CALIBRATION_MAX", "HELD_OUT_MAX", "HELD_OUT_EVERY", "SELECT_MAX", "MIN_IMAGES", "RECIPE",
           "CalibrationSet", "select", "is_transformer", "graph_name", "openvino_static", "onnxruntime_static"]
