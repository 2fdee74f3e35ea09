"""Answers that need statistics over every image being answered (the multi-label ``collection`` score).

The head cannot answer a batch before it has seen the rest, so the batches are gathered first and the
head is made for all of their features (``Head.for_collection``). This runs where the answers are made,
on the driver: a Ray job gathers the same batches as a local one, so it gives the same answers. The
features are held until the last batch is in (memory grows with images x embedding width).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..heads import Head
    from .sources import FeatureBatch


def over_collection(head: Head, batches: Iterable[FeatureBatch]) -> tuple[Head, Iterable[FeatureBatch]]:
    """(the head for these batches, the batches): ``head`` and ``batches`` as they are when the head needs no
    statistics over the collection; else every batch read now, and the head made for their finite features."""
    if not head.needs_collection:
        return head, batches
    import torch

    gathered = list(batches)
    good = [batch.features.float() for batch in gathered if len(batch.values)]
    features = torch.cat(good) if good else torch.empty(0, head.classifier.embed_dim)
    return head.for_collection(features[features.isfinite().all(dim=1)]), gathered


__all__ = ["over_collection"]
