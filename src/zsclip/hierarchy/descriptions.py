"""Per-class descriptions (CuPL-style): extra sentences joined to a class's prompt ensemble.

CuPL (Pratt et al., ICCV 2023) and CLIP_benchmark ship descriptions as JSON objects mapping a
class name to a list of sentences ("A labrador is a sturdy dog with a short, dense coat.").
Here a class vector is the normalised mean of ALL its normalised prompt vectors: every template
applied to every synonym, then each description sentence, which is ``ensemble()`` over the
longer prompt list (the "combined" setting of CLIP_benchmark). Classes without descriptions get
exactly the vector ``ZeroShotClassifier.build`` gives them.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..classifier.cache import cache_dir as default_cache_dir
from ..classifier.cache import cache_key
from ..classifier.zeroshot import CacheRequest, ZeroShotClassifier, _load_cached, _store_cached, ensemble
from ..encoders.base import Encoder
from ..errors import InputError, ZsclipWarning
from ..precision import resolve_precision, text_precision
from ..prompts import Template, expand_prompts, resolve_classes, resolve_templates

MAX_DESCRIPTION_FILE_BYTES = 64 * 1024 * 1024  # CuPL's ImageNet file is ~10 MB
MAX_SENTENCES_PER_CLASS = 1_000
MAX_SENTENCE_CHARS = 2_000

Descriptions = Mapping[str, Sequence[str]]


def read_descriptions(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a CuPL / CLIP_benchmark descriptions file: ``{"class name": ["sentence", ...], ...}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"descriptions file {path} not found: write JSON mapping class -> list of sentences")
    size = path.stat().st_size
    if size > MAX_DESCRIPTION_FILE_BYTES:
        raise InputError(f"descriptions file {path} is {size} bytes, more than {MAX_DESCRIPTION_FILE_BYTES}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"descriptions file {path} is not UTF-8 JSON ({error}): write an object mapping "
                         "class name -> list of sentences") from None
    return check_descriptions(data, str(path))


def check_descriptions(data: object, source: str = "descriptions") -> dict[str, list[str]]:
    """Validate parsed descriptions: class names to non-empty lists of non-empty sentences."""
    if not isinstance(data, dict):
        raise InputError(f"{source} must be a JSON object mapping class name -> list of sentences")
    checked: dict[str, list[str]] = {}
    for name, sentences in data.items():
        if isinstance(sentences, str):
            sentences = [sentences]
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise InputError(f"{source}: descriptions of {name!r} must be a list of sentences")
        if len(sentences) > MAX_SENTENCES_PER_CLASS:
            raise InputError(f"{source}: {name!r} has {len(sentences)} sentences, more than "
                             f"{MAX_SENTENCES_PER_CLASS}")
        cleaned = [s.strip() for s in sentences if s.strip()]
        for sentence in cleaned:
            if len(sentence) > MAX_SENTENCE_CHARS:
                raise InputError(f"{source}: a description of {name!r} is {len(sentence)} characters, "
                                 f"more than {MAX_SENTENCE_CHARS}")
        key = name.strip().casefold()
        if key in {k.casefold() for k in checked}:
            raise InputError(f"{source}: class {name!r} is described twice: merge its sentences")
        checked[name.strip()] = cleaned
    return checked


def match_descriptions(classes: Sequence[Sequence[str]], descriptions: Descriptions | None,
                       source: str = "descriptions") -> list[list[str]]:
    """The sentences of each class, found under any of its synonyms (case-insensitive). Entries
    naming no class are reported in one warning (a CuPL file usually covers a whole dataset)."""
    if not descriptions:
        return [[] for _ in classes]
    by_key = {name.strip().casefold(): list(sentences) for name, sentences in descriptions.items()}
    used: set[str] = set()
    matched = []
    for names in classes:
        sentences: list[str] = []
        for name in names:
            key = name.strip().casefold()
            if key in by_key:
                sentences += by_key[key]
                used.add(key)
        matched.append(sentences)
    unused = [name for name in descriptions if name.strip().casefold() not in used]
    if unused:
        warnings.warn(f"{source}: {len(unused)} described class(es) are not among the labels and are ignored "
                      f"(e.g. {', '.join(map(repr, unused[:3]))})", ZsclipWarning, stacklevel=3)
    return matched


def described_prompts(classes: Sequence[Sequence[str]], templates: Sequence[Template],
                      sentences: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each class's prompts: templates x synonyms (the reference order), then its sentences."""
    return [prompts + list(extra) for prompts, extra in zip(expand_prompts(classes, templates), sentences,
                                                            strict=True)]


def build_classifier(
    encoder: Encoder,
    classnames: str | Sequence[str | Sequence[str]],
    templates: str | os.PathLike | Sequence[str | Template] | None = None,
    descriptions: Descriptions | str | os.PathLike | Sequence[Sequence[str]] | None = None,
    *,
    precision: str = "auto",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
    logit_scale: float | None = None,
) -> ZeroShotClassifier:
    """``ZeroShotClassifier.build`` plus per-class description sentences in each class's ensemble.

    ``descriptions``: a mapping class name -> sentences, a CuPL JSON file, or one list of
    sentences per class (in class order). Without any sentences this IS ``ZeroShotClassifier.build``
    (same vectors, same cache entry). The result is an ordinary ZeroShotClassifier: save, load,
    predict and the pipeline work unchanged; its provenance counts the sentences used.
    """
    classes, named_list = resolve_classes(classnames)
    if isinstance(descriptions, (str, os.PathLike)):
        descriptions = read_descriptions(descriptions)
    if descriptions is None or isinstance(descriptions, Mapping):
        sentences = match_descriptions(classes, descriptions)
    else:
        sentences = [[s.strip() for s in extra if s.strip()] for extra in descriptions]
        if len(sentences) != len(classes):
            raise InputError(f"{len(sentences)} description lists for {len(classes)} classes: give one per class")
    if not any(sentences):  # the names as given: a named list ("imagenet1k") keeps its own rules
        return ZeroShotClassifier.build(encoder, classnames, templates, precision=precision, cache=cache,
                                        cache_dir=cache_dir, batch_size=batch_size, progress=progress,
                                        logit_scale=logit_scale)
    template_list = resolve_templates(templates)
    prompts = described_prompts(classes, template_list, sentences)
    precision = text_precision(resolve_precision(precision, encoder.device))
    provenance = {
        "model": encoder.name,
        "pretrained": getattr(encoder, "pretrained", None),
        "backend": encoder.backend,
        "fingerprint": encoder.fingerprint,
        "templates": [t.text for t in template_list],
        "descriptions": sum(map(len, sentences)),
        "precision": precision,
        "zsclip_version": __version__,
        "named_class_list": classnames if named_list else None,
    }
    key = cache_key(encoder.fingerprint, classes, prompts, precision)
    cached_file = default_cache_dir(cache_dir) / f"{key}.zsc"
    request = CacheRequest(encoder.fingerprint, classes, provenance["templates"], precision, encoder.embed_dim,
                           provenance["descriptions"])
    classifier = _load_cached(cached_file, request) if cache and cached_file.is_file() else None
    if classifier is None:
        # template prompts share their template's leading tokens; sentences go in one extra group
        groups = [[i % len(template_list) for i in range(len(ps) - len(extra))] + [len(template_list)] * len(extra)
                  for ps, extra in zip(prompts, sentences, strict=True)]
        features = encoder.encode_text([p for ps in prompts for p in ps], precision=precision,
                                       batch_size=batch_size, progress=progress,
                                       groups=[g for gs in groups for g in gs])
        weights = ensemble(features, [len(ps) for ps in prompts])
        provenance["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        classifier = ZeroShotClassifier(weights, [names[0] for names in classes], classes, encoder.logit_scale,
                                        encoder.logit_bias, provenance, encoder)
        if cache:
            _store_cached(classifier, cached_file)
    classifier.encoder = encoder
    if logit_scale is not None:
        classifier.logit_scale = float(logit_scale)
    return classifier


__all__ = ["read_descriptions", "check_descriptions", "match_descriptions", "described_prompts", "build_classifier"]
