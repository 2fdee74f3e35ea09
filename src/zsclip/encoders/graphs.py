"""Export of a model's two towers to ONNX graphs, once per model fingerprint, cached beside the classifiers.

Each tower is exported from the adapter's own forward (``_image_forward``, ``_text_forward``), so the
graph computes what eager PyTorch computes: the image tower with a dynamic batch axis, the text tower
with dynamic batch *and* sequence axes, so that the padding-free text batching of ``Encoder`` (run a
batch only as far as its longest prompt needs, exact for towers pooling at the end-of-text token) runs
unchanged on the graph. The exporter is torch.export's (``dynamo=True``): the TorchScript tracer bakes
the batch size into nn.MultiheadAttention's reshapes (measured: 0.3 off at any other batch size), the
torch.export graph keeps them symbolic and matches eager within 3e-7 at every batch and length tried.

Layout: ``<cache>/graphs/<fingerprint>/<tower>/model.onnx`` (fp32, the source of every runtime's
variant) plus the variants and their notes beside it (``<runtime>-<precision>.*``). Every file is
written under a temporary name and renamed into place, so a crashed or concurrent export never leaves a
half-written graph that a later run would load.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..cachedirs import cache_dir
from ..errors import InputError
from .base import Encoder, TokenBatch

#: bumped when the export recipe changes, so graphs exported under another recipe are not reused
EXPORT_FORMAT = 1
TOWERS = ("image", "text")
GRAPH_FILE = "model.onnx"


def graphs_root() -> Path:
    """Where exported graphs live: ``graphs/`` in the classifier cache ($ZSCLIP_CACHE_DIR or the user cache)."""
    return cache_dir() / "graphs"


def model_dir(encoder: Encoder) -> Path:
    """The folder of one model's graphs, named by its fingerprint, what the adapter decided about its text
    tower, and the export recipe. The fingerprint hashes config and weights, but not buffers a model does not
    save: open_clip's causal mask is one, so a causal tower and a bidirectional one with the same weights share
    a fingerprint; their exported text graphs differ, so the folder tells them apart."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", encoder.fingerprint)
    tower = json.dumps([type(encoder).__name__, encoder.truncates_padding, getattr(encoder, "truncation_blocker", None),
                        encoder.context_length, encoder.image_size])
    return graphs_root() / f"{safe}-{hashlib.sha256(tower.encode()).hexdigest()[:8]}-e{EXPORT_FORMAT}"


def tower_graph(encoder: Encoder, tower: str) -> Path:
    """The fp32 ONNX graph of ``tower`` ("image" or "text"), exported now unless cached."""
    path = model_dir(encoder) / tower / GRAPH_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with staged(path) as temporary:
            export_tower(encoder, tower, temporary)
    return path


@contextlib.contextmanager
def staged(path: Path, *companions: str) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block succeeds (removed when it fails).
    ``companions``: suffixes of files written alongside (OpenVINO's ``.bin`` beside ``.xml``), renamed first."""
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        for suffix in companions:
            os.replace(temporary.with_suffix(suffix), path.with_suffix(suffix))
        os.replace(temporary, path)
    finally:
        for leftover in (temporary, *(temporary.with_suffix(suffix) for suffix in companions)):
            leftover.unlink(missing_ok=True)


class _ImageTower(torch.nn.Module):
    """pixels [B, 3, H, W] -> unnormalised image features [B, D], through the adapter's own forward."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.model = encoder.model  # a submodule, so the exporter sees the weights as parameters
        self.forward_images = encoder._image_forward

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_images(pixels)


class _TextTower(torch.nn.Module):
    """ids [B, L] (and attention mask [B, L] where the tower takes one) -> unnormalised text features [B, D]."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.model = encoder.model
        self.forward_text = encoder._text_forward

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_text(TokenBatch(ids, ids[:, 0], mask))


def text_inputs(encoder: Encoder) -> tuple[str, ...]:
    """The text graph's input names: ids, and the attention mask where the tower takes one."""
    probe = encoder.tokenize(["a"])
    return ("ids",) if probe.attention_mask is None else ("ids", "mask")


def export_tower(encoder: Encoder, tower: str, path: Path) -> None:
    """Export ``tower`` of ``encoder`` (a torch adapter on the CPU, fp32 weights) to ``path`` as ONNX."""
    if tower not in TOWERS:
        raise ValueError(f"unknown tower {tower!r}")
    if any(p.dtype != torch.float32 for p in encoder.model.parameters()):
        raise InputError(f"{encoder.name}: a runtime exports float32 weights; load the model in float32")
    batch = torch.export.Dim("batch", min=1, max=4096)
    if tower == "image":
        side = encoder.image_size or 224
        module, args, names = _ImageTower(encoder), (torch.zeros(2, 3, side, side),), ("pixels",)
        shapes: tuple = ({0: batch},)
    else:
        names = text_inputs(encoder)
        # a length inside the context's range that the tracer cannot mistake for a constant (not 0, 1 or full)
        length = min(8, encoder.context_length)
        tokens = encoder.tokenize(["a photo of a dog.", "a b"])
        cut = length if encoder.truncates_padding else None
        sample = tokens.select(torch.arange(2), cut)
        args = (sample.ids,) if len(names) == 1 else (sample.ids, sample.attention_mask)
        module = _TextTower(encoder)
        if encoder.truncates_padding:
            positions = torch.export.Dim("length", min=1, max=encoder.context_length)
            shapes = tuple({0: batch, 1: positions} for _ in names)
        else:  # the tower reads the full padded context: only the batch varies
            shapes = tuple({0: batch} for _ in names)
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(module.eval(), args, str(path), input_names=list(names), output_names=["features"],
                          dynamic_shapes=shapes, dynamo=True, optimize=True, external_data=False, verbose=False)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter prints progress lines and warns about constant folding, NNCF and ONNX Runtime's quantizer
    log tables and advice; zsclip says what matters itself."""
    names = ("", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo", "nncf", "torch.utils.cpp_extension")
    loggers = [logging.getLogger(name) for name in names]  # "": ONNX Runtime's quantizer warns on the root logger
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def remove_model(encoder: Encoder) -> None:
    """Delete one model's exported graphs (tests, and a user clearing space)."""
    shutil.rmtree(model_dir(encoder), ignore_errors=True)


__all__ = ["EXPORT_FORMAT", "TOWERS", "graphs_root", "model_dir", "tower_graph", "staged", "export_tower",
           "text_inputs", "remove_model"]
