"""Open a folder of stored embeddings, whichever kind it is: a zsclip store (``store.py``) or clip-retrieval's
output (``clip_retrieval.py``, a read-only store built on the zsclip one). The choice is made here, above
both readers, so neither imports the other's way back."""

from __future__ import annotations

import os

from .location import Location
from .store import EmbeddingStore, is_clip_retrieval_output


def open_store(path: str | os.PathLike, model: str | None = None) -> EmbeddingStore:
    """A store made by ``zsclip embed``, or clip-retrieval's output folder (``img_emb/`` + ``metadata/``),
    which needs the ``model`` that made it (clip-retrieval does not record it); with a zsclip store, a
    ``model`` other than its own is refused in one line."""
    location = Location(path)
    if is_clip_retrieval_output(location):
        from .clip_retrieval import open_clip_retrieval

        return open_clip_retrieval(location.local, model)
    return EmbeddingStore.open(path, model)


__all__ = ["open_store"]
