"""The embedding store: images encoded once, then classified, evaluated and searched from disk.

    from zsclip.store import EmbeddingStore, embed, open_store
    store = EmbeddingStore.create_or_open("photos.zse", encoder, precision="auto")
    embed(store, sources, encoder)                     # only new or changed files are encoded
    for batch in open_store("photos.zse").batches():     # or clip-retrieval's output (open_store(..., model=))
        ...                                            # batch.embeddings: float32 [n, D]

The layout (Parquet shards + a JSON manifest) and its guarantees are in ``format.py``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".embed": ["COMMIT_EVERY", "EmbedReport", "embed"],
    ".format": ["StoreError"],
    ".opening": ["open_store"],
    ".store": ["EmbeddingStore", "StoreBatch"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .embed import COMMIT_EVERY, EmbedReport, embed
    from .format import StoreError
    from .opening import open_store
    from .store import EmbeddingStore, StoreBatch

__all__ = ["COMMIT_EVERY", "EmbedReport", "EmbeddingStore", "StoreBatch", "StoreError", "embed", "open_store"]
