"""The encoder contract every backend adapter fulfils, and the behaviour they all share.

An adapter knows one library (open_clip, transformers). Everything above this layer sees only
``Encoder``: normalised float32 features, ``logit_scale`` / ``logit_bias``, and a ``fingerprint``.
What an adapter must provide is declared below as abstract members; what it gets for free:
the fast text path (encode each distinct prompt once, sort prompts by token length so batches
are tight, drop padding when, and only when, the architecture makes that exact; shared template
prefixes, see shared_prefix.py), the fingerprint (fingerprint.py) and the int8 image tower (int8.py).
"""

from __future__ import annotations

import copy
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..errors import InputError
from ..precision import DEFAULT_PRECISION, autocast, resolve_precision, text_precision
from .fingerprint import model_fingerprint


@dataclass
class TokenBatch:
    """Tokenised prompts as the tokenizer pads them, plus what the fast path needs.

    ``lengths[i]`` is the number of positions prompt ``i`` needs: for towers that pool at the
    end-of-text token it is that token's index + 1, so running ``ids[:, :max(lengths)]`` is exact.
    """

    ids: torch.Tensor  # [N, context] long
    lengths: torch.Tensor  # [N] long
    attention_mask: torch.Tensor | None = None  # [N, context], for towers that take one

    def select(self, index: torch.Tensor, length: int | None) -> TokenBatch:
        """Rows ``index``, cut to ``length`` positions (None keeps the full padded context)."""
        cut = slice(None) if length is None else slice(0, length)
        mask = None if self.attention_mask is None else self.attention_mask[index, cut]
        return TokenBatch(self.ids[index, cut], self.lengths[index], mask)


class Encoder(ABC):
    """A CLIP-family model seen through one interface (see DESIGN.md, encoders/).

    Attributes:
        backend: the library behind it ("open_clip", "transformers").
        name: what the user asked for, for messages and provenance.
        embed_dim: size of the shared embedding space.
        context_length: the text tower's maximum number of tokens.
        logit_scale: the temperature multiplier, already exponentiated (about 100 for CLIP).
        logit_bias: additive logit bias of sigmoid-trained models (SigLIP), else None.
        truncates_padding: True when the text tower is causal and pools at the end-of-text token,
            so positions after it cannot change the output and are not computed.
        shares_prefixes: True when, in addition, the adapter computes each group's common token
            prefix once and runs only the rest of each prompt against its keys and values.
        device: where the model lives.
        image_size: the short side of the model's input image, in pixels (decoders use it to
            decode large JPEGs at a reduced scale), or None when unknown.
    """

    backend: str
    name: str
    embed_dim: int
    context_length: int
    logit_scale: float
    logit_bias: float | None
    truncates_padding: bool
    shares_prefixes: bool = False
    device: torch.device
    image_size: int | None = None
    #: the library's own model object: its weights are fingerprinted, the int8 twin swaps in a
    #: quantized copy of it, and forward passes read it (adapters must set it)
    model: torch.nn.Module
    #: top-level submodules of ``model`` that make up the image tower (quantized by precision="int8")
    image_tower_prefixes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._fingerprint: str | None = None
        self._int8: Encoder | None = None

    # --- what an adapter implements -------------------------------------------------------
    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenise as the model's own tokenizer does (warning about prompts it truncates)."""

    @abstractmethod
    def _text_forward(self, tokens: TokenBatch) -> torch.Tensor:
        """Unnormalised text features for tokens already on ``self.device``."""

    @abstractmethod
    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features for preprocessed pixels already on ``self.device``."""

    @abstractmethod
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The model's own image transform as a picklable callable (DataLoader workers run it)."""

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> [3, H, W] float tensor, exactly as the model's own preprocessing."""
        return self.image_transform()(image)

    @abstractmethod
    def _fingerprint_parts(self) -> dict:
        """Config that, with the weights' digest, identifies the model."""

    def _prefix_parts(self):
        """The text tower as ``shared_prefix.TowerParts``; adapters with ``shares_prefixes`` give it."""
        raise NotImplementedError(f"{type(self).__name__} sets shares_prefixes but has no _prefix_parts")

    # --- shared behaviour ------------------------------------------------------------------
    @property
    def is_sigmoid(self) -> bool:
        """Sigmoid-trained models (SigLIP) score each class independently."""
        return self.logit_bias is not None

    @property
    def fingerprint(self) -> str:
        """Stable id of config + weights: equal for the same model on any machine or device."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.backend, self._fingerprint_parts(), self.model)
        return self._fingerprint

    def encode_text(
        self,
        texts: Sequence[str],
        precision: str = DEFAULT_PRECISION,
        batch_size: int = 256,
        progress: bool | None = None,
        groups: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Encode prompts to L2-normalised float32 features [N, D], in the order given.

        Each distinct prompt is encoded once; prompts are sorted by token length and batched so
        that a batch runs only as many positions as its longest prompt needs (when the tower
        allows it). ``groups`` (e.g. the template index of each prompt) names prompts that
        share a leading text, for adapters that compute a shared prefix once.
        ``progress=None`` shows a bar only for long jobs on a terminal.
        """
        texts = list(texts)
        if groups is not None and len(groups) != len(texts):
            raise InputError(f"groups has {len(groups)} entries for {len(texts)} texts: give one per text")
        if not texts:
            return torch.empty(0, self.embed_dim)
        position: dict[str, int] = {}
        unique_groups: list[int] = []
        for i, text in enumerate(texts):
            if text not in position:
                position[text] = len(position)
                unique_groups.append(groups[i] if groups is not None else 0)
        unique = list(position)
        tokens = self.tokenize(unique)
        features = torch.empty(len(unique), self.embed_dim, dtype=torch.float32)
        precision = text_precision(resolve_precision(precision, self.device))
        show = _show_progress(progress, len(unique))
        with torch.inference_mode(), autocast(precision, self.device), tqdm(
            total=len(unique), desc="encoding prompts", unit="prompt", disable=not show, leave=False
        ) as bar:
            work, forward = self._text_plan(tokens, torch.tensor(unique_groups))
            order = torch.argsort(work, stable=True)
            for start in range(0, len(unique), batch_size):
                index = order[start : start + batch_size]
                features[index] = F.normalize(forward(index).float(), dim=-1).cpu()
                bar.update(len(index))
        if len(unique) == len(texts):
            return features
        return features[torch.tensor([position[text] for text in texts])]

    def _text_plan(
        self, tokens: TokenBatch, groups: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """(positions each prompt costs, forward(rows) -> features): prompts are sorted by cost so
        a batch is tight. With shared prefixes (see shared_prefix.py) a prompt costs only its own
        tokens: class name and template tail. Otherwise each batch runs up to its longest prompt
        (when the tower allows cutting padding)."""
        if self.shares_prefixes:
            from .shared_prefix import PrefixCache, encode_suffixes

            ids, lengths, groups = tokens.ids.to(self.device), tokens.lengths.to(self.device), groups.to(self.device)
            parts = self._prefix_parts()
            cache = PrefixCache.build(parts, ids, lengths, groups)

            def forward_suffixes(index: torch.Tensor) -> torch.Tensor:
                index = index.to(self.device)
                return encode_suffixes(parts, ids[index], lengths[index] - 1, groups[index], cache)

            return (lengths - cache.lengths[groups]).cpu(), forward_suffixes

        def forward(index: torch.Tensor) -> torch.Tensor:
            length = int(tokens.lengths[index].max()) if self.truncates_padding else None
            batch = tokens.select(index, length)
            mask = batch.attention_mask
            return self._text_forward(TokenBatch(batch.ids.to(self.device), batch.lengths.to(self.device),
                                                 None if mask is None else mask.to(self.device)))

        return tokens.lengths, forward

    def encode_images(self, pixels: torch.Tensor, precision: str = DEFAULT_PRECISION) -> torch.Tensor:
        """Encode preprocessed pixels [B, 3, H, W] to L2-normalised float32 features [B, D]."""
        precision = resolve_precision(precision, self.device)
        pixels = pixels.to(self.device, non_blocking=True)
        encoder = self._int8_encoder(pixels) if precision == "int8" else self
        with torch.inference_mode(), autocast(precision, self.device):
            features = encoder._image_forward(pixels)
        return F.normalize(features.float(), dim=-1).cpu()

    def prepare(self, precision: str) -> None:
        """Do now what the first image batch would do at ``precision`` (build the int8 image tower),
        so a model that cannot run it fails in one line before any image is read."""
        if resolve_precision(precision, self.device) == "int8":
            side = self.image_size or 224
            self._int8_encoder(torch.zeros(1, 3, side, side, device=self.device))

    def _int8_encoder(self, pixels: torch.Tensor) -> Encoder:
        """This encoder with an int8 image tower, built on first use (probed with ``pixels``) and kept.
        The twin is a shallow copy whose ``model`` is the quantized copy (see the ``model`` contract)."""
        if self._int8 is None:
            from .int8 import int8_image_copy

            if not self.image_tower_prefixes:
                raise InputError(f"{self.name}: precision int8 is not supported for this model; use fp32")

            def with_model(model: torch.nn.Module) -> Encoder:
                twin = copy.copy(self)
                twin.model = model
                return twin

            quantized = int8_image_copy(self.model, self.image_tower_prefixes,
                                        probe=lambda model: with_model(model)._image_forward(pixels[:1]))
            self._int8 = with_model(quantized)
        return self._int8

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, device={self.device}, embed_dim={self.embed_dim})"


def _show_progress(progress: bool | None, total: int) -> bool:
    if progress is not None:
        return progress and sys.stderr.isatty()
    return total >= 2000 and sys.stderr.isatty()
