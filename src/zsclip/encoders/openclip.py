"""open_clip adapter: built-in names + pretrained tags, ``hf-hub:``, ``local-dir:``, checkpoint files.

The one speed trick here is exact: OpenAI-style text towers are causal-masked and read their
output at the end-of-text token, so nothing after that token can reach the output. We run
only as many positions as the longest prompt in the batch needs. ``_truncation_blocker``
checks every condition that makes this exact and names the first one that fails.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image

from ..errors import InputError, ModelLoadError, ZsclipWarning
from . import hub
from .base import Encoder, TokenBatch
from .catalog import demo_model_dir
from .shared_prefix import block_blocker, open_clip_parts

#: ``pretrained`` value that asks for untrained weights on purpose (benchmarks, tests).
RANDOM_WEIGHTS = "random"
DEMO_MODEL = "demo"  # the bundled offline model: --model demo
_POOLING_AT_EOT = ("argmax", "eos")


class OpenClipEncoder(Encoder):
    """An open_clip model (CLIP, CustomTextCLIP, SigLIP, CoCa, ...) behind the Encoder interface."""

    backend = "open_clip"
    image_tower_prefixes = ("visual",)

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[..., torch.Tensor] | None = None,
        preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
        *,
        name: str | None = None,
        pretrained: str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        import open_clip

        if tokenizer is None:
            raise InputError("wrap(open_clip model) needs its tokenizer: pass open_clip.get_tokenizer(MODEL_NAME)")
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else _module_device(model)
        self.model.to(self.device)
        self.tokenizer = tokenizer
        self._preprocess = preprocess
        self.name = name or type(model).__name__
        self.pretrained = pretrained
        self.tower = _text_tower(model)
        positions = self.tower.positional_embedding
        self.context_length = int(getattr(tokenizer, "context_length", None) or positions.shape[0])
        self.embed_dim = _embed_dim(model, self.tower)
        size = getattr(getattr(model, "visual", None), "image_size", None)
        self.image_size = int(min(size)) if isinstance(size, (tuple, list)) else (int(size) if size else None)
        self.logit_scale = float(model.logit_scale.detach().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach().item()) if bias is not None else None
        self.truncation_blocker = _truncation_blocker(self.tower, tokenizer, open_clip)
        self.truncates_padding = self.truncation_blocker is None
        self.shares_prefixes = self.truncates_padding and block_blocker(self.tower.transformer.resblocks) is None

    # --- Encoder interface -------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        ids = self.tokenizer(list(texts)).long()
        _warn_truncated(self.tokenizer, texts, ids)
        tower = self.tower
        if tower.pool_type == "argmax":
            pooled = ids.argmax(dim=-1)
        elif tower.pool_type == "eos" and tower.eos_id is not None:
            pooled = (ids == tower.eos_id).int().argmax(dim=-1)
        else:  # only used to sort prompts, nothing is cut for these towers
            pooled = (ids != 0).sum(dim=-1) - 1
        return TokenBatch(ids, pooled + 1)

    def _text_forward(self, tokens: TokenBatch) -> torch.Tensor:
        if not self.truncates_padding:
            return self.model.encode_text(tokens.ids)
        return _encode_text_cut(self.tower, tokens.ids)

    def _prefix_parts(self):
        return open_clip_parts(self.tower)

    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        if self._preprocess is None:
            raise InputError(f"{self.name}: no image preprocessing known; pass preprocess= to zsclip.wrap")
        return self._preprocess

    def _fingerprint_parts(self) -> dict:
        return {"class": type(self.model).__name__, "context_length": self.context_length}



def load_open_clip(
    name: str,
    pretrained: str | None = None,
    device: torch.device | str = "cpu",
    cache_dir: str | None = None,
) -> OpenClipEncoder:
    """Load through open_clip's own factory, turning its failures into one-line errors.

    ``"demo"`` is the bundled model (see ``demo_model_dir``), loaded as any local-dir model is.
    """
    import open_clip

    display_name = name
    if name == DEMO_MODEL:
        if pretrained is not None:
            raise ModelLoadError(f"the demo model ships with its weights: drop pretrained={pretrained!r}")
        name = f"local-dir:{demo_model_dir()}"
    pretrained_arg = _check_model_and_tag(name, pretrained, open_clip)
    downloads = name.startswith("hf-hub:") or (pretrained_arg is not None and not os.path.isfile(pretrained_arg))
    # no network: known in a few seconds, not after huggingface_hub's minute of retries (see hub.py)
    unreachable = hub.check_before_download() if downloads else None
    try:
        with _without_open_clip_log_errors():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained_arg, device=device, cache_dir=cache_dir
            )
            tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    except Exception as error:  # open_clip raises bare RuntimeError/OSError for every cause
        what = f"{name} (pretrained={pretrained!r})" if pretrained else name
        message = (hub.offline_failure(what, unreachable) if unreachable and hub.looks_offline(error)
                   else _fetch_failure(name, pretrained, error))
        raise ModelLoadError(message) from error
    return OpenClipEncoder(model, tokenizer, preprocess, name=display_name, pretrained=pretrained, device=device)


# --- loading checks ------------------------------------------------------------------------------
def _check_model_and_tag(name: str, pretrained: str | None, open_clip) -> str | None:
    """Validate before open_clip builds anything; return the ``pretrained`` value to pass on."""
    if name.startswith("local-dir:"):
        path = Path(name.removeprefix("local-dir:")).expanduser()
        if not (path / "open_clip_config.json").is_file():
            raise ModelLoadError(f"{name}: no open_clip_config.json in {path}; a local-dir: model folder "
                                 "holds open_clip_config.json and its weights (*.safetensors)")
        try:
            config = json.loads((path / "open_clip_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{name}: cannot read open_clip_config.json ({error})") from None
        if not isinstance(config, dict) or "model_cfg" not in config:
            raise ModelLoadError(f"{name}: open_clip_config.json has no 'model_cfg' section; write it as open_clip "
                                 "does: {\"model_cfg\": {...}, \"preprocess_cfg\": {...}}")
        if not any(any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth")):
            raise ModelLoadError(f"{name}: no weights (*.safetensors, *.bin, *.pth) in {path}")
        return None
    if name.startswith("hf-hub:"):
        return None
    known = open_clip.list_models()
    if name.replace("/", "-") not in known:
        close = close_model_names(name, known)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ModelLoadError(f"unknown open_clip model {name!r}: {hint}see `zsclip models --all`, "
                             "or use hf-hub:ORG/REPO, local-dir:PATH or transformers:ID")
    tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))  # ViT-L/14 is ViT-L-14
    if pretrained is None:
        raise ModelLoadError(f"{name} needs pretrained weights: pass a tag ({', '.join(tags) or 'none known'}), "
                             f"a checkpoint file, or {RANDOM_WEIGHTS!r} for untrained weights")
    if pretrained == RANDOM_WEIGHTS:
        return None
    if pretrained in tags or os.path.isfile(pretrained):
        return pretrained
    close = close_tags(pretrained, tags)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ModelLoadError(f"{name}: pretrained={pretrained!r} is neither a known tag nor an existing checkpoint file: "
                         f"{hint}its tags are {', '.join(tags) or 'none'}")


def close_model_names(name: str, known: Sequence[str], n: int = 3) -> list[str]:
    """The names nearest to a mistyped ``name`` (``dmeo`` -> ``demo``, ``vit-b-32`` -> ``ViT-B-32``): the
    bundled demo model and every open_clip name, compared without case; the demo model first when it is one."""
    candidates = [DEMO_MODEL, *known]
    by_lower = {candidate.lower(): candidate for candidate in reversed(candidates)}
    close = difflib.get_close_matches(name.replace("/", "-").lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[match] for match in close]


def close_tags(tag: str, known: Sequence[str], n: int = 3) -> list[str]:
    """The pretrained tags nearest to a mistyped ``tag`` (``laion2b_s34b_b97k`` -> ``laion2b_s34b_b79k``,
    ``OpenAI`` -> ``openai``), compared without case, as model names are."""
    by_lower = {candidate.lower(): candidate for candidate in reversed(known)}
    return [by_lower[match] for match in difflib.get_close_matches(tag.lower(), list(by_lower), n=n, cutoff=0.6)]


_OFFLINE_SIGNS = ("local cache", "connection", "offline", "name or service", "resolve", "timed out")


def _fetch_failure(name: str, pretrained: str | None, error: Exception) -> str:
    what = f"{name} (pretrained={pretrained!r})" if pretrained else name
    text = " ".join(str(error).split())
    if name.startswith("local-dir:") or (pretrained and os.path.isfile(pretrained)):
        return f"could not load {what}: {_shorten(text)}"
    if any(sign in text.lower() for sign in _OFFLINE_SIGNS):
        reason = "its weights are not in the local cache and the model hub could not be reached"
    else:
        reason = _shorten(text) or type(error).__name__
    return (f"could not load {what}: {reason}. Without network, use a local copy: local-dir:PATH "
            "(open_clip_config.json + weights), pretrained=/path/to/weights.safetensors, or set "
            "HF_HUB_OFFLINE=1 with the weights already in the Hugging Face cache")


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


@contextlib.contextmanager
def _without_open_clip_log_errors() -> Iterator[None]:
    """open_clip logs its failures on the root logger before raising; we re-raise them as one line."""
    marker = f"{os.sep}open_clip{os.sep}"

    def drop(record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and marker in record.pathname)

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


# --- architecture -------------------------------------------------------------------------------
_TOWER_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection", "attn_mask")


def _text_tower(model: torch.nn.Module) -> SimpleNamespace:
    """The text tower's parts under one set of names: open_clip.CLIP keeps them on the model
    itself (pooling as ``text_pool_type``), other models in ``model.text``."""
    text = getattr(model, "text", None)
    if text is None:
        tower = SimpleNamespace(kind="CLIP", **{part: getattr(model, part, None) for part in _TOWER_PARTS},
                                pool_type=model.text_pool_type, eos_id=getattr(model, "text_eos_id", None),
                                cls_emb=None, use_pad_mask=False)
    else:
        tower = SimpleNamespace(kind=type(text).__name__, **{part: getattr(text, part, None) for part in _TOWER_PARTS},
                                pool_type=getattr(text, "pool_type", None), eos_id=getattr(text, "eos_id", None),
                                cls_emb=getattr(text, "cls_emb", None),
                                use_pad_mask=getattr(text, "use_pad_mask", False))
    tower.project = _projector(tower.text_projection)
    return tower


# --- the text projection: open_clip stores it as a matrix (CLIP) or an nn.Linear (custom towers) --
def _projector(projection: torch.nn.Module | torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """pooled [B, W] -> [B, D] for any form of text projection (None: the tower has none)."""
    if projection is None:
        return lambda x: x
    if isinstance(projection, torch.nn.Linear):
        return projection
    return lambda x: x @ projection


def _projection_width(projection: torch.nn.Module | torch.Tensor | None) -> int | None:
    """D, the width a text projection maps to, or None without one."""
    if projection is None:
        return None
    return projection.out_features if isinstance(projection, torch.nn.Linear) else int(projection.shape[1])


def _truncation_blocker(tower: SimpleNamespace, tokenizer, open_clip) -> str | None:
    """Why padding cannot be dropped for this tower, or None when dropping it is exact."""
    from open_clip.transformer import TextTransformer

    if tower.kind not in ("CLIP", TextTransformer.__name__) or tower.transformer is None:
        return f"text tower {tower.kind} is not open_clip's causal transformer"
    if tower.attn_mask is None:
        return "text tower is bidirectional (no causal mask): every position sees the padding"
    n = tower.attn_mask.shape[0]
    causal = torch.full((n, n), float("-inf")).triu_(1)
    if not torch.equal(tower.attn_mask.detach().cpu().float(), causal):
        return "text tower's attention mask is not the plain causal mask"
    if tower.pool_type not in _POOLING_AT_EOT:
        return f"text tower pools with {tower.pool_type!r}, not at the end-of-text token"
    if tower.cls_emb is not None or tower.use_pad_mask:
        return "text tower appends a class token or masks padding (CoCa-style)"
    if not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) or tokenizer.reduction_fn is not None:
        return "tokenizer is not the plain CLIP BPE tokenizer (end-of-text token position unknown)"
    return None


def _encode_text_cut(tower: SimpleNamespace, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's text forward on ``ids`` already cut to L <= context positions.

    Identical to ``encode_text`` on the padded ids for a causal tower pooling at end-of-text:
    position embeddings and the causal mask are sliced to L, the rest is the model's own modules.
    """
    from open_clip.transformer import text_global_pool

    length = ids.shape[1]
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(ids).to(cast_dtype)
    x = x + tower.positional_embedding[:length].to(cast_dtype)
    mask = None if tower.attn_mask is None else tower.attn_mask[:length, :length]
    x = tower.transformer(x, attn_mask=mask)
    x = tower.ln_final(x)
    x = text_global_pool(x, ids, tower.pool_type, eos_token_id=tower.eos_id)
    return tower.project(x)


def _warn_truncated(tokenizer, texts: Sequence[str], ids: torch.Tensor) -> None:
    """Warn once about prompts the tokenizer cut to its context (only full rows can be cut)."""
    full_rows = torch.nonzero(ids[:, -1] != 0).flatten().tolist()
    if not full_rows:
        return
    context = ids.shape[1]
    counter = _token_counter(tokenizer)
    too_long = [texts[i] for i in full_rows if counter is None or counter(texts[i]) > context]
    if too_long:
        warnings.warn(
            f"{len(too_long)} prompt(s) exceed the text context of {context} tokens and were truncated "
            f"as the tokenizer does, e.g. {too_long[0][:80]!r}", ZsclipWarning, stacklevel=4)


def _token_counter(tokenizer) -> Callable[[str], int] | None:
    encode = getattr(tokenizer, "encode", None)
    if encode is not None and hasattr(tokenizer, "sot_token_id"):
        return lambda text: len(encode(text)) + 2  # + start and end of text
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:
        return lambda text: len(inner(text)["input_ids"])
    return None


def _embed_dim(model: torch.nn.Module, tower: SimpleNamespace) -> int:
    width = _projection_width(tower.text_projection)
    return width if width is not None else int(model.visual.output_dim)


def _module_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
