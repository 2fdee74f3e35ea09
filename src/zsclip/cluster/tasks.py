"""Embedding into a store on Ray: ``zsclip.store.embed`` with the Ray job as its feature source.

The driver compares inputs with the store, writes the same shards and commits the same manifest,
so a Ray run and a local run continue each other's work. (Classify and eval on Ray are the one
job on the Ray runner: see runner.py.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..data.sources import Source
from ..options import RunOptions
from ..store import EmbeddingStore, embed
from .pipeline import ray_feature_batches
from .session import RaySettings


def embed_on_ray(store: EmbeddingStore, sources: Sequence[Source], encoder, options: RunOptions,
                 settings: RaySettings, nodes: Counter | None = None, **embed_options):
    """``zsclip embed --ray``: new and changed images encoded on the cluster, shards written here;
    ``nodes`` (when given) counts the images each Ray node encoded."""

    return embed(store, sources, encoder, options,
                 features=lambda todo: ray_feature_batches(list(todo), encoder, options, settings, nodes=nodes),
                 **embed_options)


__all__ = ["embed_on_ray"]
