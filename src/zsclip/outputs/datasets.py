"""Dataset folders: labelled images laid out for another tool, built atomically.

- FiftyOne (``FiftyOneImageClassificationDataset``): ``data/<id>.<ext>`` and ``labels.json`` =
  ``{"classes": [...], "labels": {id: {"label": class index, "confidence": p}}}``, a list of such targets
  per image for multi-label (FiftyOne's documented layout; ids are the files' stems, so ``a.jpg`` and
  ``a.png`` get ``a`` and ``a_1``).
- Hugging Face imagefolder: the images and ``metadata.jsonl`` with ``file_name``, ``label``, ``score``
  (multi-label: ``labels`` and ``scores`` lists, ``label`` the best of them or null; trees: ``taxonomy``,
  the label's path), what ``datasets.load_dataset("imagefolder", data_dir=...)`` reads.

The folder is built under a temporary name beside the target and renamed into place when the run
completes (an interrupted run leaves ``NAME.partial``). Images are copied or hard-linked (``Placer``),
never moved. Inputs that failed, or that are no local file (a URL), are left out and reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import OutputError
from ..heads.base import Prediction
from .labelling import LabelSpace
from .labelstudio import once
from .placing import Placer
from .text import printable, undecodable_escaped


class AtomicFolder:
    """A folder built under a temporary name beside ``target`` and renamed to it by ``commit``."""

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target).expanduser()
        shown = printable(self.target)
        if self.target.exists() and (not self.target.is_dir() or any(self.target.iterdir())):
            raise OutputError(f"output {shown} already exists: give a new folder name (nothing is overwritten)")
        if not self.target.parent.is_dir():
            raise OutputError(f"output {shown}: folder {printable(self.target.parent)} does not exist; create it first")
        try:
            self.temporary = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name[:80]}.",
                                                   suffix=".partial"))
        except OSError as error:
            raise OutputError(f"output {shown} cannot be written: {error.strerror or error}") from None

    def commit(self) -> Path:
        try:
            if self.target.is_dir():
                self.target.rmdir()  # the empty folder the user made for it
            os.rename(self.temporary, self.target)
        except OSError as error:
            raise OutputError(f"cannot write {printable(self.target)}: {error.strerror or error}; the images and "
                              f"labels are in {printable(self.temporary)}") from None
        return self.target

    def abandon(self) -> Path:
        partial = self.target.with_name(self.target.name + ".partial")
        with contextlib.suppress(OSError):
            if not os.path.lexists(partial):
                os.rename(self.temporary, partial)
                return partial
        return self.temporary

    def discard(self) -> None:
        shutil.rmtree(self.temporary, ignore_errors=True)


class _DatasetSink:
    """Places each answered image and keeps its label; writes the labels file on close."""

    media_folder = ""

    def __init__(self, path: str | os.PathLike, space: LabelSpace, *, files: str = "copy") -> None:
        self.space = space
        self._folder = AtomicFolder(path)
        self.path = self._folder.target
        self._placer = Placer(files)
        self._seen: set[str] = set()
        self.skipped: list[tuple[str, str]] = []  # (input, why) for inputs that could not be placed

    def write(self, prediction: Prediction) -> None:
        if prediction.error is not None:
            return
        once(self._seen, prediction)
        try:
            placed = self._placer.place(prediction.source, self._folder.temporary / self.media_folder,
                                        unique_stem=True)
        except Exception as error:  # noqa: BLE001 - a file that vanished or cannot be read: reported, skipped
            why = str(error)
            self.skipped.append((prediction.source, why))
            print(f"zsclip: left out of {printable(self.path)}: {printable(prediction.source)}: {printable(why)}",
                  file=sys.stderr)
            return
        self.add(placed, self.space.read(prediction))

    def add(self, placed: Path, labelled) -> None:
        raise NotImplementedError

    def finish(self, folder: Path) -> None:
        raise NotImplementedError

    def close(self) -> Path:
        try:
            self.finish(self._folder.temporary)
        except BaseException:
            self._folder.abandon()
            raise
        return self._folder.commit()

    def abandon(self) -> Path:
        return self._folder.abandon()


class FiftyOneSink(_DatasetSink):
    """``FiftyOneImageClassificationDataset``: ``data/`` and ``labels.json`` (see module docstring)."""

    media_folder = "data"

    def __init__(self, path: str | os.PathLike, space: LabelSpace, *, files: str = "copy") -> None:
        super().__init__(path, space, files=files)
        self.classes = space.choices
        self._index = {name: i for i, name in enumerate(self.classes)}
        self._labels: dict[str, object] = {}

    def add(self, placed: Path, labelled) -> None:
        targets = [{"label": self._index[label], "confidence": round(score, 6)}
                   for label, score in zip(labelled.labels, labelled.scores or [labelled.score], strict=False)]
        uid = undecodable_escaped(placed.stem)
        self._labels[uid] = targets if self.space.kind == "multi" else (targets[0] if targets else None)

    def finish(self, folder: Path) -> None:
        (folder / self.media_folder).mkdir(exist_ok=True)
        text = json.dumps({"classes": self.classes, "labels": self._labels}, ensure_ascii=False, indent=1)
        (folder / "labels.json").write_text(text + "\n", encoding="utf-8")


class ImageFolderSink(_DatasetSink):
    """Hugging Face imagefolder: the images and ``metadata.jsonl`` (see module docstring), streamed."""

    def __init__(self, path: str | os.PathLike, space: LabelSpace, *, files: str = "copy") -> None:
        super().__init__(path, space, files=files)
        self._metadata = (self._folder.temporary / "metadata.jsonl").open("w", encoding="utf-8")

    def add(self, placed: Path, labelled) -> None:
        row: dict = {"file_name": undecodable_escaped(placed.name)}
        if self.space.kind == "multi":
            row.update({"label": labelled.labels[0] if labelled.labels else None,
                        "score": round(labelled.score, 6), "labels": labelled.labels,
                        "scores": [round(s, 6) for s in labelled.scores]})
        else:
            row.update({"label": labelled.labels[0] if labelled.labels else None, "score": round(labelled.score, 6)})
            if self.space.kind == "tree":
                row["taxonomy"] = labelled.taxonomy[0] if labelled.taxonomy else []
        if self.space.reject_label is not None:
            row["rejected"] = labelled.rejected
        self._metadata.write(json.dumps(row, ensure_ascii=False) + "\n")

    def finish(self, folder: Path) -> None:
        self._metadata.flush()
        os.fsync(self._metadata.fileno())
        self._metadata.close()

    def abandon(self) -> Path:
        with contextlib.suppress(OSError):
            self._metadata.close()
        return super().abandon()


__all__ = ["AtomicFolder", "FiftyOneSink", "ImageFolderSink"]
