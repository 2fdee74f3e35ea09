"""The sinks a job's answers can go to, by name: rows (CSV / JSONL / JSON / Parquet, by extension) and the
labelling formats (``label-studio``, ``fiftyone``, ``imagefolder``), chosen with ``--format`` where an
extension cannot tell. A new sink is a module in this package plus one entry in ``SINKS``.

(Sinks are registered here rather than in ``zsclip.job.registry``: they sit above the job layer and the job
never imports them.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, OutputError
from .atomic import check_writable
from .placing import PLACE_MODES
from .text import printable

#: name -> (what it writes, whether it is a folder, the options it takes)
SINKS: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "csv": ("rows", False, ()),
    "jsonl": ("rows", False, ()),
    "json": ("rows", False, ()),
    "parquet": ("rows", False, ()),
    "label-studio": ("Label Studio tasks (.json) and config", False, ("image_prefix", "image_root")),
    "fiftyone": ("a FiftyOne image classification dataset folder", True, ("files",)),
    "imagefolder": ("a Hugging Face imagefolder", True, ("files",)),
}
LABELLING_FORMATS = ("label-studio", "fiftyone", "imagefolder")
_OPTION_FLAGS = {"image_prefix": "--image-prefix", "image_root": "--image-root", "files": "--files"}


@dataclass
class SinkOptions:
    """Where and how answers are written: ``format`` (None: by the output's extension) and the options of
    the labelling formats."""

    format: str | None = None
    image_prefix: str | None = None   # label-studio: data.image prefix (default its local-files form)
    image_root: str | None = None     # label-studio: paths relative to this folder (Label Studio's document root)
    files: str | None = None          # fiftyone / imagefolder: copy or hardlink (default copy)

    def resolve(self, output: str | os.PathLike | None) -> str:
        """The sink's name for ``output``; refuses an option the sink cannot use, and a format without an output."""
        name = self.format
        if name is not None and name not in SINKS:
            raise InputError(f"--format {printable(name)}: use one of {', '.join(SINKS)}")
        given = [key for key in _OPTION_FLAGS if getattr(self, key) is not None]
        if output is None:
            if name is not None or given:
                flag = "--format" if name is not None else _OPTION_FLAGS[given[0]]
                raise InputError(f"{flag} applies to an output: add --output (-o)")
            return "terminal"
        suffix = Path(output).suffix.lower().lstrip(".")
        if name is None:
            name = suffix if suffix in SINKS and not SINKS[suffix][1] and suffix not in LABELLING_FORMATS else None
            if name is None:
                from .rows import ResultWriter

                ResultWriter.check(output)  # the usual one-line refusal of an unknown extension
        elif name in ("csv", "jsonl", "json", "parquet") and suffix != name:
            raise InputError(f"--format {name} writes .{name} files: name the output {printable(Path(output).stem)}"
                             f".{name}")
        elif name == "label-studio" and suffix != "json":
            raise InputError("--format label-studio writes a JSON file of tasks: name the output with .json")
        for key in given:
            if key not in SINKS[name][2]:
                users = [n for n, (_, _, keys) in SINKS.items() if key in keys]
                raise InputError(f"{_OPTION_FLAGS[key]} applies to --format {' / '.join(users)}, not {name}")
        if self.files is not None and self.files not in PLACE_MODES:
            raise InputError(f"--files {printable(self.files)}: use {' or '.join(PLACE_MODES)}")
        if SINKS[name][1]:
            check_folder(output)
        elif name not in LABELLING_FORMATS:
            from .rows import ResultWriter

            ResultWriter.check(output)  # a known extension, a place that can be written
        elif name == "label-studio":
            from .labelstudio import config_path_for

            check_writable(config_path_for(check_writable(output)), "labelling config")
        return name


def check_folder(output: str | os.PathLike) -> Path:
    """A dataset folder's target: new (or empty), in a folder that exists."""
    target = Path(output).expanduser()
    shown = printable(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise OutputError(f"output {shown} already exists: give a new folder name (nothing is overwritten)")
    if not target.parent.is_dir():
        raise OutputError(f"output {shown}: folder {printable(target.parent)} does not exist; create it first")
    return target


def check_source(name: str, source, clips: bool = False, image_root: str | None = None) -> None:
    """Refuse, before any work, a labelling format for inputs it cannot hold: images inside a table or tar
    shards have no file to show or place, video clip rows (``clips``) are several answers for one file, and
    Label Studio reaches local files only under its document root (``image_root``)."""
    if name not in LABELLING_FORMATS:
        return
    if name == "label-studio" and image_root is not None:
        root = Path(os.path.abspath(image_root))
        for item in getattr(source, "sources", None) or getattr(source, "items", None) or []:
            path = getattr(item, "name", "")
            if path and not path.startswith(("http://", "https://")) and \
                    not Path(os.path.abspath(path)).is_relative_to(root):
                raise InputError(f"{printable(path)} is not under --image-root {printable(root)}: give the folder "
                                 "Label Studio serves (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
    if clips:
        raise InputError(f"--format {name} takes one answer per file, and --segment gives one per video clip: "
                         "add --per-video")
    kind = getattr(source, "kind", "")
    if kind in ("hugging face dataset", "shards"):
        raise InputError(f"--format {name} needs image files: {source.describe()} holds images inside "
                         "its files; write rows (.csv, .jsonl, .parquet) instead")


def open_labelling_sink(name: str, output: str | os.PathLike, space, options: SinkOptions):
    """The labelling sink ``name`` writing to ``output`` for answers in ``space`` (a LabelSpace)."""
    if name == "label-studio":
        from .labelstudio import LabelStudioSink

        return LabelStudioSink(output, space, image_prefix=options.image_prefix, image_root=options.image_root)
    from .datasets import FiftyOneSink, ImageFolderSink

    sink = FiftyOneSink if name == "fiftyone" else ImageFolderSink
    return sink(output, space, files=options.files or "copy")


__all__ = ["SINKS", "LABELLING_FORMATS", "SinkOptions", "check_source", "open_labelling_sink"]
