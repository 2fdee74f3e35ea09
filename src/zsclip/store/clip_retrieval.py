"""clip-retrieval's output folder opened as a read-only store: ``img_emb/img_emb_N.npy`` (float16
[n, D], L2-normalised) next to ``metadata/metadata_N.parquet`` (one row per embedding, the path in
``image_path``), so collections embedded with clip-retrieval are classified as they are.

clip-retrieval records no model: the user names it (``--model``), and it cannot be checked.
Arrays are read with ``allow_pickle=False``: a .npy file never runs code.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ZsclipWarning
from .format import StoreError
from .store import EmbeddingStore, StoreBatch, checked_vectors

PATH_COLUMNS = ("image_path", "url", "path")


class ClipRetrievalStore(EmbeddingStore):
    """``img_emb_N.npy`` + ``metadata_N.parquet`` pairs, streamed batch by batch: the array is
    memory-mapped and only the path column of the metadata is read, one batch at a time."""

    def __init__(self, folder: Path, pairs: list[tuple[Path, Path]], model: str, embed_dim: int) -> None:
        super().__init__(folder, {"model": model, "pretrained": None, "fingerprint": None, "dtype": "float16",
                                  "embed_dim": embed_dim, "classnames": None, "shards": [],
                                  "format": "clip-retrieval"})
        self.pairs = pairs
        self._usable: list[tuple[Path, Path, str, int]] | None = None

    def usable_pairs(self) -> list[tuple[Path, Path, str, int]]:
        """(array, metadata, path column, rows) of each pair that can be read; each other pair is
        reported once by name and skipped (like a damaged shard of a zsclip store)."""
        if self._usable is None:
            self._usable = []
            for array_path, metadata_path in self.pairs:
                try:
                    self._usable.append((array_path, metadata_path, *self._check(array_path, metadata_path)))
                except (OSError, ValueError, pa.ArrowException) as error:
                    warnings.warn(f"clip-retrieval part {array_path.name} cannot be read ({error}); skipping it",
                                  ZsclipWarning, stacklevel=2)
        return self._usable

    def _check(self, array_path: Path, metadata_path: Path) -> tuple[str, int]:
        embeddings = np.load(array_path, mmap_mode="r", allow_pickle=False)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"shape {embeddings.shape}, the other parts are [n, {self.embed_dim}]")
        if not np.issubdtype(embeddings.dtype, np.floating):
            raise ValueError(f"dtype {embeddings.dtype} is not a float type")
        metadata = pq.ParquetFile(metadata_path)
        column = next((name for name in PATH_COLUMNS if name in metadata.schema_arrow.names), None)
        if column is None:
            raise ValueError(f"{metadata_path.name} has no column {' or '.join(PATH_COLUMNS)}")
        if metadata.metadata.num_rows != len(embeddings):
            raise ValueError(f"{metadata_path.name} has {metadata.metadata.num_rows} rows for {len(embeddings)} "
                             "embeddings")
        return column, len(embeddings)

    def view_masks(self) -> dict[int, np.ndarray]:
        return {}  # no zsclip shards: the pairs are the view, every row of them

    def __len__(self) -> int:
        return sum(rows for *_, rows in self.usable_pairs())

    def batches(self, batch_size: int = 8192) -> Iterator[StoreBatch]:
        usable = self.usable_pairs()
        if not usable:
            raise StoreError(f"clip-retrieval output {self.folder} has no readable img_emb/metadata pair")
        for array_path, metadata_path, column, _ in usable:
            try:
                embeddings = np.load(array_path, mmap_mode="r", allow_pickle=False)
                start = 0
                for record in pq.ParquetFile(metadata_path).iter_batches(batch_size=batch_size, columns=[column]):
                    chunk = np.asarray(embeddings[start : start + record.num_rows], dtype=np.float32)
                    yield _checked(record.column(0).to_pylist(), chunk, array_path.name, start)
                    start += record.num_rows
            except (OSError, ValueError, pa.ArrowException) as error:
                warnings.warn(f"clip-retrieval part {array_path.name} cannot be read ({error}); skipping the rest "
                              "of it", ZsclipWarning, stacklevel=2)


def _checked(paths: list, chunk: np.ndarray, part: str, start: int) -> StoreBatch:
    """A batch of a clip-retrieval part, each row checked as a zsclip store's are: a row without a
    path or with a NaN, infinite or zero embedding is an error row naming the part and the row."""
    problems, vectors = checked_vectors(chunk)
    names, errors = [], []
    for row, (path, problem) in enumerate(zip(paths, problems, strict=True)):
        where = f"clip-retrieval part {part}, row {start + row}"
        names.append(f"<{part} row {start + row}>" if path is None else str(path))
        errors.append(f"{where}: no path" if path is None else None if problem is None else f"{where}: {problem}")
    return StoreBatch(names, errors, [-1] * len(names), vectors[[error is None for error in errors]])


def open_clip_retrieval(folder: Path, model: str | None) -> ClipRetrievalStore:
    """The store view of a clip-retrieval output folder; ``model`` names what made it."""
    if not model:
        raise StoreError(f"{folder} is a clip-retrieval output: name the model that made it with --model "
                         "(clip-retrieval does not record it)")
    arrays = sorted((folder / "img_emb").glob("img_emb_*.npy"), key=_number)
    pairs = []
    for array in arrays:
        # a part without its metadata file (a killed clip-retrieval run) is reported and skipped when read
        pairs.append((array, folder / "metadata" / f"metadata_{_number(array)}.parquet"))
    if not pairs:
        raise StoreError(f"{folder}/img_emb holds no img_emb_N.npy files: the clip-retrieval output is empty")
    widths = set()
    for array, _ in pairs:  # the width from the readable parts (a damaged one is reported when read)
        try:
            shape = np.load(array, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError):
            continue
        if len(shape) == 2:
            widths.add(int(shape[1]))
    if len(widths) != 1:
        raise StoreError(f"{folder}/img_emb: " + (f"arrays of several widths {sorted(widths)}" if widths else
                                                  "no readable [images, dim] .npy array"))
    return ClipRetrievalStore(folder, pairs, model, widths.pop())


def _number(path: Path) -> int:
    match = re.search(r"_(\d+)\.(npy|parquet)$", path.name)
    return int(match.group(1)) if match else -1


__all__ = ["ClipRetrievalStore", "open_clip_retrieval"]
