"""``zsclip index``: build or extend a store's ANN index (``zsclip.store.index``), here or on Ray, and say
how close its answers are to exact search."""

from __future__ import annotations

import os

from ..job.plan import ray_settings
from ..store.index import IndexReport, build, remove


def index_store(path: str | os.PathLike, *, rebuild: bool = False, lists: int | None = None,
                probes: int | None = None, check: int = 100, ray=None, drop: bool = False) -> IndexReport | None:
    """Build or extend the index of the store at ``path``; ``check`` sampled rows measure its recall@10 against
    exact search (0: not measured). ``ray``: each part built in a Ray task. ``drop``: delete the index instead
    (returns None)."""
    from ..store import EmbeddingStore

    store = EmbeddingStore.open(path)
    if drop:
        remove(store)
        return None
    settings = ray_settings(ray)
    runner = None
    if settings is not None:
        from ..cluster.index import build_runner

        runner = build_runner(settings)
    return build(store, rebuild=rebuild, lists=lists, probes=probes, check_queries=check, runner=runner)


__all__ = ["index_store"]
