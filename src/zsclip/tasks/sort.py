"""Sort: a collection into class folders, by the model's answers (``zsclip sort``).

Accepted images (the answer's score reaches ``accept``) go into ``<class>/`` (a label tree's answer into its
path, ``shape/star/``); the rest into ``_review/``, listed in ``_review.csv`` least confident first (score,
the runner-up and the margin to it); images the reject head refused ("none of these") into ``_unknown/``;
files that could not be read are listed in ``_errors.csv``. Images are copied or hard-linked, never moved,
never overwriting a file (a clash gets a suffix).

Resumable: every placement is recorded in a journal (``.zsclip-sort.jsonl``), one line per image written
with one append after the image is in place; a run killed at any point and started again skips what the
journal holds, and an image placed just before the kill (not yet journalled) is recognised in its folder
(``Placer.place(adopt=True)``), so each image is placed once. The CSVs are rewritten from the journal at the
end of every run, atomically.

The threshold is a score (``accept``), or a target precision (``accept_precision``) for a classifier file
calibrated by ``zsclip calibrate``: the head then marks each answer ``accepted`` at the threshold the file's
accept table gives (``HeadOptions.accept_threshold``, the same as ``classify --accept-precision``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, OutputError
from ..heads.base import Prediction
from ..outputs.atomic import write_atomically
from ..outputs.labelling import LabelSpace
from ..outputs.placing import Placer, remove_partials, safe_name
from ..outputs.text import csv_cell, printable

JOURNAL = ".zsclip-sort.jsonl"
REVIEW, UNKNOWN = "_review", "_unknown"
REVIEW_CSV, ERRORS_CSV = "_review.csv", "_errors.csv"


@dataclass
class SortSummary:
    """What a run did (this run's counts) and where the folder stands (``total``, over every run)."""

    into: Path
    accepted: int = 0
    review: int = 0
    unknown: int = 0
    errors: int = 0
    skipped: int = 0    # already placed by an earlier run
    threshold: float = 0.0
    per_class: dict[str, int] = field(default_factory=dict)


def check_accept(accept: float | None, target_precision: float | None, classifier_given: bool) -> None:
    """Refuse, while parsing, a threshold that cannot apply: exactly one of ``accept`` (a score) and
    ``target_precision`` (which needs a classifier file; ``HeadOptions.check`` then refuses one that is not
    calibrated, and a precision out of range, in the same words as classify)."""
    if (accept is None) == (target_precision is None):
        raise InputError("give --accept SCORE, or --accept-precision P with a calibrated classifier (not both)")
    if target_precision is not None and not classifier_given:
        raise InputError("--accept-precision needs a classifier file calibrated on labelled images (`zsclip calibrate "
                         "--data LABELLED -c FILE -o FILE`, then -c FILE): with labels, give --accept SCORE")
    if accept is not None and not 0 <= accept <= 1:
        raise InputError(f"--accept {accept}: give a score between 0 and 1, e.g. 0.9")


def accept_threshold(head, accept: float | None = None, target_precision: float | None = None) -> float:
    """The score an answer needs to be accepted: ``accept`` as given, or, for ``target_precision``, the threshold
    the head carries (``FlatHead.accept``, chosen by ``HeadOptions.accept_threshold`` from the calibrated
    classifier file's accept table; ``inf`` when no confidence reaches the precision). Sorting then follows each
    answer's ``accepted``, so sort and ``classify --accept-precision`` accept the same images."""
    check_accept(accept, target_precision, head is not None)
    if target_precision is None:
        return float(accept)
    chosen = getattr(head, "accept", None)
    if chosen is None or chosen.target != target_precision:
        raise InputError("--accept-precision needs a calibrated classifier file: run `zsclip calibrate --data LABELLED "
                         "-c FILE -o FILE` and sort with -c FILE")
    return float(chosen.threshold)


class Journal:
    """The placements of earlier runs (``done``: input -> record) and an append-only file for this one's."""

    def __init__(self, into: Path) -> None:
        self.path = into / JOURNAL
        self.done: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_bytes().split(b"\n"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # the torn last line of a killed run: that image is placed again (or adopted)
                if isinstance(record, dict) and isinstance(record.get("path"), str):
                    self.done[record["path"]] = record
        self.claimed = {record["to"] for record in self.done.values() if record.get("to")}
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, record: dict) -> None:
        """One line, one ``write`` on an append-only file, flushed to disk: a kill leaves whole lines (and at
        most a torn last one, which is ignored)."""
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
        os.write(self._fd, data)
        os.fsync(self._fd)
        self.done[record["path"]] = record
        if record.get("to"):
            self.claimed.add(record["to"])

    def close(self) -> None:
        os.close(self._fd)


class Sorter:
    """Places answers into ``into`` (see module docstring)."""

    def __init__(self, into: str | os.PathLike, space: LabelSpace, threshold: float, files: str = "copy") -> None:
        if space.kind == "multi":
            raise InputError("sort puts each image into one folder: leave out --multi-label")
        self.into = check_into(into)
        try:
            self.into.mkdir(exist_ok=True)
        except OSError as error:
            raise OutputError(f"--into {printable(self.into)} cannot be created: {error.strerror or error}") from None
        remove_partials(self.into)
        self.space, self.threshold = space, threshold
        self.placer = Placer(files)
        self.folders = class_folders(space)
        self.journal = Journal(self.into)
        self.summary = SortSummary(self.into, threshold=threshold)

    def already(self, source: str) -> bool:
        """Whether an earlier run placed ``source`` (a file that failed is tried again)."""
        record = self.journal.done.get(source)
        return record is not None and record.get("bucket") != "error"

    def add(self, prediction: Prediction) -> None:
        source = prediction.source
        if self.already(source):
            self.summary.skipped += 1
            return
        if prediction.error is not None:
            self.journal.record({"path": source, "bucket": "error", "error": prediction.error})
            self.summary.errors += 1
            return
        labelled = self.space.read(prediction)
        if labelled.rejected:
            bucket, folder = "unknown", Path(UNKNOWN)
        elif labelled.labels and (labelled.score >= self.threshold if prediction.accepted is None
                                  else prediction.accepted):
            bucket, folder = "class", self.folders[labelled.labels[0]]
        else:
            bucket, folder = "review", Path(REVIEW)
        try:
            placed = self.placer.place(source, self.into / folder, adopt=True, claimed=self._claimed())
        except (InputError, OutputError) as error:
            self.journal.record({"path": source, "bucket": "error", "error": str(error)})
            self.summary.errors += 1
            return
        self.journal.record({"path": source, "bucket": bucket, "to": placed.relative_to(self.into).as_posix(),
                             "label": labelled.labels[0] if labelled.labels else None, "score": labelled.score,
                             "runner_up": labelled.runner_up, "margin": labelled.margin})
        if bucket == "class":
            self.summary.accepted += 1
            self.summary.per_class[labelled.labels[0]] = self.summary.per_class.get(labelled.labels[0], 0) + 1
        elif bucket == "review":
            self.summary.review += 1
        else:
            self.summary.unknown += 1

    def _claimed(self) -> set[Path]:
        return {self.into / relative for relative in self.journal.claimed}

    def close(self) -> SortSummary:
        """The review and error lists, from every run's journal, written atomically."""
        self.journal.close()
        records = list(self.journal.done.values())
        review = sorted((r for r in records if r.get("bucket") == "review"),
                        key=lambda r: (r["score"], r["margin"] if r.get("margin") is not None else 0.0))
        write_atomically(self.into / REVIEW_CSV, _csv(
            ["file", "path", "label", "score", "runner_up", "margin"],
            ([r["to"], r["path"], r["label"] or "", _number(r["score"]), r.get("runner_up") or "",
              _number(r.get("margin"))] for r in review)))
        errors = [r for r in records if r.get("bucket") == "error"]
        write_atomically(self.into / ERRORS_CSV, _csv(["path", "error"], ([r["path"], r["error"]] for r in errors)))
        return self.summary


def check_into(into: str | os.PathLike) -> Path:
    """The folder to sort into: new or an earlier run's, in a folder that exists (checked before any work)."""
    into = Path(into).expanduser()
    if not into.parent.is_dir():
        raise OutputError(f"--into {printable(into)}: folder {printable(into.parent)} does not exist; create it first")
    if into.exists() and not into.is_dir():
        raise OutputError(f"--into {printable(into)} is a file: give a folder")
    return into


def class_folders(space: LabelSpace) -> dict[str, Path]:
    """label -> its folder below ``into``: a safe name per class (a tree label: its path), distinct for
    distinct classes, never one of the reserved folders."""
    folders: dict[str, Path] = {}
    used: set[Path] = {Path(REVIEW), Path(UNKNOWN)}
    for label in space.classnames:
        parts = space.path(label) if space.kind == "tree" else [label]
        folder = Path(*[safe_name(part) for part in parts])
        candidate, index = folder, 2
        while candidate in used:
            candidate, index = folder.with_name(f"{folder.name}_{index}"), index + 1
        used.add(candidate)
        folders[label] = candidate
    return folders


def _csv(header: list[str], rows: Iterable[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(cell) for cell in row])
    return buffer.getvalue()


def _number(value) -> str:
    return "" if value is None else f"{value:.6f}"


def sort_answers(answers: Iterator[Prediction], sorter: Sorter) -> SortSummary:
    """Place every answer; the lists are written even when the run is interrupted (the journal holds the rest)."""
    try:
        for answer in answers:
            sorter.add(answer)
    finally:
        summary = sorter.close()
    return summary


def sort(inputs, into: str | os.PathLike, *, accept: float | None = None, accept_precision: float | None = None,
         files: str = "copy", **job) -> SortSummary:
    """Sort ``inputs`` (any classify source) into class folders under ``into``. ``job``: classify's head, model and
    run keywords (labels, classifier, labels_tree, reject, ..., model, options, ray). Resumes an interrupted run."""
    from ..job import HeadOptions, open_source, plan
    from .classify import answers

    head_keys = ("labels", "classifier", "templates", "descriptions", "labels_tree", "tree_mode", "beam", "reject",
                 "reject_calibrate", "tpr", "reject_score", "reject_label", "top_k", "scale")
    check_accept(accept, accept_precision, job.get("classifier") is not None)
    head_options = HeadOptions(**{key: job.pop(key) for key in head_keys if key in job},
                               accept_precision=accept_precision)
    if head_options.top_k is None and not head_options.is_tree():
        head_options.top_k = 2  # the runner-up, for the margin
    plan_keys = ("encoder", "model", "pretrained", "options", "cache", "cache_dir", "ray")
    unknown = set(job) - set(plan_keys)
    if unknown:
        raise InputError(f"sort takes no {', '.join(sorted(unknown))}")
    source = open_source(inputs)
    planned = plan(source, head_options, encoder=job.get("encoder"), model=job.get("model"),
                   pretrained=job.get("pretrained"), run=job.get("options"), cache=job.get("cache", True),
                   cache_dir=job.get("cache_dir"), ray=job.get("ray"))
    sorter = Sorter(into, LabelSpace.of(planned.head, timed=source.timed),
                    accept_threshold(planned.head, accept, accept_precision), files)
    skip_done(planned.source, sorter)
    return sort_answers(answers(planned), sorter)


def skip_done(source, sorter: Sorter) -> int:
    """Leave out of ``source`` the inputs an earlier run placed (image files and videos; other sources are read
    whole and their placed rows skipped). Returns how many were left out."""
    for attribute in ("sources", "items"):
        items = getattr(source, attribute, None)
        if isinstance(items, list) and items:
            kept = [item for item in items if not sorter.already(getattr(item, "name", str(item)))]
            left = len(items) - len(kept)
            setattr(source, attribute, kept)
            sorter.summary.skipped += left
            return left
    return 0


__all__ = ["sort", "Sorter", "SortSummary", "Journal", "accept_threshold", "check_accept", "class_folders",
           "sort_answers", "skip_done", "check_into", "JOURNAL", "REVIEW", "UNKNOWN", "REVIEW_CSV", "ERRORS_CSV"]
