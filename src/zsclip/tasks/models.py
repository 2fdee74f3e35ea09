"""Which model and which classifier a run uses: the defaults, and the rules that connect a
classifier file to its model. Every entry point resolves them here, so a Python call, the CLI,
the service and a Ray actor pick the same model for the same arguments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..classifier import ZeroShotClassifier
from ..classifier.files import load_flat
from ..encoders.resolve import DEFAULT_MODEL, DEFAULT_PRETRAINED, default_weights, quiet_transformers, resolve_model
from ..errors import InputError
from ..options import RunOptions
from ..prompts import Template, resolve_classes, resolve_templates

if TYPE_CHECKING:
    from ..encoders import Encoder

Classes = str | Sequence[str | Sequence[str]]
Templates = str | os.PathLike | Sequence[str | Template] | None


def resolve_classifier(
    labels: Classes | None = None,
    *,
    classifier: ZeroShotClassifier | str | os.PathLike | None = None,
    templates: Templates = None,
    encoder: Encoder | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    options: RunOptions | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    descriptions: str | os.PathLike | dict | None = None,
) -> tuple[Encoder, ZeroShotClassifier]:
    """The (encoder, classifier) pair a run uses, from labels or from a classifier.

    Give ``labels`` (class names, synonym lists or a named list such as "imagenet1k") to build a
    classifier (cached), or ``classifier`` (a ``ZeroShotClassifier`` or a classifier file) to use
    one; never both. The model is ``encoder`` if given, else ``model``/``pretrained``, else the one
    a classifier file names, else the default. A classifier is always checked against its model.
    ``descriptions`` (class -> sentences, or a CuPL-style JSON file) join each class's prompt ensemble.
    """
    options = options or RunOptions()
    if classifier is not None and (labels is not None or templates is not None or descriptions is not None):
        raise InputError("a classifier already holds its labels and templates: give labels or a classifier, "
                         "not both")
    if classifier is None and labels is None:
        raise InputError('no labels: pass labels such as ["dog", "cat"] (CLI: --labels "dog,cat", '
                         "--labels-file FILE) or a classifier file")
    if classifier is None:  # bad labels or templates fail here, before a model is loaded
        resolve_classes(labels)
        resolve_templates(templates)
    if isinstance(classifier, (str, os.PathLike)):
        classifier = load_flat(Path(classifier))
    if classifier is not None and encoder is None:
        encoder = classifier.encoder
        if model is None:  # the classifier's own model; a model the user names keeps its own weights
            model = classifier.provenance.get("model")
            pretrained = pretrained or classifier.provenance.get("pretrained")
    if encoder is None:
        encoder = resolve_model(model, pretrained, options)
    if classifier is not None:
        classifier.check_encoder(encoder)
        classifier.encoder = encoder
        return encoder, classifier
    if descriptions is not None:
        from ..hierarchy.descriptions import build_classifier

        return encoder, build_classifier(encoder, labels, templates, descriptions, precision=options.precision,
                                         cache=cache, cache_dir=cache_dir)
    built = ZeroShotClassifier.build(encoder, labels, templates, precision=options.precision, cache=cache,
                                     cache_dir=cache_dir)
    return encoder, built


__all__ = ["DEFAULT_MODEL", "DEFAULT_PRETRAINED", "Classes", "Templates", "default_weights", "quiet_transformers",
           "resolve_classifier", "resolve_model"]
