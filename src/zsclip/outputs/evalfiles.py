"""eval's files: the CLIP_benchmark-style results JSON and the report's predictions.csv."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import TracebackType

from .atomic import AtomicFile, write_atomically
from .text import csv_cell, utf8_safe


def write_json(path: str | os.PathLike, record: dict) -> Path:
    """A JSON document, indented, UTF-8, written atomically (file-name bytes that are not UTF-8
    appear backslash-escaped, as in classify's JSON)."""
    return write_atomically(path, json.dumps(utf8_safe(record), indent=2, ensure_ascii=False) + "\n")



class PredictionsCsv:
    """predictions.csv (path, true label, top-5) in a report folder, written as eval streams and
    moved into place when the pass completes; a no-op without a folder."""

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = folder
        self._output: AtomicFile | None = None

    def __enter__(self):
        if self.folder is None:
            return None
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        self._output = AtomicFile(Path(self.folder) / "predictions.csv", "w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._output.file)
        self._header = False
        return self.write

    def write(self, path: str, true_label: str, ranked: list[str]) -> None:
        """One image: its path, true label and the labels ranked first (at most 5)."""
        if not self._header:
            self._writer.writerow(["path", "true_label", *[f"label_{i + 1}" for i in range(len(ranked))]])
            self._header = True
        self._writer.writerow([csv_cell(path), csv_cell(true_label), *map(csv_cell, ranked)])

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> bool:
        if self._output is not None:
            if error is None:
                self._output.commit()
            else:
                self._output.discard()
        return False
