"""Flat classifier files, whichever kind a file holds: the one place that chooses between the zero-shot
reader (``zeroshot.py``, also linear probes) and the Tip-Adapter reader (``tip_adapter.py``, which builds on
the zero-shot classifier), so neither imports the other's way back. It is above both; label-tree and
multi-label files are chosen one layer up (``zsclip.heads.files``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import formats
from .zeroshot import ZeroShotClassifier, read_metadata

if TYPE_CHECKING:
    from ..encoders.base import Encoder


def load_flat(path: str | os.PathLike, encoder: Encoder | None = None) -> ZeroShotClassifier:
    """A zero-shot classifier, a linear probe or a Tip-Adapter head, by the format its file declares (torch is
    imported for a Tip-Adapter file only); ``encoder`` as ``ZeroShotClassifier.load`` takes it."""
    metadata = read_metadata(path)
    if isinstance(metadata, dict) and metadata.get("format") == formats.TIP_ADAPTER:
        from .tip_adapter import TipAdapterClassifier

        return TipAdapterClassifier.load(path, encoder)
    return ZeroShotClassifier.load(Path(path), encoder)


__all__ = ["load_flat"]
