"""Both towers on an inference runtime (ONNX Runtime or OpenVINO), behind the same Encoder interface.

``RuntimeEncoder`` wraps a loaded torch adapter: tokenising, preprocessing, the fingerprint, the logit
scale and the text batching (each distinct prompt once, sorted by length, padding cut where exact) stay
the adapter's; only the two forward passes run on the runtime, from graphs exported once per model
(graphs.py). Classifier caches are shared with eager runs (same fingerprint): fp32 on a runtime equals
eager within 1e-5 (tests/test_runtime.py). The shared-prefix text path (shared_prefix.py) is eager-only.

Precisions: fp32; bf16 (OpenVINO, CPUs with native bf16 only: refused elsewhere while parsing, see
runtimes.py); int8 for the image tower (text stays fp32, so classifiers stay exact): ONNX Runtime's
dynamic quantization (int8 weights, activations quantized per batch) or OpenVINO weight-only int8
(NNCF ``compress_weights``); or, given calibration images (``--calibration-images``), full post-training
quantisation, int8 weights and activations, calibrated on them (ptq.py). An int8 tower is used only after its
gate (gate.py) measured top-1 agreement with fp32 >= 99% on held-out images; the figure is kept beside the
graph.

Threads: the runtime runs with ``torch.get_num_threads()`` intra-op threads, so a comparison with
eager PyTorch in the same process gives both the same budget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError
from ..precision import DEFAULT_PRECISION, resolve_precision, text_precision
from ..runtimes import GRAPH_RUNTIMES, INSTALL_HINT, cpu_has_bf16, no_bf16_line
from . import graphs, ptq
from .base import Encoder, TokenBatch

Run = Callable[[dict[str, np.ndarray]], np.ndarray]


class RuntimeEncoder(Encoder):
    """``inner``'s towers run by ``runtime`` ("onnxruntime" or "openvino") on the CPU."""

    def __init__(self, inner: Encoder, runtime: str, calibration: Sequence[str] = ()) -> None:
        super().__init__()
        if runtime not in GRAPH_RUNTIMES:
            raise InputError(f"unknown runtime {runtime!r}: choose one of {', '.join(GRAPH_RUNTIMES)}")
        if inner.device.type != "cpu":
            raise InputError(f"runtime {runtime} runs on the CPU and the model is on {inner.device}: "
                             "use --device cpu, or --runtime torch on the GPU")
        self.inner = inner
        self.runtime = runtime
        self.backend = inner.backend
        for attribute in ("name", "embed_dim", "context_length", "logit_scale", "logit_bias", "truncates_padding",
                          "device", "image_size", "model", "image_tower_prefixes"):
            setattr(self, attribute, getattr(inner, attribute))
        self.shares_prefixes = False  # the shared-prefix path re-expresses blocks in torch: eager only
        self._runs: dict[tuple[str, str], Run] = {}
        self._text_inputs: tuple[str, ...] | None = None
        self._text_at = "fp32"
        self._lock = threading.RLock()  # the int8 gate loads the fp32 graphs while the int8 one loads
        self._engine = _engine(runtime)
        #: the user's calibration images: int8 is then static (weights and activations), calibrated on them
        self.calibration = ptq.CalibrationSet(tuple(calibration)) if calibration else None

    # --- what stays the adapter's -----------------------------------------------------------
    def __getattr__(self, name: str):
        """Everything else the adapter has (``pretrained``, ``tokenizer``, ...) is the adapter's."""
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        return self.inner.tokenize(texts)

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.inner.image_transform()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.inner.preprocess(image)

    def _fingerprint_parts(self) -> dict:
        return self.inner._fingerprint_parts()

    # --- the forward passes, on the runtime ---------------------------------------------------
    def encode_images(self, pixels: torch.Tensor, precision: str = DEFAULT_PRECISION) -> torch.Tensor:
        run = self.tower_run("image", resolve_precision(precision, self.device))
        features = run({"pixels": _array(pixels, np.float32)})
        return F.normalize(torch.from_numpy(np.ascontiguousarray(features)).float(), dim=-1)

    def encode_text(self, texts: Sequence[str], precision: str = DEFAULT_PRECISION, batch_size: int = 256,
                    progress: bool | None = None, groups: Sequence[int] | None = None) -> torch.Tensor:
        # the runtime's precision for this call; the base class then batches as for eager (fp32: no autocast)
        self._text_at = text_precision(resolve_precision(precision, self.device))
        self.tower_run("text", self._text_at)
        return super().encode_text(texts, "fp32", batch_size, progress, groups)

    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.tower_run("image", "fp32")({"pixels": _array(pixels, np.float32)}))

    def _text_forward(self, tokens: TokenBatch) -> torch.Tensor:
        run = self.tower_run("text", self._text_at)
        if self._text_inputs is None:
            self._text_inputs = graphs.text_inputs(self.inner)
        feed = {"ids": _array(tokens.ids, np.int64)}
        if "mask" in self._text_inputs:
            feed["mask"] = _array(tokens.attention_mask, np.int64)
        return torch.from_numpy(np.ascontiguousarray(run(feed)))

    def prepare(self, precision: str) -> None:
        """Export (or find) both towers' graphs for ``precision`` and load them now; for int8, run the gate.
        A model that cannot run here fails in one line before any image is read."""
        precision = resolve_precision(precision, self.device)
        self.tower_run("image", precision)
        self.tower_run("text", text_precision(precision))

    def tower_run(self, tower: str, precision: str) -> Run:
        """The loaded graph of ``tower`` at ``precision`` (exported, converted and gated on first use)."""
        key = (tower, precision)
        run = self._runs.get(key)
        if run is None:
            with self._lock:
                run = self._runs.get(key)
                if run is None:
                    run = self._load(tower, precision)
                    self._runs[key] = run
        return run

    def _load(self, tower: str, precision: str) -> Run:
        if precision == "fp16":
            raise InputError(f"runtime {self.runtime} runs fp32, bf16 or int8 on the CPU, not fp16")
        if precision == "bf16" and not cpu_has_bf16():
            raise InputError(no_bf16_line())
        if precision == "int8" and tower != "image":
            raise ValueError("int8 applies to the image tower only")
        source = graphs.tower_graph(self.inner, tower)
        threads = torch.get_num_threads()
        if precision == "int8":
            from .gate import checked_int8

            checked_int8(self, source)
            return self._engine.load(self.int8_graph(source), "int8", threads)
        return self._engine.load(source, precision, threads)

    def int8_name(self) -> str:
        """The stem of the int8 image graph and its gate note: ``<runtime>-int8`` (weight-only / dynamic), or
        ``<runtime>-int8-static-<calibration set's fingerprint>``."""
        if self.calibration is None:
            return f"{self.runtime}-int8"
        return ptq.graph_name(self.runtime, self.calibration.fingerprint)

    def int8_graph(self, source: Path) -> Path:
        """The int8 variant of the image graph ``source``, made now unless cached (no gate: see gate.py):
        calibrated on ``calibration`` when given, else weight-only (OpenVINO) or dynamic (ONNX Runtime)."""
        if self.calibration is None:
            return self._engine.int8(source)
        return self._engine.static_int8(source, self, self.calibration)

    def __repr__(self) -> str:
        return f"RuntimeEncoder({self.name!r}, runtime={self.runtime}, embed_dim={self.embed_dim})"


def _array(tensor: torch.Tensor | None, dtype) -> np.ndarray:
    if tensor is None:
        raise ValueError("the text graph takes an attention mask and the tokens carry none")
    return np.ascontiguousarray(tensor.detach().cpu().numpy().astype(dtype, copy=False))


# --- the runtimes ---------------------------------------------------------------------------------
class _OnnxRuntime:
    """ONNX Runtime's CPU provider: the fp32 graph as exported; int8 = dynamic quantization of its MatMuls."""

    name = "onnxruntime"

    def load(self, graph: Path, precision: str, threads: int) -> Run:
        """A run of ``graph``: the fp32 graph, or for int8 the int8 variant itself (``RuntimeEncoder.int8_graph``)."""
        import onnxruntime as ort

        if precision == "bf16":
            raise InputError("runtime onnxruntime has no bf16 kernels on the CPU: use --runtime openvino for bf16")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        return lambda feed: session.run(None, feed)[0]

    def int8(self, graph: Path) -> Path:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = graph.with_name("onnxruntime-int8.onnx")
        if not path.is_file():
            with graphs.staged(path) as temporary, graphs._quiet_exporter():
                quantize_dynamic(str(graph), str(temporary), weight_type=QuantType.QInt8, per_channel=True)
        return path

    def static_int8(self, graph: Path, encoder: Encoder, calibration: ptq.CalibrationSet) -> Path:
        return ptq.onnxruntime_static(graph, encoder, calibration)


class _OpenVino:
    """OpenVINO on the CPU: the ONNX graph converted once to OpenVINO's IR (fp32 weights kept fp32); bf16 is
    the compile-time inference precision; int8 = NNCF weight-only compression of the image graph."""

    name = "openvino"

    def load(self, graph: Path, precision: str, threads: int) -> Run:
        """A run of ``graph``: the ONNX fp32 graph (converted to IR once), or for int8 the int8 IR itself."""
        import openvino as ov

        core = ov.Core()
        path = graph if precision == "int8" else self.ir(graph)
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        request = compiled.create_infer_request()
        lock = threading.Lock()  # one infer request: calls from several threads take turns

        def run(feed: dict[str, np.ndarray]) -> np.ndarray:
            with lock:
                return np.array(request.infer(feed)[0], copy=True)

        return run

    def ir(self, graph: Path) -> Path:
        import openvino as ov

        path = graph.with_name("openvino-fp32.xml")
        if not path.is_file():
            model = ov.convert_model(str(graph))
            with graphs.staged(path, ".bin") as temporary:
                ov.save_model(model, str(temporary), compress_to_fp16=False)
        return path

    def int8(self, graph: Path) -> Path:
        import nncf
        import openvino as ov

        path = graph.with_name("openvino-int8.xml")
        if not path.is_file():
            model = ov.Core().read_model(str(self.ir(graph)))
            with graphs._quiet_exporter():
                compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            with graphs.staged(path, ".bin") as temporary:
                ov.save_model(compressed, str(temporary), compress_to_fp16=False)
        return path

    def static_int8(self, graph: Path, encoder: Encoder, calibration: ptq.CalibrationSet) -> Path:
        return ptq.openvino_static(self.ir(graph), encoder, calibration)


def _engine(runtime: str):
    try:
        if runtime == "onnxruntime":
            import onnxruntime  # noqa: F401

            return _OnnxRuntime()
        import openvino  # noqa: F401

        return _OpenVino()
    except ImportError:
        raise InputError(f"runtime {runtime} is not installed: {INSTALL_HINT}") from None


__all__ = ["RuntimeEncoder"]
