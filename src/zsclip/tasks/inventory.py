"""`zsclip models`: what can be loaded, and what is already on this machine."""

from __future__ import annotations

import os
from collections import defaultdict

from ..classifier.cache import cache_dir as classifier_cache_dir
from ..outputs.text import printable


def describe_models(show_all: bool = False, cache_dir: str | os.PathLike | None = None) -> str:
    """A report in four parts: the bundled demo model, open_clip's registry, the Hugging Face cache,
    cached classifiers."""
    return "\n".join([*_bundled(), "", *_open_clip_registry(show_all, cache_dir), "", *_hub_cache(), "",
                      *_classifier_cache(cache_dir)])


def _bundled() -> list[str]:
    from ..encoders.catalog import demo_model_dir

    folder = demo_model_dir()
    size = sum(p.stat().st_size for p in folder.glob("*")) / 1e6 if folder.is_dir() else 0.0
    state = f"{size:.1f} MB, offline" if size else "missing from this install"
    return ["bundled with zsclip:",
            f"  --model demo   a small CLIP for the synthetic shapes world only (python -m zsclip.shapes); {state}"]


def _open_clip_registry(show_all: bool, cache_dir: str | os.PathLike | None) -> list[str]:
    from ..encoders.catalog import list_pretrained

    tags: dict[str, list[str]] = defaultdict(list)
    for name, tag in list_pretrained(classifier_cache_dir(cache_dir)):
        tags[name].append(tag)
    lines = [f"open_clip models with pretrained weights: {len(tags)} models, "
             f"{sum(map(len, tags.values()))} tags (downloaded on first use)"]
    names = sorted(tags) if show_all else [n for n in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-SO400M-14-SigLIP",
                                                          "ViT-H-14", "ViT-bigG-14") if n in tags]
    lines += [f"  --model {name:24s} --pretrained {' | '.join(tags[name])}" for name in names]
    if not show_all:
        lines.append("  ... `zsclip models --all` lists all of them. Also: hf-hub:ORG/REPO, local-dir:PATH, "
                     "transformers:ID_OR_PATH")
    return lines


def _hub_cache() -> list[str]:
    try:
        from huggingface_hub import constants, scan_cache_dir
    except ImportError:
        return ["Hugging Face cache: huggingface_hub is not installed"]
    folder = getattr(constants, "HF_HUB_CACHE", None) or "the Hugging Face cache folder"
    if not os.path.isdir(folder):
        return [f"Hugging Face cache: empty ({folder} does not exist yet: weights download there on first use)"]
    try:
        info = scan_cache_dir()
    except Exception as error:  # an unreadable cache: what it says, never an exception's class name
        return [f"Hugging Face cache: {folder} could not be read: {printable(' '.join(str(error).split()))}"]
    repos = sorted(info.repos, key=lambda r: r.repo_id)
    lines = [f"Hugging Face cache ({len(repos)} repos, usable offline with HF_HUB_OFFLINE=1):"]
    lines += [f"  {r.repo_id:60s} {r.size_on_disk / 1e6:9.1f} MB" for r in repos if r.repo_type == "model"]
    return lines


def _classifier_cache(cache_dir: str | os.PathLike | None) -> list[str]:
    from ..classifier import ZeroShotClassifier
    from ..errors import ClassifierFileError

    folder = classifier_cache_dir(cache_dir)
    entries = sorted(folder.glob("*.zsc")) if folder.is_dir() else []
    lines = [f"cached classifiers in {folder}: {len(entries)}"]
    for path in entries:
        try:
            clf = ZeroShotClassifier.load(path)
        except ClassifierFileError:
            lines.append(f"  {path.name}: unreadable (will be rebuilt)")
            continue
        names = ", ".join(clf.classnames[:4]) + (", ..." if len(clf.classnames) > 4 else "")
        lines.append(f"  {path.name[:12]}  {len(clf.classnames):5d} classes ({names})  model "
                     f"{clf.provenance.get('model')}  {clf.provenance.get('precision')}")
    return lines
