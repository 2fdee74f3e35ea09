"""The Ray runner: any source's feature batches computed on a Ray cluster, in input order.

Images and WebDataset shards are decoded by Ray tasks and encoded by an actor pool (see
pipeline.py); a store is read by one task per shard (only its rows in the store's view). Heads and
tasks then run on the driver over the same ``FeatureBatch``es the local runner gives, so every
head and every task gives on Ray exactly the answer it gives locally.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import InputError
from ..options import RunOptions
from .pipeline import encoded_dataset
from .session import RaySettings, connect


def ray_batches(source, encoder, options: RunOptions, settings: RaySettings | None = None) -> Iterator:
    """``source.batches`` on Ray (``zsclip.job.sources`` kinds: images, labelled data, shards, stores)."""
    from ..job.sources import FeatureBatch, ImageFiles, LabelledData, StoreSource

    settings = settings or RaySettings()
    if isinstance(source, StoreSource):
        yield from _store_batches(source, settings)
        return
    if isinstance(source, ImageFiles):
        dataset = encoded_dataset(source.sources, encoder, options, settings)
    elif isinstance(source, LabelledData):
        collection = source.collection
        dataset = encoded_dataset(collection.items, encoder, options, settings, shards=collection.shards,
                                  classnames=collection.classnames if source.labelled else ())
    else:
        raise InputError(f"{source.describe()} cannot run on Ray yet: run it without --ray")
    for batch in dataset.iter_batches(batch_size=options.batch_size, batch_format="numpy"):
        ok = batch["ok"].astype(bool)
        yield FeatureBatch([str(name) for name in batch["name"]], [str(error) or None for error in batch["error"]],
                           torch.from_numpy(np.ascontiguousarray(batch["embedding"][ok])),
                           [int(t) for t in batch["target"]] if source.labelled else None)


def store_rows(row: dict, masks: dict[int, np.ndarray]) -> list[dict]:
    """A Ray task: one store shard's rows that are in the store's view (path, error, label, embedding)."""
    import pyarrow.parquet as pq

    index = int(row["index"])
    table = pq.read_table(str(row["shard"]), columns=["path", "error", "label", "embedding"])
    keep = np.unpackbits(masks[index])[: table.num_rows].astype(bool)
    table = table.filter(keep)
    out = []
    for path, error, label, vector in zip(table.column("path").to_pylist(), table.column("error").to_pylist(),
                                          table.column("label").to_pylist(), table.column("embedding").to_pylist(),
                                          strict=True):
        out.append({"path": path, "error": error or "", "label": -1 if label is None else int(label),
                    "embedding": np.asarray(vector if vector is not None else [], dtype=np.float32)})
    return out


def _store_batches(source, settings: RaySettings) -> Iterator:
    from ..job.sources import FeatureBatch
    from ..store.clip_retrieval import ClipRetrievalStore

    store = source.store
    if isinstance(store, ClipRetrievalStore):
        raise InputError(f"{store.folder} is a clip-retrieval output: read it without --ray")
    ray = connect(settings)
    masks = {index: np.packbits(mask) for index, mask in store.view_masks().items()}
    shards = [{"shard": str(path), "index": index} for index, path in enumerate(store.shard_files) if index in masks]
    if not shards:
        raise InputError(f"store {store.folder} is empty or unreadable")
    dataset = ray.data.from_items(shards, override_num_blocks=len(shards)).flat_map(
        store_rows, fn_kwargs={"masks": masks})
    for batch in dataset.iter_batches(batch_size=source.batch_size, batch_format="numpy"):
        errors = [str(error) or None for error in batch["error"]]
        good = [np.asarray(v, dtype=np.float32) for v, e in zip(batch["embedding"], errors, strict=True) if e is None]
        features = torch.from_numpy(np.stack(good)) if good else torch.empty(0, store.embed_dim)
        yield FeatureBatch([str(p) for p in batch["path"]], errors, features,
                           [int(t) for t in batch["label"]] if source.labelled else None)


__all__ = ["ray_batches", "store_rows"]
