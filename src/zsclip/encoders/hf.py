"""transformers adapter: CLIP, SigLIP, ALIGN, AltCLIP, Chinese-CLIP, MetaCLIP 2 ... via AutoModel.

Text is tokenised exactly as the model's processor does it (padding to the model's context,
as the zero-shot-image-classification pipeline does for SigLIP) and read through
``get_text_features`` / ``get_image_features``. Padding is dropped only for text towers that
are causal and pool at the end-of-text token, where it is exact (see ``_CAUSAL_EOS_POOLED``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import InputError, ModelLoadError, ZsclipWarning
from . import hub
from .base import Encoder, TokenBatch
from .shared_prefix import hf_block_blocker, hf_clip_parts

#: Text towers whose output cannot depend on positions after the pooled end-of-text token:
#: a causal attention mask means no position sees a later one, and the pooled vector is the
#: hidden state at end-of-text, so padding after it is dead computation. An explicit list, not
#: a guess from the config, because bidirectional towers (siglip, siglip2, align, altclip,
#: chinese_clip, ...) let every position attend to the padding (SigLIP even pools the last,
#: padded, position), so cutting it there changes the features.
_CAUSAL_EOS_POOLED = frozenset({"clip", "metaclip_2"})

#: Config keys that say where, how or with what library version a model was loaded, not what it
#: is (the weights digest already covers the dtype, whose key was renamed in transformers 5).
_VOLATILE_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "_commit_hash", "dtype",
                                   "torch_dtype", "_attn_implementation_autoset",
                                   "_attn_implementation_internal"})

_OFFLINE_HINT = ("pass a local save_pretrained directory as 'transformers:/path/to/dir', or set "
                 "HF_HUB_OFFLINE=1 with the model already in the Hugging Face cache")


class TransformersEncoder(Encoder):
    """A transformers CLIP-family model (with ``get_text_features`` / ``get_image_features``)."""

    backend = "transformers"

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any = None,
        *,
        name: str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """``processor`` is the model's ``AutoProcessor``, or any object with ``tokenizer`` and
        ``image_processor`` attributes, or a ``(tokenizer, image_processor)`` pair."""
        super().__init__()
        _check_clip_family(model)
        self.tokenizer, self.image_processor = _split_processor(processor, type(model).__name__)
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        config = model.config
        text_config = getattr(config, "text_config", None) or config
        self.model_type = str(getattr(config, "model_type", ""))
        self.image_tower_prefixes = tuple(n for n in ("vision_model", "visual_projection") if hasattr(model, n))
        self.name = name or getattr(config, "_name_or_path", None) or type(model).__name__
        self.embed_dim = _embed_dim(config, text_config)
        self.context_length = _context_length(self.tokenizer, text_config)
        self.logit_scale = _logit_scale(model)
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach().float().item()) if isinstance(bias, torch.Tensor) else None
        self.truncates_padding = (self.model_type in _CAUSAL_EOS_POOLED
                                  and getattr(self.tokenizer, "padding_side", "right") == "right")
        self.shares_prefixes = self.truncates_padding and hf_block_blocker(model) is None
        self._eos_id = getattr(text_config, "eos_token_id", None)
        self._takes_mask = _takes_attention_mask(self.tokenizer, model)
        self.image_size = _image_size(self.image_processor)

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str,
        device: torch.device | str | None = None,
        cache_dir: str | None = None,
    ) -> TransformersEncoder:
        """Load a hub id or a ``save_pretrained`` directory with AutoModel + AutoProcessor.

        Weights load as float32 (transformers 5 would otherwise keep a checkpoint's fp16/bf16),
        so that zsclip's ``precision`` alone decides the compute dtype.
        """
        from transformers import AutoModel, AutoProcessor

        _check_local_path(id_or_path)
        # no network: known in a few seconds, not after huggingface_hub's minute of retries (see hub.py)
        unreachable = None if Path(id_or_path).expanduser().is_dir() else hub.check_before_download()
        try:
            model = AutoModel.from_pretrained(id_or_path, cache_dir=cache_dir, dtype=torch.float32)
        except Exception as error:  # hub, network, file and config errors all mean "cannot load"
            message = (hub.offline_failure(f"transformers:{id_or_path}", unreachable)
                       if unreachable and hub.looks_offline(error)
                       else _fetch_failure(id_or_path, error))
            raise ModelLoadError(message) from error
        _check_clip_family(model, id_or_path)
        try:
            processor = AutoProcessor.from_pretrained(id_or_path, cache_dir=cache_dir)
        except Exception as error:
            raise ModelLoadError(_fetch_failure(id_or_path, error, what="processor")) from error
        try:
            return cls(model, processor, name=id_or_path, device=device)
        except InputError as error:
            raise ModelLoadError(f"{id_or_path}: {error}") from error

    # --- Encoder interface -------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        texts = list(texts)
        encoded = self.tokenizer(texts, padding="max_length", max_length=self.context_length,
                                 truncation=True, return_attention_mask=True, return_tensors="pt")
        ids = encoded["input_ids"].long()
        mask = encoded["attention_mask"].long()
        self._warn_truncated(texts, mask)
        return TokenBatch(ids, self._lengths(ids, mask), mask if self._takes_mask else None)

    def _prefix_parts(self):
        return hf_clip_parts(self.model)

    def _text_forward(self, tokens: TokenBatch) -> torch.Tensor:
        inputs = {"input_ids": tokens.ids}
        if tokens.attention_mask is not None:
            inputs["attention_mask"] = tokens.attention_mask
        return _pooled(self.model.get_text_features(**inputs))

    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # a wrapped model may hold fp16/bf16 weights; its patch convolution needs matching pixels
        pixels = pixels.to(getattr(self.model, "dtype", pixels.dtype))
        return _pooled(self.model.get_image_features(pixel_values=pixels))

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return functools.partial(_pixels, self.image_processor)

    def _fingerprint_parts(self) -> dict:
        config = json.loads(json.dumps(self.model.config.to_dict(), sort_keys=True, default=str))
        return {"class": type(self.model).__name__, "config": _strip_volatile(config),
                "context_length": self.context_length, "tokenizer": _tokenizer_identity(self.tokenizer)}


    # --- helpers -------------------------------------------------------------------------------
    def _lengths(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Positions each prompt needs: through the pooled token where padding is cut; elsewhere
        the non-pad count, which then only sorts prompts into tight batches."""
        if self.truncates_padding:
            return _pooled_index(ids, self._eos_id, self.model_type) + 1
        return mask.sum(dim=-1)

    def _warn_truncated(self, texts: list[str], mask: torch.Tensor) -> None:
        """Warn once about prompts cut to the context; only rows that fill it can have been cut,
        so only those are tokenised again without truncation."""
        full_rows = torch.nonzero(mask.sum(dim=-1) >= self.context_length).flatten().tolist()
        if not full_rows:
            return
        candidates = [texts[i] for i in full_rows]
        full_ids = self.tokenizer(candidates, truncation=False, verbose=False)["input_ids"]
        too_long = [text for text, ids in zip(candidates, full_ids, strict=True)
                    if len(ids) > self.context_length]
        if too_long:
            warnings.warn(
                f"{len(too_long)} prompt(s) exceed the text context of {self.context_length} tokens of "
                f"{self.name} and were truncated as its tokenizer does, e.g. {too_long[0][:80]!r}",
                ZsclipWarning, stacklevel=4)


def _pixels(image_processor: Any, image: Image.Image) -> torch.Tensor:
    """One RGB image through the model's image processor -> [3, H, W]."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def _image_size(image_processor: Any) -> int | None:
    """Short side of the processed image, from ``crop_size`` or ``size``: an int, a dict, or (newer
    transformers' fast processors) a ``SizeDict``, which is not a dict but has ``get``."""
    for attribute in ("crop_size", "size"):
        size = getattr(image_processor, attribute, None)
        if isinstance(size, int) and not isinstance(size, bool):
            return size
        get = getattr(size, "get", None)
        if callable(get):
            sides = [get(key) for key in ("height", "width", "shortest_edge")]
            sides = [v for v in sides if isinstance(v, int) and not isinstance(v, bool) and v > 0]
            if sides:
                return min(sides)
    return None


# --- loading checks ------------------------------------------------------------------------------
def _check_clip_family(model: Any, name: str | None = None) -> None:
    """Only dual encoders with a shared embedding space can classify zero-shot."""
    name = name or type(model).__name__
    if not all(callable(getattr(model, attr, None)) for attr in ("get_text_features", "get_image_features")):
        raise ModelLoadError(f"{name} ({type(model).__name__}) is not a CLIP-family model: it has no "
                             "get_text_features/get_image_features; use a CLIP, SigLIP, ALIGN, AltCLIP or "
                             "Chinese-CLIP checkpoint")
    if "spatial_shapes" in inspect.signature(model.get_image_features).parameters:
        raise ModelLoadError(f"{name} ({type(model).__name__}) takes variable-size patch inputs (NaFlex), "
                             "which zsclip's fixed-size image batches do not support; use a fixed-resolution "
                             "checkpoint (e.g. google/siglip2-base-patch16-224) instead")


def _split_processor(processor: Any, model_name: str) -> tuple[Any, Any]:
    """(tokenizer, image_processor) from an AutoProcessor, a namespace or a pair."""
    if processor is None:
        raise InputError(f"{model_name} needs its processor: pass AutoProcessor.from_pretrained(MODEL_ID) "
                         "(or its tokenizer and image processor) along with the model")
    if isinstance(processor, (tuple, list)) and len(processor) == 2:
        tokenizer, image_processor = processor
    else:
        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
    if tokenizer is None or image_processor is None:
        missing = "tokenizer" if tokenizer is None else "image processor"
        raise InputError(f"{model_name}: the processor given ({type(processor).__name__}) has no {missing}; "
                         "pass AutoProcessor.from_pretrained(MODEL_ID), or tokenizer and image processor")
    return tokenizer, image_processor


def _check_local_path(id_or_path: str) -> None:
    """A path that does not exist would otherwise be sent to the hub as a malformed repo id."""
    path = Path(id_or_path).expanduser()
    if (path.is_absolute() or id_or_path.startswith((".", "~"))) and not path.is_dir():
        raise ModelLoadError(f"could not load transformers model {id_or_path!r}: no such directory; pass a "
                             "save_pretrained directory (config.json, weights, processor files) or a hub id")


def _fetch_failure(name: str, error: Exception, what: str = "model") -> str:
    """One line: which model, the first line of the library's reason, and what to do."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = (lines[0] if lines else type(error).__name__)[:200].rstrip(". ")
    return f"could not load transformers {what} {name!r}: {reason}. Without network, {_OFFLINE_HINT}"


# --- architecture -------------------------------------------------------------------------------
def _embed_dim(config: Any, text_config: Any) -> int:
    """Shared space size: ``projection_dim`` (CLIP, ALIGN, ...), SigLIP's text ``projection_size``,
    or the text width when there is no projection."""
    candidates = ((config, "projection_dim"), (text_config, "projection_size"), (text_config, "hidden_size"))
    for source, key in candidates:
        value = getattr(source, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelLoadError(f"{type(config).__name__}: cannot tell the embedding size from the config")


def _context_length(tokenizer: Any, text_config: Any) -> int:
    """The tokenizer's ``model_max_length``, capped by the positions the text tower has
    (tokenizers without a limit report a huge sentinel)."""
    limits = (getattr(tokenizer, "model_max_length", None),
              getattr(text_config, "max_position_embeddings", None))
    limits = [int(limit) for limit in limits if isinstance(limit, (int, float)) and 0 < limit < 1_000_000]
    if not limits:
        raise ModelLoadError("cannot tell the text context length from the tokenizer or the text config")
    return min(limits)


def _logit_scale(model: torch.nn.Module) -> float:
    """The softmax temperature multiplier: ``exp(logit_scale)``, or ``1 / temperature`` (ALIGN)."""
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, torch.Tensor):
        return float(scale.detach().float().exp().item())
    temperature = getattr(model, "temperature", None)
    if isinstance(temperature, torch.Tensor):
        return float(1.0 / temperature.detach().float().item())
    raise ModelLoadError(f"{type(model).__name__} has neither logit_scale nor temperature")


def _takes_attention_mask(tokenizer: Any, model: torch.nn.Module) -> bool:
    """Pass a mask only where the processor would: the tokenizer emits one (SigLIP checkpoints
    list only ``input_ids``, as SigLIP was trained unmasked) and the text tower accepts it."""
    emits = "attention_mask" in getattr(tokenizer, "model_input_names", ("attention_mask",))
    return emits and "attention_mask" in inspect.signature(model.get_text_features).parameters


def _pooled_index(ids: torch.Tensor, eos_id: int | None, model_type: str) -> torch.Tensor:
    """Index of the token the text tower pools at, picked as CLIPTextTransformer picks it.

    Old CLIP configs carry ``eos_token_id == 2`` and pool at the highest token id (end-of-text
    is the last vocabulary entry); newer ones pool at the first ``eos_token_id``. A row without
    that token keeps the whole context, so cutting can never drop it.
    """
    if model_type == "clip" and eos_id == 2:
        return ids.argmax(dim=-1)
    if eos_id is None:
        return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long)
    is_eos = ids == eos_id
    first = is_eos.int().argmax(dim=-1)
    return torch.where(is_eos.any(dim=-1), first, torch.full_like(first, ids.shape[1] - 1))


def _pooled(output: Any) -> torch.Tensor:
    """The feature tensor from ``get_*_features``: a tensor in transformers 4, a
    ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected feature in 5."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(output, (tuple, list)) and len(output) > 1 and isinstance(output[1], torch.Tensor):
        return output[1]
    raise ModelLoadError(f"get_*_features returned {type(output).__name__} without a pooled feature tensor")


def _tokenizer_identity(tokenizer: Any) -> dict:
    """Padding side and a digest of the vocabulary: cached classifiers hold text features, which
    change with the tokenizer even when the weights do not. Not the class, which differs between
    transformers versions and installed backends for the same files."""
    vocab = sorted(tokenizer.get_vocab().items()) if hasattr(tokenizer, "get_vocab") else []
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:24]
    return {"padding_side": getattr(tokenizer, "padding_side", None), "vocab": digest}


def _strip_volatile(config: Any) -> Any:
    """Drop load-path and version keys at every level, so a hub id and its local copy agree."""
    if isinstance(config, dict):
        return {key: _strip_volatile(value) for key, value in config.items()
                if key not in _VOLATILE_CONFIG_KEYS}
    if isinstance(config, list):
        return [_strip_volatile(value) for value in config]
    return config
