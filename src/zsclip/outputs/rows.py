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
from ..heads.base import Prediction
from .atomic import AtomicFile, check_writable
from .text import csv_cell, printable, undecodable_escaped

FORMATS = (".csv", ".jsonl", ".json", ".parquet")
#: Parquet rows are written in row groups of this many predictions (memory stays flat).
PARQUET_ROWS = 8192
#: labels whose CSV cell a writer keeps (a large label space is cleared and refilled, never grows past it)
MAX_KEPT_LABEL_CELLS = 65536
#: A video clip's span in seconds: the columns timed rows carry right after the path.
SPAN = ("start", "end")


def row_fields(columns: list[str] | tuple[str, ...], timed: bool = False) -> list[str]:
    """The one header rule of every row writer: ``path``, (``timed``: ``start``, ``end``,) the head's
    ``columns``, ``error``. CSV headers, JSON keys and Parquet columns all come from here, so a value
    can never sit under another column's name (timed rows once shifted every column of a tree's CSV)."""
    return ["path", *(SPAN if timed else ()), *columns, "error"]


def _top_k_columns(top_k: int) -> list[str]:
    """A flat head's columns: label, score, label_2, score_2, ..."""
    columns = ["label", "score"]
    for rank in range(2, top_k + 1):
        columns += [f"label_{rank}", f"score_{rank}"]
    return columns


class ResultWriter:
    """Write predictions to ``path`` in the format its extension names."""

    def __init__(self, path: str | os.PathLike, top_k: int, timed: bool = False, accept: bool = False) -> None:
        self.path = self.check(path)
        self.format = self.path.suffix.lower()
        self.top_k = top_k
        self.timed = timed  # video rows: start and end seconds after the path
        self.accept = accept  # accept-or-review rows: an ``accepted`` column (true / false) before ``error``
        self._rows = 0
        if self.format == ".parquet":
            self._output = AtomicFile(self.path, "wb")
            self._file = self._output.file
            self._pending: list[Prediction] = []
            self._parquet = None
            return
        self._output = AtomicFile(self.path, "w", encoding="utf-8", newline="")
        self._file = self._output.file
        if self.format == ".csv":
            self._csv = csv.writer(self._file)
            self._label_cells: dict[str, str] = {}
            self._written_labels: tuple[tuple[str, ...], list[str]] | None = None  # for write_arrays: the last classes
            self._csv.writerow(row_fields([*_top_k_columns(top_k), *(["accepted"] if accept else [])], timed))
        elif self.format == ".json":
            self._file.write("[")

    @staticmethod
    def check(path: str | os.PathLike) -> Path:
        """Validate an output path before any work starts: a known extension, and a place that can
        be written (see ``check_writable``)."""
        path = Path(path)
        if path.suffix.lower() not in FORMATS:
            raise InputError(f"output {printable(path)}: unknown format {printable(path.suffix or '(no extension)')}; "
                             f"use one of {', '.join(FORMATS)}")
        return check_writable(path)

    def write(self, prediction: Prediction) -> None:
        if self.format == ".parquet":
            self._pending.append(prediction)
            if len(self._pending) >= PARQUET_ROWS:
                self._flush_parquet()
            return
        if self.format == ".csv":
            cells: list[str] = [csv_cell(prediction.source)]
            if self.timed:
                cells += [_seconds(prediction.start), _seconds(prediction.end)]
            for rank in range(self.top_k):
                if rank < len(prediction.labels):
                    cells += [self._label_cell(prediction.labels[rank]), f"{prediction.scores[rank]:.6f}"]
                else:
                    cells += ["", ""]
            if self.accept:
                cells.append("" if prediction.accepted is None else str(prediction.accepted).lower())
            self._csv.writerow([*cells, csv_cell(prediction.error) if prediction.error else ""])
        else:
            text = json.dumps(as_record(prediction, self.timed), ensure_ascii=False)
            if self.format == ".json":
                text = ("\n  " if self._rows == 0 else ",\n  ") + text
            else:
                text += "\n"
            self._file.write(text)
        self._rows += 1

    def write_arrays(self, paths: list[str], errors: list[str | None], indices, scores, classnames: list[str]) -> None:
        """Rows of a flat head's answers held as arrays (``zsclip.tasks.stored.StoreScores``: [n, k] class
        indices, -1 on error rows, and probabilities): the same rows ``write`` makes of their predictions. CSV
        rows are made a batch at a time (``csv_columns``), without a Python object per row."""
        if self.format == ".csv" and not self.timed and not self.accept:
            from .csv_columns import top_k_rows

            text = top_k_rows(paths, errors, indices, scores, self._written_label_cells(classnames), self.top_k)
            if text is not None:
                self._file.write(text)
                self._rows += len(paths)
                return
        for path, error, picked, values in zip(paths, errors, indices.tolist(), scores.tolist(), strict=True):
            self.write(Prediction(path, [], [], error) if error is not None else
                       Prediction(path, [classnames[i] for i in picked], values))

    def _written_label_cells(self, classnames: list[str]) -> list[str]:
        """Each class's label cell as the csv module writes it (``_label_cell``, quoted where it must be), made
        once for the classes of a run's batches rather than for every batch."""
        from .csv_columns import quoted

        key = tuple(classnames)
        if self._written_labels is None or self._written_labels[0] != key:
            self._written_labels = (key, [quoted(self._label_cell(name)) for name in classnames])
        return self._written_labels[1]

    def _label_cell(self, label: str) -> str:
        """``csv_cell`` of a label, kept: the same few classes fill every row of a large run."""
        cell = self._label_cells.get(label)
        if cell is None:
            if len(self._label_cells) >= MAX_KEPT_LABEL_CELLS:
                self._label_cells.clear()
            cell = self._label_cells[label] = csv_cell(label)
        return cell

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self.format == ".json":
            self._file.write("\n]\n" if self._rows else "]\n")
        if self.format == ".parquet":
            self._flush_parquet(final=True)
        return self._output.commit()

    def _flush_parquet(self, final: bool = False) -> None:
        """One row group: path, labels and scores as list columns (best first), error."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"labels": pa.list_(pa.string()), "scores": pa.list_(pa.float32()), "accepted": pa.bool_()}
        schema = pa.schema([(name, types.get(name, pa.float64() if name in SPAN else pa.string()))
                            for name in row_fields(["labels", "scores", *(["accepted"] if self.accept else [])],
                                                   self.timed)])
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._file, schema, compression="zstd")
        if self._pending:
            rows = self._pending
            table = pa.table({"path": [undecodable_escaped(p.source) for p in rows],
                              "labels": [[undecodable_escaped(label) for label in p.labels] for p in rows],
                              "scores": [p.scores for p in rows],
                              "error": [None if p.error is None else undecodable_escaped(p.error) for p in rows],
                              **({"start": [p.start for p in rows], "end": [p.end for p in rows]}
                                 if self.timed else {}),
                              **({"accepted": [p.accepted for p in rows]} if self.accept else {})},
                             schema=schema)
            self._parquet.write_table(table)
            self._rows += len(rows)
            self._pending = []
        if final:
            self._parquet.close()

    def abandon(self) -> Path:
        """Leave the rows written so far in ``NAME.partial`` (the run did not finish); return where."""
        return self._output.abandon()


def as_record(prediction: Prediction, timed: bool = False) -> dict:
    """The JSON shape of one result: path, (``timed``: start, end seconds,) predictions [{label, score}], error.

    Values are kept raw (a JSON reader gets the exact text), except bytes that are not UTF-8 in a
    file name, which JSON cannot hold: they appear backslash-escaped (``caf\\xe9.jpg``)."""
    values = {"path": undecodable_escaped(prediction.source), "start": prediction.start, "end": prediction.end,
              "predictions": [{"label": undecodable_escaped(label), "score": round(score, 6)}
                              for label, score in zip(prediction.labels, prediction.scores, strict=True)],
              "accepted": prediction.accepted,
              "error": None if prediction.error is None else undecodable_escaped(prediction.error)}
    columns = ["predictions", *(["accepted"] if prediction.accepted is not None else [])]
    return {name: values[name] for name in row_fields(columns, timed or prediction.start is not None)}


def _seconds(value: float | None) -> str:
    """A span's seconds in a CSV cell: one format for every writer (milliseconds)."""
    return "" if value is None else f"{value:.3f}"


def shown_name(prediction: Prediction) -> str:
    """The input's name on a terminal, with a video clip's span."""
    return printable(prediction.source) + span_suffix(prediction)


def span_suffix(prediction: Prediction) -> str:
    return "" if prediction.start is None else f"  [{prediction.start:.2f}-{prediction.end:.2f} s]"


def print_table(prediction: Prediction, stream: TextIO) -> None:
    """A few lines per image for reading on a terminal."""
    if prediction.error:
        stream.write(f"{shown_name(prediction)}\n    error: {printable(prediction.error)}\n")
        return
    stream.write(f"{shown_name(prediction)}\n")
    labels = [printable(label) for label in prediction.labels]
    width = max(len(label) for label in labels)
    for rank, (label, score) in enumerate(zip(labels, prediction.scores, strict=True), start=1):
        bar = "#" * round(score * 20)
        stream.write(f"  {rank}. {label:<{width}}  {score:7.2%}  {bar}\n")
    if prediction.accepted is not None:
        stream.write("  accepted\n" if prediction.accepted else "  review\n")


class RecordWriter:
    """Rows of named fields (a label tree's levels, open-set scores, multi-label sets, search hits) to
    .csv / .jsonl / .json / .parquet by extension, atomically as ``ResultWriter``: every format gets the
    fields of ``row_fields(columns, timed)``, in that order, in every row (a missing value is empty / null)."""

    def __init__(self, path: str | os.PathLike, columns: list[str], timed: bool = False) -> None:
        self.path = ResultWriter.check(path)
        self.format = self.path.suffix.lower()
        self.columns = list(columns)
        self.timed = timed
        self.fields = row_fields(self.columns, timed)
        self._rows = 0
        if self.format == ".parquet":
            self._output = AtomicFile(self.path, "wb")
            self._file = self._output.file
            self._pending: list[dict] = []
            self._parquet = None
            return
        self._output = AtomicFile(self.path, "w", encoding="utf-8", newline="")
        self._file = self._output.file
        if self.format == ".csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(self.fields)
        elif self.format == ".json":
            self._file.write("[")

    def write(self, source: str, record: dict, error: str | None = None,
              span: tuple[float | None, float | None] | None = None) -> None:
        """One row: ``record`` holds the columns' values; ``span`` a video clip's (start, end) seconds."""
        values = {**record, "path": source, "error": error}
        if self.timed:
            values["start"], values["end"] = span or (None, None)
        if self.format == ".csv":
            self._csv.writerow([csv_cell(values["path"]),
                                *(_seconds(values[name]) if name in SPAN else _cell(values.get(name))
                                  for name in self.fields[1:-1]),
                                csv_cell(error) if error else ""])
            self._rows += 1
            return
        row = {name: _json_value(values.get(name)) for name in self.fields}
        if self.format == ".parquet":
            self._pending.append(row)
            if len(self._pending) >= PARQUET_ROWS:
                self._flush_parquet()
            return
        text = json.dumps(row, ensure_ascii=False)
        if self.format == ".json":
            text = ("\n  " if self._rows == 0 else ",\n  ") + text
        else:
            text += "\n"
        self._file.write(text)
        self._rows += 1

    def close(self) -> Path:
        if self.format == ".json":
            self._file.write("\n]\n" if self._rows else "]\n")
        if self.format == ".parquet":
            self._flush_parquet(final=True)
        return self._output.commit()

    def abandon(self) -> Path:
        return self._output.abandon()

    def _flush_parquet(self, final: bool = False) -> None:
        """One row group: a string column per level, a float column per probability / score."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        lists = {"labels": pa.list_(pa.string()), "scores": pa.list_(pa.float64())}  # multi-label rows
        schema = pa.schema([(c, lists[c] if c in lists else pa.int64() if c == "rank" else pa.float64()
                             if c.endswith("_probability") or c in ("openset_score", "score", *SPAN) else pa.string())
                            for c in self.fields])
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._file, schema, compression="zstd")
        if self._pending:
            self._parquet.write_table(pa.Table.from_pylist(self._pending, schema=schema))
            self._rows += len(self._pending)
            self._pending = []
        if final:
            self._parquet.close()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # a multi-label row's labels / scores: ';'-separated, as manifests hold them
        return csv_cell(";".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in value))
    if isinstance(value, float):
        return f"{value:.6f}"
    return csv_cell(value)


def _json_value(value: object) -> object:
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return undecodable_escaped(value) if isinstance(value, str) else value


def print_record(source: str, record: dict, error: str | None, stream: TextIO, suffix: str = "") -> None:
    """A label tree's answer (one line per level) or a multi-label answer (one line per label) for reading on
    a terminal, in aligned columns: names padded to the longest in the answer, then the scores."""
    stream.write(f"{printable(source)}{suffix}\n")
    if error:
        stream.write(f"    error: {printable(error)}\n")
        return
    if isinstance(record.get("labels"), list):  # multi-label: every label over its threshold
        if not record["labels"]:
            stream.write("  (no label over its threshold)\n")
            return
        labels = [printable(label) for label in record["labels"]]
        width = max(len(label) for label in labels)
        for label, score in zip(labels, record["scores"], strict=True):
            stream.write(f"  {label:<{width}}  {score:.4f}\n")
        return
    levels = [(printable(key), printable(value), record.get(f"{key}_probability")) for key, value in record.items()
              if not key.endswith("_probability") and key != "openset_score"]
    key_width = max((len(key) for key, _, _ in levels), default=0)
    value_width = max((len(value) for _, value, probability in levels if probability is not None), default=0)
    for key, value, probability in levels:
        shown = value if probability is None else f"{value:<{value_width}}  {probability:7.2%}"
        stream.write(f"  {key:<{key_width}}  {shown}\n")
    if "openset_score" in record:
        stream.write(f"  open-set score {record['openset_score']:.4f}\n")


class RowSink:
    """Where a job's answers go, as the head shapes them: top-k rows (``ResultWriter``) or rows of
    named fields (``RecordWriter``, label trees and open-set scores); the format by extension."""

    def __init__(self, path: str | os.PathLike, columns: list[str] | None, top_k: int = 1, *,
                 timed: bool = False, accept: bool = False) -> None:
        self.columns = columns
        self.timed = timed
        self._writer = (RecordWriter(path, columns, timed) if columns is not None
                        else ResultWriter(path, top_k, timed, accept))
        self.path = self._writer.path

    def write(self, prediction: Prediction) -> None:
        if self.columns is not None:
            self._writer.write(prediction.source, prediction.record or {}, prediction.error,
                               (prediction.start, prediction.end))
        else:
            self._writer.write(prediction)

    def write_arrays(self, paths: list[str], errors: list[str | None], indices, scores, classnames: list[str]) -> None:
        """A flat head's rows held as arrays (see ``ResultWriter.write_arrays``)."""
        if self.columns is not None:
            raise TypeError("rows of named fields are written one prediction at a time")
        self._writer.write_arrays(paths, errors, indices, scores, classnames)

    def close(self) -> Path:
        return self._writer.close()

    def abandon(self) -> Path:
        return self._writer.abandon()


def print_prediction(prediction: Prediction, stream: TextIO) -> None:
    """The terminal form of any head's answer."""
    if prediction.record is not None:
        print_record(prediction.source, prediction.record, prediction.error, stream, span_suffix(prediction))
    else:
        print_table(prediction, stream)


class HitSink:
    """Search results to .csv / .jsonl / .json / .parquet by extension: rank, path, score."""

    @staticmethod
    def check(path: str | os.PathLike) -> Path:
        return ResultWriter.check(path)

    @staticmethod
    def write_all(path: str | os.PathLike, hits, failures=(), timed: bool | None = None) -> Path:
        """The hits, best first, then a row per input that could not be read (``{"path", "error"}``).
        ``timed``: the searched source holds video clips (start, end columns); None: any hit has a span."""
        hits = list(hits)
        if timed is None:
            timed = any(getattr(hit, "start", None) is not None for hit in hits)
        writer = RecordWriter(path, ["rank", "score"], timed)
        try:
            for hit in hits:
                writer.write(hit.source, {"rank": hit.rank, "score": float(hit.score)}, None,
                             (getattr(hit, "start", None), getattr(hit, "end", None)))
            for failure in failures:
                writer.write(failure["path"], {}, failure["error"])
        except BaseException:
            writer.abandon()
            raise
        return writer.close()
