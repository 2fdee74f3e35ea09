"""What models exist, told without importing open_clip or torch: the bundled demo model's folder, and
open_clip's (model, pretrained tag) registry, remembered so that listing it needs no open_clip import.

``import open_clip`` loads torch, timm and transformers (5 s and more on a small machine) only for
``zsclip models`` to print names. The registry is open_clip's own answer (``list_pretrained()``),
computed once and kept in a small JSON file beside the classifier cache, keyed by the installed
``pretrained.py`` (path, size, modification time): an upgraded or edited open_clip is asked again, so
the list printed is always the installed one's. (Reading the file without running it was tried: the
registry is partly computed by code, e.g. its ``-quickgelu`` entries.)
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

FILE_NAME = "open_clip-pretrained.json"


def demo_model_dir() -> Path:
    """The bundled demo CLIP (package data, open_clip local-dir layout). It knows only the synthetic
    shapes world of ``zsclip.shapes``; tools/train_demo_model.py made it."""
    return Path(__file__).resolve().parent.parent / "demo_model"


def list_pretrained(cache_dir: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(model name, pretrained tag) pairs in open_clip's order, as ``open_clip.list_pretrained()``; from
    the remembered copy in ``cache_dir`` (the classifier cache folder) when it matches the install."""
    from ..outputs.atomic import write_atomically

    key = _install_key()
    remembered = Path(cache_dir) / FILE_NAME if cache_dir is not None and key is not None else None
    if remembered is not None:
        try:
            data = json.loads(remembered.read_text(encoding="utf-8"))
            if data.get("key") == key and isinstance(data.get("pairs"), list):
                return [(str(name), str(tag)) for name, tag in data["pairs"]]
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # missing, unreadable or of another shape: asked again below and rewritten
    import open_clip

    pairs = [(str(name), str(tag)) for name, tag in open_clip.list_pretrained()]
    if remembered is not None:
        try:
            remembered.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(remembered, json.dumps({"key": key, "pairs": pairs}))
        except OSError:
            pass  # a read-only cache: the list is still right, only not remembered
    return pairs


def _install_key() -> list | None:
    """What identifies the installed registry: its file's path, size and modification time (None when
    open_clip is not installed as plain files)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        return None
    path = Path(locations[0]) / "pretrained.py"
    try:
        stat = path.stat()
    except OSError:
        return None
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
