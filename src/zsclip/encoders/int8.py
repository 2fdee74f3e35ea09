"""int8 image towers for CPU inference (``precision="int8"``).

On a CPU without native bf16 the image tower is the whole cost of classifying, and fp32 matrix
multiplies already run near the hardware's limit (torch.compile does not help: measured 0.9x).
PyTorch's dynamic quantization stores the tower's ``nn.Linear`` weights as int8 and quantizes
activations per batch on the fly: fbgemm's int8 kernels do the MLP (and, in transformers towers,
the attention projections) about twice as fast. Answers change slightly; benchmarks/classify_speed.py
measures the agreement with fp32.

Only the image tower is quantized: the text tower (classifier builds) stays exact, so a
classifier is the same, and shared, whatever precision classifies with it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import torch

from ..errors import InputError


def int8_image_copy(
    model: torch.nn.Module,
    tower_prefixes: Sequence[str],
    probe: Callable[[torch.nn.Module], object],
) -> torch.nn.Module:
    """A copy of ``model`` whose image-tower ``nn.Linear`` layers are dynamically quantized to int8.

    ``probe(model)`` runs the image forward once: only layers it calls through their ``forward``
    are quantized. Some towers hand a layer's weights to a functional op instead (open_clip's
    ResNet attention pool, nn.MultiheadAttention's out_proj); those must stay float.
    Everything else is shared with ``model``, not copied (the copy costs only the int8 weights):
    the deep copy is told that every parameter and buffer is already copied. The int8 weights are
    a snapshot: later in-place edits of ``model``'s linear weights do not reach them.
    """
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError:
        quantize_dynamic = None
    if quantize_dynamic is None or "fbgemm" not in torch.backends.quantized.supported_engines:
        raise InputError("precision int8 needs PyTorch's dynamic quantization (fbgemm), missing from this "
                         "torch build: use --precision fp32")
    tower = [p for name, p in model.named_parameters() if name.split(".")[0] in tower_prefixes]
    if any(p.dtype != torch.float32 for p in tower):
        raise InputError(f"precision int8 quantizes float32 image towers; this one holds "
                         f"{sorted({str(p.dtype) for p in tower})}: load the model in float32 or use --precision auto")
    names = _linears_called(model, tuple(tower_prefixes), probe)
    if not names:
        raise InputError("precision int8 speeds up linear layers, and this image tower runs none through their "
                         "forward (a convolutional tower such as a ResNet): use --precision fp32")
    shared = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
    clone = copy.deepcopy(model, memo=shared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that this API moves to torchao
        quantize_dynamic(clone, {name: default_dynamic_qconfig for name in names},
                         dtype=torch.qint8, inplace=True)
    clone.eval()
    try:
        with torch.inference_mode():
            probe(clone)
    except Exception as error:  # e.g. a tower that also reads a quantized layer's .weight directly
        raise InputError(f"precision int8 does not work with this image tower ({type(error).__name__}: "
                         f"{str(error)[:120]}): use --precision auto") from error
    return clone


def _linears_called(model: torch.nn.Module, prefixes: tuple[str, ...], probe: Callable) -> set[str]:
    """Names of the exact ``nn.Linear`` layers under ``prefixes`` whose forward ``probe`` calls."""
    called: set[str] = set()
    handles = [module.register_forward_pre_hook(lambda *_, name=name: called.add(name))
               for name, module in model.named_modules()
               if type(module) is torch.nn.Linear and name.split(".")[0] in prefixes]
    try:
        with torch.inference_mode():
            probe(model)
    finally:
        for handle in handles:
            handle.remove()
    return called
