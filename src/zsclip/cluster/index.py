"""The store's ANN index on Ray: each part (a group of shards) built in a Ray task, and searched in a Ray task
that returns its partial top-k; the driver merges the parts' answers (``StoreIndex.search``), so the answer is
the one a single machine gives: every part returns its exact-rescored k best, and the k best of those are the
k best overall. Tasks read the store's folder by path (a filesystem every node mounts)."""

from __future__ import annotations

import numpy as np

from ..store.index import LoadedPart, Part, build_part, part_answers
from .session import RaySettings, connect

#: per node, how many parts its tasks searched and built (the last run in this process): per-node figures
NODE_COUNTS: dict[str, int] = {}


def _build_task(job: tuple) -> tuple[dict, str]:
    return build_part(*job, threads=1), _node()


def _search_task(folder: str, record: dict, dim: int, alive: np.ndarray, count: int, queries: np.ndarray,
                 k: int) -> tuple[list[list[tuple]], str]:
    from pathlib import Path

    loaded = LoadedPart(Path(folder), Part.parse(record), dim)
    return part_answers(loaded, np.unpackbits(alive)[:count].astype(bool), queries, k), _node()


def _node() -> str:
    import ray

    if not ray.is_initialized():  # outside Ray: ``ray.get_runtime_context()`` would start a local instance
        return "driver"
    try:
        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # noqa: BLE001 - outside a task: no node to name
        return "driver"


def build_runner(settings: RaySettings):
    """``build``'s runner: one Ray task per part, entries returned in job order."""
    def run(jobs: list[tuple]) -> list[dict]:
        ray = connect(settings)
        task = ray.remote(num_cpus=1)(_build_task)
        answers = ray.get([task.remote(job) for job in jobs], timeout=settings.stall_timeout_s * max(1, len(jobs)))
        NODE_COUNTS.clear()
        for _, node in answers:
            NODE_COUNTS[node] = NODE_COUNTS.get(node, 0) + 1
        return [entry for entry, _ in answers]
    return run


def part_runner(store, settings: RaySettings):
    """``StoreIndex.search``'s runner: each part searched in a Ray task (the queries and the part's view mask
    sent along), its partial top-k returned to the driver."""
    folder, dim = str(store.location.local), store.embed_dim

    def run(parts: list[Part], alive: list[np.ndarray], queries: np.ndarray, k: int) -> list[list[list[tuple]]]:
        ray = connect(settings)
        task = ray.remote(num_cpus=1)(_search_task)
        shared = ray.put(queries)
        pending = [task.remote(folder, part.record(), dim, np.packbits(mask), len(mask), shared, k)
                   for part, mask in zip(parts, alive, strict=True)]
        answers = ray.get(pending, timeout=settings.stall_timeout_s)
        NODE_COUNTS.clear()
        for _, node in answers:
            NODE_COUNTS[node] = NODE_COUNTS.get(node, 0) + 1
        return [hits for hits, _ in answers]
    return run


__all__ = ["NODE_COUNTS", "build_runner", "part_runner"]
