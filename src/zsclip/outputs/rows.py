"""Classify results: CSV, JSONL, JSON by extension, streamed and atomic; and the terminal table.

Rows are written as they come (memory stays flat) into a unique temporary file beside the target
(see atomic.py), renamed to NAME only when the run completes: an interrupted run leaves
``NAME.partial``, a file that says it is incomplete instead of one that looks finished.
A new output format is a branch of ``ResultWriter`` (and an entry in ``FORMATS``).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TextIO

from ..errors import InputError
from ..tasks.classify import Prediction
from .atomic import AtomicFile

FORMATS = (".csv", ".jsonl", ".json")


class ResultWriter:
    """Write predictions to ``path`` in the format its extension names."""

    def __init__(self, path: str | os.PathLike, top_k: int) -> None:
        self.path = self.check(path)
        self.format = self.path.suffix.lower()
        self.top_k = top_k
        self._output = AtomicFile(self.path, "w", encoding="utf-8", newline="")
        self._file = self._output.file
        self._rows = 0
        if self.format == ".csv":
            self._csv = csv.writer(self._file)
            header = ["path", "label", "score"]
            for rank in range(2, top_k + 1):
                header += [f"label_{rank}", f"score_{rank}"]
            self._csv.writerow([*header, "error"])
        elif self.format == ".json":
            self._file.write("[")

    @staticmethod
    def check(path: str | os.PathLike) -> Path:
        """Validate an output path before any work starts: known extension, existing folder."""
        path = Path(path)
        if path.suffix.lower() not in FORMATS:
            raise InputError(f"output {path}: unknown format {path.suffix or '(no extension)'!r}; "
                             f"use one of {', '.join(FORMATS)}")
        if not path.parent.is_dir():
            raise InputError(f"output {path}: folder {path.parent} does not exist")
        return path

    def write(self, prediction: Prediction) -> None:
        if self.format == ".csv":
            cells: list[str] = [prediction.source]
            for rank in range(self.top_k):
                if rank < len(prediction.labels):
                    cells += [prediction.labels[rank], f"{prediction.scores[rank]:.6f}"]
                else:
                    cells += ["", ""]
            self._csv.writerow([*cells, prediction.error or ""])
        else:
            text = json.dumps(as_record(prediction), ensure_ascii=False)
            if self.format == ".json":
                text = ("\n  " if self._rows == 0 else ",\n  ") + text
            else:
                text += "\n"
            self._file.write(text)
        self._rows += 1

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self.format == ".json":
            self._file.write("\n]\n" if self._rows else "]\n")
        return self._output.commit()

    def abandon(self) -> Path:
        """Leave the rows written so far in ``NAME.partial`` (the run did not finish); return where."""
        return self._output.abandon()


def as_record(prediction: Prediction) -> dict:
    """The JSON shape of one result: path, predictions [{label, score}], error."""
    return {
        "path": prediction.source,
        "predictions": [{"label": label, "score": round(score, 6)}
                        for label, score in zip(prediction.labels, prediction.scores, strict=True)],
        "error": prediction.error,
    }


def print_table(prediction: Prediction, stream: TextIO) -> None:
    """A few lines per image for reading on a terminal."""
    if prediction.error:
        stream.write(f"{prediction.source}\n    error: {prediction.error}\n")
        return
    stream.write(f"{prediction.source}\n")
    width = max(len(label) for label in prediction.labels)
    for rank, (label, score) in enumerate(zip(prediction.labels, prediction.scores, strict=True), start=1):
        bar = "#" * round(score * 20)
        stream.write(f"  {rank}. {label:<{width}}  {score:7.2%}  {bar}\n")
