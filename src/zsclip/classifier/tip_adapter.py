"""Tip-Adapter heads (Zhang et al., ECCV 2022) as data: zero-shot weights plus a cache of few-shot
features, saved in the classifier file format. It lives in the classifier layer so that loading a
classifier file never imports the code that fits one (``zsclip.adapt``)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ClassifierFileError
from ..outputs.atomic import atomic_path
from .zeroshot import TIP_ADAPTER_FORMAT, ZeroShotClassifier, read_checked

#: The largest alpha / beta a file may hold: the fitting grid stops at 256 and 128.
MAX_TIP_SETTING = 1e6


@dataclass(repr=False)
class TipAdapterClassifier(ZeroShotClassifier):
    """Zero-shot weights plus Tip-Adapter's cache: keys [N, D] (shot features), values [N] (classes).

    ``logits`` = scale * f @ W + (scale / logit_scale) * alpha * exp(-beta (1 - f K^T)) onehot(V),
    so pipelines that call ``logits`` / ``probabilities`` use it unchanged. ``alpha`` is in logits
    at the classifier's own scale; a ``scale`` override rescales the cache term with the rest.
    """

    cache_keys: torch.Tensor = None  # type: ignore[assignment]
    cache_values: torch.Tensor = None  # type: ignore[assignment]
    alpha: float = 1.0
    beta: float = 1.0

    def logits(self, image_features: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        zero_shot = super().logits(image_features, scale)  # the same operations as the zero-shot classifier
        scale = self.logit_scale if scale is None else scale
        affinity = torch.exp(-self.beta * (1 - image_features.float() @ self.cache_keys.T))
        cache = affinity @ F.one_hot(self.cache_values, len(self.classnames)).float()
        cache_term = (scale / self.logit_scale) * self.alpha * cache
        return zero_shot + (cache_term / self.temperature if self.calibration else cache_term)  # zero_shot is /T

    def array_logits(self, features: np.ndarray, scale: float | None = None) -> np.ndarray:
        """``logits`` for numpy features: the cache term is torch's, so the one formula above answers both."""
        return self.logits(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), scale).numpy()

    def save(self, path: str | os.PathLike) -> Path:
        """safetensors (weights, cache_keys, cache_values) + JSON metadata, atomically."""
        path = Path(path)
        metadata = {"format": TIP_ADAPTER_FORMAT, "classnames": self.classnames, "synonyms": self.synonyms,
                    "logit_scale": self.logit_scale, "logit_bias": self.logit_bias, "provenance": self.provenance,
                    "tip_adapter": {"alpha": self.alpha, "beta": self.beta},
                    **({"calibration": self.calibration} if self.calibration else {})}
        tensors = {"weights": self.weights.contiguous(), "cache_keys": self.cache_keys.float().contiguous(),
                   "cache_values": self.cache_values.long().contiguous()}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            save_file(tensors, temporary, metadata={"zsclip": json.dumps(metadata, ensure_ascii=False)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, encoder=None) -> TipAdapterClassifier:
        path = Path(path)
        metadata, _ = read_checked(path)
        if metadata.get("format") != TIP_ADAPTER_FORMAT:
            raise ClassifierFileError(f"{path} holds a zero-shot classifier, not a Tip-Adapter classifier: read "
                                      "it with ZeroShotClassifier.load")
        return read_tip_adapter(path, metadata).attached(encoder)

    def __repr__(self) -> str:
        return (f"TipAdapterClassifier({len(self.classnames)} classes, dim={self.embed_dim}, "
                f"cache={len(self.cache_values)}, alpha={self.alpha:g}, beta={self.beta:g})")


def _setting(settings: object, name: str) -> float:
    """alpha or beta from a file: a finite number in [0, MAX_TIP_SETTING], else a one-line refusal."""
    value = settings.get(name) if isinstance(settings, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_TIP_SETTING:
        raise ValueError(f"tip_adapter.{name} {str(value)[:20]!r} is not a number in [0, {MAX_TIP_SETTING:g}]")
    return float(value)


def read_tip_adapter(path: Path, metadata: dict) -> TipAdapterClassifier:
    """The Tip-Adapter part of a classifier file whose common metadata ``read_checked`` has already
    validated: its cache of shot features and labels, and alpha / beta, each checked
    for type, range and shape (a tampered file is one line naming it, never NaN probabilities)."""
    try:
        tensors = load_file(str(path))
        weights, keys, values = tensors["weights"].float(), tensors["cache_keys"], tensors["cache_values"]
        alpha, beta = _setting(metadata.get("tip_adapter"), "alpha"), _setting(metadata.get("tip_adapter"), "beta")
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split())[:160]
        raise ClassifierFileError(f"{path} is not a readable Tip-Adapter classifier ({reason}): rebuild it") from None
    classnames = metadata["classnames"]
    if (not keys.is_floating_point() or values.is_floating_point() or values.dtype == torch.bool
            or weights.dim() != 2 or keys.dim() != 2 or keys.shape[1] != weights.shape[0]
            or values.shape != (keys.shape[0],)
            or (len(values) and (int(values.min()) < 0 or int(values.max()) >= len(classnames)))):
        raise ClassifierFileError(f"{path}: weights {tuple(weights.shape)}, cache {tuple(keys.shape)} / "
                                  f"{tuple(values.shape)} and {len(classnames)} classes do not fit: rebuild it")
    if not torch.isfinite(keys).all():
        raise ClassifierFileError(f"{path}: the Tip-Adapter cache holds NaN or infinite values: rebuild it")
    return TipAdapterClassifier(weights, classnames, metadata["synonyms"], float(metadata["logit_scale"]),
                                metadata["logit_bias"], metadata["provenance"],
                                calibration=metadata.get("calibration"), cache_keys=keys.float(),
                                cache_values=values.long(), alpha=alpha, beta=beta)


__all__ = ["TipAdapterClassifier", "read_tip_adapter", "MAX_TIP_SETTING"]
