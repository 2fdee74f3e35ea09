"""The Ray runner: any source's feature batches computed on a Ray cluster, in input order.

Images and WebDataset shards are decoded by Ray tasks and encoded by an actor pool (see
pipeline.py); a store is read by one task per shard (only its rows in the store's view). The
sources of ``zsclip.job`` wrap these batches; heads and tasks then run on the driver over the same
batches the local runner gives, so every head and task gives on Ray the answer it gives locally.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import InputError
from ..options import RunOptions
from .pipeline import encoded_rows, encoding_job
from .session import RaySettings, connect, watched


def encoded_batches(items, encoder, options: RunOptions, settings: RaySettings | None = None, *,
                    shards=(), classnames=()) -> Iterator[tuple[list[str], list[str | None], torch.Tensor, list[int]]]:
    """(ids, errors, features of those without an error, targets) per batch: ``items`` (image
    sources) or the samples of WebDataset ``shards`` (labels read when ``classnames`` are given)
    decoded by Ray tasks and encoded by the actor pool, in input order."""
    settings = settings or RaySettings()
    job = encoding_job(items, encoder, options, settings, shards=shards, classnames=classnames)
    yield from encoded_rows(job, options, settings)


def store_rows(row: dict, masks: dict[int, np.ndarray], embed_dim: int, classnames: list[str] | None,
               multi_label: bool = False) -> list[dict]:
    """A Ray task: one store shard's rows in the store's view, each checked as a local read checks it
    (``zsclip.store.store.checked_batch``: a damaged row is an error row naming the shard). A
    multi-label store's rows carry their label sets (``labels``, int32 class indices)."""
    import pyarrow.parquet as pq

    from ..store.store import checked_batch

    index = int(row["index"])
    spans = [c for c in ("start", "end") if c in pq.read_schema(str(row["shard"])).names]  # video clips
    columns = ["path", "resolved", "label", "error", "embedding"] + (["labels"] if multi_label else []) + spans
    table = pq.read_table(str(row["shard"]), columns=columns)
    keep = np.unpackbits(masks[index])[: table.num_rows].astype(bool)
    batch = checked_batch(table, keep, shard=str(row["name"]), offset=0, embed_dim=embed_dim, classnames=classnames,
                          multi_label=multi_label)
    vectors = iter(batch.embeddings)
    sets = batch.label_sets or [()] * len(batch.paths)
    times = batch.spans or [None] * len(batch.paths)
    return [{"path": path, "resolved": key, "error": error or "", "label": int(label),
             "labels": np.asarray(labels, dtype=np.int32),
             "embedding": np.asarray(next(vectors) if error is None else [], dtype=np.float32),
             "start": np.nan if span is None else span[0], "end": np.nan if span is None else span[1]}
            for path, key, error, label, labels, span in zip(batch.paths, batch.keys, batch.errors, batch.labels, sets,
                                                             times, strict=True)]


def store_batches(store, settings: RaySettings | None = None, batch_size: int = 8192, *, spans: list | None = None,
                  keys: list | None = None
                  ) -> Iterator[tuple[list[str], list[str | None], torch.Tensor, list[int], list[tuple[int, ...]]]]:
    """(paths, errors, embeddings of those without an error, labels, label sets) per batch of a
    store's view, read by one Ray task per shard, in store order (label sets are empty for a store
    that is not multi-label). ``spans``: a list that gets each batch's video clip spans (None for
    photos) appended, when given; ``keys`` each batch's row identities (``StoreBatch.keys``)."""
    from ..store.clip_retrieval import ClipRetrievalStore

    if isinstance(store, ClipRetrievalStore):
        raise InputError(f"{store.folder} is a clip-retrieval output: read it without --ray")
    settings = settings or RaySettings()
    ray = connect(settings)
    masks = {index: np.packbits(mask) for index, mask in store.view_masks().items()}
    shards = [{"shard": str(path), "index": index, "name": shard["file"]}
              for index, (path, shard) in enumerate(zip(store.shard_files, store.manifest["shards"], strict=True))
              if index in masks]
    if not shards:
        raise InputError(f"store {store.folder} is empty or unreadable")
    dataset = ray.data.from_items(shards, override_num_blocks=len(shards)).flat_map(
        store_rows, fn_kwargs={"masks": masks, "embed_dim": store.embed_dim, "classnames": store.classnames,
                               "multi_label": store.multi_label})
    for batch in watched(dataset.iter_batches(batch_size=batch_size, batch_format="numpy"), settings.stall_timeout_s):
        errors = [str(error) or None for error in batch["error"]]
        good = [np.asarray(v, dtype=np.float32) for v, e in zip(batch["embedding"], errors, strict=True) if e is None]
        features = torch.from_numpy(np.stack(good)) if good else torch.empty(0, store.embed_dim)
        if spans is not None:
            spans.append([None if np.isnan(s) else (float(s), float(e)) for s, e in zip(batch["start"], batch["end"],
                                                                                       strict=True)])
        if keys is not None:
            keys.append([str(key) for key in batch["resolved"]])
        yield ([str(p) for p in batch["path"]], errors, features, [int(t) for t in batch["label"]],
               [tuple(int(label) for label in labels) for labels in batch["labels"]])


__all__ = ["encoded_batches", "store_batches", "store_rows"]
