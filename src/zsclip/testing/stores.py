"""Synthetic embedding stores of any size, written through the store's own writer (``EmbeddingStore.append``).

For tests and benchmarks that need many rows without encoding images: the manifest names a model
that does not exist (``synthetic``), so such a store is read with a classifier file of its width
(``synthetic_classifier``) or searched with a query vector; it is never given to a model.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import numpy as np

from ..store.format import FORMAT, LAYOUT_FIELD, PACKED, written_version
from ..store.location import Location
from ..store.store import EmbeddingStore

FINGERPRINT = "synthetic:1"


def synthetic_store(folder: str | os.PathLike, rows: int, dim: int = 512, *, shard_rows: int = 100_000,
                    dtype: str = "float16", seed: int = 0, clusters: int = 64,
                    prefix: str = "/synthetic/", packed: bool = True) -> EmbeddingStore:
    """A new store of ``rows`` unit vectors (clustered around ``clusters`` centres, as real embeddings
    are, not uniform noise), ``shard_rows`` per shard, paths ``PREFIX/NNNNNNNNN.jpg``. Shards are
    appended under the write lock after ``facts``, as ``zsclip embed`` appends them, so they are marked
    ``new_paths`` exactly as an embed of new files would be. ``packed=False``: the embeddings in lists, as a
    store made before packed embeddings has them (``store.format``)."""
    location = Location(folder)
    location.mkdir()
    manifest = {"format": FORMAT, "version": written_version(False, packed),
                **({LAYOUT_FIELD: PACKED} if packed else {}), "zsclip_version": "synthetic",
                "model": "synthetic", "pretrained": None, "fingerprint": FINGERPRINT, "backend": "synthetic",
                "embed_dim": dim, "precision": "fp32", "dtype": dtype, "logit_scale": 100.0, "logit_bias": None,
                "preprocessing": None, "classnames": None, "shards": [],
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store = EmbeddingStore(location, manifest)
    store._write_manifest()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    with store.writing():
        store.facts()
        for start in range(0, rows, shard_rows):
            count = min(shard_rows, rows - start)
            vectors = centres[rng.integers(0, clusters, count)] + 0.5 * rng.standard_normal((count, dim),
                                                                                           dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.append(synthetic_rows(start, count, prefix), vectors)
    return store


def synthetic_rows(start: int, count: int, prefix: str = "/synthetic/") -> list[dict]:
    """The rows (all but the embedding) of synthetic images ``start``... (paths as a real store has them)."""
    return [{"path": f"{prefix}{n:09d}.jpg", "resolved": f"{prefix}{n:09d}.jpg", "size": 40_000 + n % 997,
             "mtime_ns": 1_700_000_000_000_000_000 + n, "sha256": f"{n:064x}", "width": 640, "height": 480,
             "label": None, "error": None, "deleted": False} for n in range(start, start + count)]


def synthetic_classifier(path: str | os.PathLike, dim: int = 512, classes: int = 1000, seed: int = 1):
    """A classifier file of ``classes`` random unit columns for a synthetic store of width ``dim``."""
    import torch

    from ..classifier.zeroshot import ZeroShotClassifier

    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((dim, classes)).astype(np.float32)
    weights /= np.linalg.norm(weights, axis=0, keepdims=True)
    names = [f"class {n}" for n in range(classes)]
    classifier = ZeroShotClassifier(torch.from_numpy(weights), names, [[name] for name in names], 100.0, None,
                                    {"model": "synthetic", "fingerprint": FINGERPRINT})
    return classifier.save(path)


__all__ = ["FINGERPRINT", "synthetic_classifier", "synthetic_rows", "synthetic_store"]
