"""clip-retrieval's output folder opened as a read-only store: ``img_emb/img_emb_N.npy`` (float16
[n, D], L2-normalised) next to ``metadata/metadata_N.parquet`` (one row per embedding, the path in
``image_path``), so collections embedded with clip-retrieval are classified as they are.

clip-retrieval records no model: the user names it (``--model``), and it cannot be checked.
Arrays are read with ``allow_pickle=False``: a .npy file never runs code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .format import StoreError
from .store import EmbeddingStore, StoreBatch

PATH_COLUMNS = ("image_path", "url", "path")


class ClipRetrievalStore(EmbeddingStore):
    """``img_emb_N.npy`` + ``metadata_N.parquet`` pairs, streamed pair by pair."""

    def __init__(self, folder: Path, pairs: list[tuple[Path, Path]], model: str, embed_dim: int) -> None:
        super().__init__(folder, {"model": model, "pretrained": None, "fingerprint": None, "dtype": "float16",
                                  "embed_dim": embed_dim, "classnames": None, "shards": [],
                                  "format": "clip-retrieval"})
        self.pairs = pairs

    def __len__(self) -> int:
        return sum(len(np.load(array, mmap_mode="r", allow_pickle=False)) for array, _ in self.pairs)

    def batches(self, batch_size: int = 8192) -> Iterator[StoreBatch]:
        for array_path, metadata_path in self.pairs:
            embeddings = np.load(array_path, mmap_mode="r", allow_pickle=False)
            table = pq.read_table(metadata_path)
            column = next((name for name in PATH_COLUMNS if name in table.column_names), None)
            if column is None or table.num_rows != len(embeddings):
                raise StoreError(f"{metadata_path} does not match {array_path.name} (needs one row per embedding "
                                 f"and a column {' or '.join(PATH_COLUMNS)})")
            paths = table.column(column).to_pylist()
            for start in range(0, len(embeddings), batch_size):
                chunk = np.asarray(embeddings[start : start + batch_size], dtype=np.float32)
                norms = np.linalg.norm(chunk, axis=1, keepdims=True)
                yield StoreBatch([str(p) for p in paths[start : start + batch_size]], [None] * len(chunk),
                                 [-1] * len(chunk), chunk / np.maximum(norms, 1e-12))


def open_clip_retrieval(folder: Path, model: str | None) -> ClipRetrievalStore:
    """The store view of a clip-retrieval output folder; ``model`` names what made it."""
    if not model:
        raise StoreError(f"{folder} is a clip-retrieval output: name the model that made it with --model "
                         "(clip-retrieval does not record it)")
    arrays = sorted((folder / "img_emb").glob("img_emb_*.npy"), key=_number)
    pairs = []
    for array in arrays:
        metadata = folder / "metadata" / f"metadata_{_number(array)}.parquet"
        if not metadata.is_file():
            raise StoreError(f"{array} has no {metadata.relative_to(folder)}: an incomplete clip-retrieval output")
        pairs.append((array, metadata))
    if not pairs:
        raise StoreError(f"{folder}/img_emb holds no img_emb_N.npy files: the clip-retrieval output is empty")
    try:
        first = np.load(pairs[0][0], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise StoreError(f"{pairs[0][0]} is not a readable .npy array ({error})") from None
    if first.ndim != 2:
        raise StoreError(f"{pairs[0][0]} holds an array of shape {first.shape}, not [images, dim]")
    return ClipRetrievalStore(folder, pairs, model, int(first.shape[1]))


def _number(path: Path) -> int:
    match = re.search(r"_(\d+)\.(npy|parquet)$", path.name)
    return int(match.group(1)) if match else -1


__all__ = ["ClipRetrievalStore", "open_clip_retrieval"]
