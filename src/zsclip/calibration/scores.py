"""A collection's scores kept on disk while a pass runs: [N, C] float32 log-probabilities appended block by
block to a temporary file and read back in chunks, so a collection-level correction over a million images
x 1,000 classes holds 4 GB on disk and one chunk in memory (``CHUNK_ROWS`` x C floats)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CHUNK_ROWS = 32768


class ScoreBuffer:
    """Append [b, C] float32 rows; ``chunks()`` reads them back in order (any number of times)."""

    def __init__(self, num_classes: int, directory: str | os.PathLike | None = None) -> None:
        self.num_classes = num_classes
        self.rows = 0
        handle, name = tempfile.mkstemp(prefix="zsclip-scores-", suffix=".f32", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(handle, "wb")
        self._view: np.ndarray | None = None

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.num_classes:
            raise ValueError(f"rows {rows.shape}: expected [b, {self.num_classes}]")
        self._file.write(rows.tobytes())
        self.rows += len(rows)
        self._view = None

    def _array(self) -> np.ndarray:
        if self._view is None:
            self._file.flush()
            self._view = (np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.rows, self.num_classes))
                          if self.rows else np.zeros((0, self.num_classes), np.float32))
        return self._view

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        view = self._array()
        for start in range(0, self.rows, rows):
            yield np.asarray(view[start:start + rows])

    def close(self) -> None:
        self._view = None
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ScoreBuffer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ScoreBuffer", "CHUNK_ROWS"]
