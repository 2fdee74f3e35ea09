"""Greedy forward selection of prompt templates on labelled images (OpenAI's notebook method).

OpenAI chose CLIP's 7 ImageNet templates (``openai-imagenet-7``) from the 80 this way: start with
none, repeatedly add the pool template whose addition gives the ensemble the best accuracy on
labelled images, stop at N. Every template's class vectors are encoded once; an ensemble's class
vector is the renormalised mean of its templates' normalised vectors (zsclip's prompt ensembling),
so trying a template costs one matrix product on the cached image features.

Accuracy measured on the images the templates were selected on is optimistic: ``select`` warns
when asked to report it, and users should evaluate the chosen file on other images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.collections import LabelledCollection
from ..encoders.base import Encoder
from ..errors import InputError, ZsclipWarning
from ..outputs.atomic import write_atomically
from ..prompts import Template, resolve_classes, resolve_templates
from .features import LabelledFeatures, encode_collection

SELECTION_WARNING = ("templates were selected on these same images: their accuracy here is optimistic; "
                     "evaluate the template file on other labelled images")


@dataclass
class Selection:
    """The chosen templates in the order they were added, with the ensemble's accuracy after each."""

    templates: list[Template]
    accuracies: list[float]
    pool_size: int

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.templates]


def select_templates(
    data: LabelledFeatures | LabelledCollection,
    encoder: Encoder,
    count: int,
    *,
    pool: str | os.PathLike | Sequence[str | Template] = "openai-imagenet",
    classes: Sequence[str | Sequence[str]] | None = None,
    precision: str = "auto",
    output: str | os.PathLike | None = None,
    reported_on_same_data: bool = False,
    **encode_options,
) -> Selection:
    """Pick ``count`` templates from ``pool`` by greedy forward selection on ``data``.

    ``data`` is encoded features, or a labelled collection (encoded here, once, through the
    feature cache; ``encode_options`` go to ``encode_collection``: batch_size, workers, cache...).

    ``classes`` (synonym lists, in ``data``'s class order) default to ``data.classnames``.
    ``output`` writes the selection as a template file (one per line, usable as ``--templates FILE``).
    ``reported_on_same_data``: the caller will report accuracy on ``data`` too; a warning says why
    that number is optimistic (``zsclip eval --select-templates`` sets it).
    """
    if count < 1:
        raise InputError(f"--select-templates {count}: choose at least 1 template")
    if isinstance(data, LabelledCollection):
        data = encode_collection(data, encoder, precision=precision, **encode_options)
    if len(data) == 0:
        raise InputError("no decoded labelled images to select templates on")
    templates = resolve_templates(pool)
    if count > len(templates):
        raise InputError(f"--select-templates {count}: the pool has only {len(templates)} templates")
    synonyms, _ = resolve_classes(classes if classes is not None else data.classnames)
    if len(synonyms) != len(data.classnames):
        raise InputError(f"{len(synonyms)} class names for {len(data.classnames)} classes in the data")
    per_template = _template_vectors(encoder, synonyms, templates, precision)  # [T, C, D], unit rows
    chosen: list[int] = []
    accuracies: list[float] = []
    total = torch.zeros_like(per_template[0])
    features, targets = data.features.float(), data.targets
    for _ in range(count):
        best = None
        for index in range(len(templates)):
            if index in chosen:
                continue
            weights = F.normalize(total + per_template[index], dim=-1)  # [C, D]
            logits = features @ weights.T
            score = (float((logits.argmax(1) == targets).float().mean()),
                     -float(F.cross_entropy(logits * encoder.logit_scale, targets)))
            if best is None or score > best[0]:
                best = (score, index)
        (accuracy, _), index = best
        chosen.append(index)
        accuracies.append(accuracy)
        total += per_template[index]
    selection = Selection([templates[i] for i in chosen], accuracies, len(templates))
    if output is not None:
        write_template_file(output, selection.templates)
    if reported_on_same_data:
        warnings.warn(SELECTION_WARNING, ZsclipWarning, stacklevel=2)
    return selection


def write_template_file(path: str | os.PathLike, templates: Sequence[Template]) -> Path:
    """One template per line, atomically; refuses templates that would not read back as written."""
    path = Path(path)
    lines = []
    for template in templates:
        text = template.text
        if "\n" in text or text.lstrip().startswith("#") or resolve_templates([text])[0]("x") != template("x"):
            raise InputError(f"template {text!r} cannot be written to a template file faithfully")
        lines.append(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, "\n".join(lines) + "\n")


def _template_vectors(encoder: Encoder, classes: list[list[str]], templates: list[Template],
                      precision: str) -> torch.Tensor:
    """[T, C, D]: for each template, each class's mean over its synonyms, normalised."""
    prompts = [template(name) for template in templates for names in classes for name in names]
    groups = [t for t in range(len(templates)) for names in classes for _ in names]
    vectors = encoder.encode_text(prompts, precision=precision, groups=groups)
    counts = torch.tensor([len(names) for names in classes])
    owner = torch.repeat_interleave(torch.arange(len(classes)), counts)
    out = torch.zeros(len(templates), len(classes), vectors.shape[1])
    per = int(counts.sum())
    for t in range(len(templates)):
        out[t].index_add_(0, owner, vectors[t * per:(t + 1) * per])
    return F.normalize(out, dim=-1)
