"""Model loading: one entry point that picks the backend adapter from the model string."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ..errors import InputError

if TYPE_CHECKING:
    import torch

    from .base import Encoder, TokenBatch
    from .openclip import RANDOM_WEIGHTS, OpenClipEncoder

#: loaded on first use: importing this package imports no torch (``zsclip --help`` stays fast)
__getattr__, __dir__ = lazy_exports(__name__, {".base": ["Encoder", "TokenBatch"],
                                               ".openclip": ["RANDOM_WEIGHTS", "OpenClipEncoder"]})

TRANSFORMERS_PREFIX = "transformers:"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" -> first CUDA GPU, else Apple MPS, else CPU; anything else is validated."""
    import torch

    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps") if mps is not None and mps.is_available() else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} requested but CUDA is not available here: use --device cpu")
    return device


def load_model(
    model: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = "auto",
    cache_dir: str | None = None,
) -> Encoder:
    """Load a CLIP-family model as an ``Encoder``.

    ``model`` is an open_clip name (``"ViT-B-32"``, with ``pretrained`` = a tag such as
    ``"laion2b_s34b_b79k"``, a checkpoint file, or ``"random"``), ``"hf-hub:ORG/REPO"``,
    ``"local-dir:PATH"`` (open_clip config + weights), or ``"transformers:ID_OR_PATH"``
    (a Hugging Face hub id or a ``save_pretrained`` folder). Weights download on first use.
    """
    if not isinstance(model, str) or not model.strip():
        raise InputError("no model given: pass e.g. 'ViT-B-32' with pretrained='laion2b_s34b_b79k'")
    device = resolve_device(device)
    if model.startswith(TRANSFORMERS_PREFIX):
        from .hf import TransformersEncoder

        return TransformersEncoder.from_pretrained(model.removeprefix(TRANSFORMERS_PREFIX), device=device,
                                                   cache_dir=cache_dir)
    from .openclip import load_open_clip

    return load_open_clip(model, pretrained, device=device, cache_dir=cache_dir)


def wrap(
    model: torch.nn.Module,
    tokenizer: Callable | None = None,
    preprocess: Callable | None = None,
    *,
    name: str | None = None,
) -> Encoder:
    """Adapt a model you already built: an open_clip model (+ its tokenizer and preprocess) or a
    transformers model (+ its processor, passed as ``tokenizer``; or tokenizer and image processor)."""
    module = type(model).__module__
    if module.startswith("open_clip"):
        from .openclip import OpenClipEncoder

        return OpenClipEncoder(model, tokenizer, preprocess, name=name)
    if module.startswith("transformers"):
        from .hf import TransformersEncoder

        # a transformers model takes its processor (tokenizer + image processor) as the second argument
        processor = tokenizer
        if preprocess is not None:
            processor = SimpleNamespace(tokenizer=tokenizer, image_processor=preprocess)
        return TransformersEncoder(model, processor, name=name)
    raise InputError(f"cannot wrap {type(model).__name__}: zsclip.wrap takes open_clip or transformers models")


__all__ = ["Encoder", "TokenBatch", "OpenClipEncoder", "RANDOM_WEIGHTS", "load_model", "wrap", "resolve_device"]
