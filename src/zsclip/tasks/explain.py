"""Explain: each image's answer plus a heatmap per explained class, written as overlay PNGs and raw values.

The task under ``zsclip explain``, ``zsclip classify --explain DIR``, ``zsclip.explain`` and the service's
``/v1/explain``. The job is classify's (any head: labels, a classifier file, an adapted head, a label tree,
multi-label, a rejector), answered image by image; what is explained comes from the answer, through the
head's own weights: a flat head's top ``top_k`` labels (the classifier's column for each), a label tree's
chosen path (the node classifier's column for each level), multi-label's labels over their thresholds.
``texts`` explains given classes or any text instead. Explanations need pixels: a store is refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, OutputError, ZsclipError
from ..heads.base import Prediction
from ..job import HeadOptions, Job, open_source, plan
from ..options import RunOptions
from .models import Classes, Templates

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from ..encoders.base import Encoder
    from ..heads import Head

#: Images per heatmap batch: the gradient method keeps one batch's graph alive, so this bounds memory.
EXPLAIN_BATCH = 8
INDEX_NAME = "explained.jsonl"


@dataclass
class Explanation:
    """One image: its answer, the labels explained (with their scores), one [H, W] map per label (the image's
    own size), and the files written for them (``png``, ``npy`` per label, when written)."""

    source: str
    prediction: Prediction
    labels: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    heatmaps: list[np.ndarray] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    image: Image.Image | None = field(default=None, repr=False)

    @property
    def error(self) -> str | None:
        return self.prediction.error


def check_source(source) -> None:
    """Refuse, in one line, a source whose images cannot be re-read as pixels."""
    from ..job import ImageFiles

    if isinstance(source, ImageFiles):
        return
    if not source.needs_model:
        raise InputError(f"{source.describe()} holds embeddings, not pixels: a heatmap needs the images; explain the "
                         "image files the store was made from (zsclip explain IMAGES, or zsclip classify IMAGES "
                         "--explain DIR)")
    raise InputError(f"{source.describe()}: explanations read image files, folders, globs and URLs; extract the "
                     "images (or frames) to a folder and explain that")


def check_output_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` (and parents) now, before any model loads, and check it is writable."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {path}: {error.strerror or error}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {path}: permission denied; choose another -o / --explain folder")
    return path


def explain(
    inputs,
    labels: Classes | None = None,
    *,
    classifier=None,
    templates: Templates = None,
    descriptions=None,
    labels_tree=None,
    tree_mode: str | None = None,
    beam: int | None = None,
    reject: float | None = None,
    reject_calibrate=None,
    tpr: float | None = None,
    reject_score: str | None = None,
    reject_label: str | None = None,
    multi_label: bool | None = None,
    multi_score: str | None = None,
    threshold: float | None = None,
    calibrate=None,
    target_precision: float | None = None,
    top_k: int = 1,
    texts: Sequence[str] | None = None,
    method: str | None = None,
    upscale: int | None = None,
    output_dir: str | os.PathLike | None = None,
    encoder: Encoder | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    options: RunOptions | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[Explanation]:
    """Classify ``inputs`` (image files, folders, globs, URLs) and explain each answer with heatmaps.

    The head as in ``zsclip.classify`` (a rejected image explains nothing); ``top_k`` flat labels are
    explained per image (a tree: the chosen path; multi-label: every label over its threshold); ``texts``
    explains those classes or any texts on every image instead. ``method``: "patch" (training-free, the
    default) or "gradcam"; ``upscale``: run the image tower on pixels enlarged this much (None: enough for
    an 8x8 grid). With ``output_dir`` each
    heatmap is written as NAME.png (overlay) and NAME.npy (float32 values, the image's size), listed in
    ``explained.jsonl``. Returns an iterator of ``Explanation``s in input order; a bad image is one with an
    error, never an exception that ends the run.
    """
    from ..heatmaps import check_method

    check_method(method or "patch")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k {top_k!r}: explain at least one label per image")
    source = open_source(inputs)
    check_source(source)
    head_options = HeadOptions(labels, classifier, templates, descriptions, labels_tree, tree_mode, beam, reject,
                               reject_calibrate, tpr, reject_score, reject_label, None, None, multi_label, multi_score,
                               threshold, calibrate, target_precision)
    head_options.check()
    if not head_options.is_tree() and not head_options.is_multi_label():
        head_options.top_k = top_k
    directory = check_output_dir(output_dir) if output_dir is not None else None
    job = plan(source, head_options, encoder=encoder, model=model, pretrained=pretrained, run=options, cache=cache,
               cache_dir=cache_dir)
    return explanations(job, top_k=top_k, texts=texts, method=method, upscale=upscale, directory=directory,
                        templates=templates)


def explanations(job: Job, *, top_k: int = 1, texts: Sequence[str] | None = None, method: str | None = None,
                 upscale: int | None = None, directory: Path | None = None, templates: Templates = None,
                 keep_images: bool = False) -> Iterator[Explanation]:
    """The explanations of a planned job (an image source, a model), EXPLAIN_BATCH images at a time."""
    from ..data.images import load_image

    encoder, run = job.encoder, job.run
    fixed = text_targets(job.head, encoder, texts, templates) if texts else None
    writer = _Writer(directory, method) if directory is not None else None
    sources = job.source.sources
    try:
        for start in range(0, len(sources), EXPLAIN_BATCH):
            chunk = sources[start:start + EXPLAIN_BATCH]
            decoded: list[tuple[str, Image.Image | None, str | None]] = []
            for item in chunk:
                if item.error is not None:
                    decoded.append((item.name, None, item.error))
                    continue
                try:
                    decoded.append((item.name, load_image(item.name, None, run.max_pixels, timeout=run.url_timeout,
                                                          draft=False), None))
                except ZsclipError as error:
                    decoded.append((item.name, None, str(error)))
            batch = explain_decoded(job.head, encoder, decoded, top_k=top_k, fixed=fixed, method=method,
                                    upscale=upscale, precision=run.precision)
            for explanation in batch:
                if writer is not None and explanation.error is None:
                    writer.write(explanation)
                if not keep_images:
                    explanation.image = None
                yield explanation
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    if writer is not None:
        writer.close()


def explain_decoded(head: Head, encoder: Encoder, decoded: Sequence[tuple[str, Image.Image | None, str | None]], *,
                    top_k: int = 1, fixed=None, method: str | None = None, upscale: int | None = None,
                    precision: str = "fp32") -> list[Explanation]:
    """Explanations of already decoded images, ``(name, image or None, error or None)`` each: answered by
    ``head`` and explained (its ``top_k`` / path / labels over threshold, or the ``fixed`` targets of
    ``text_targets``) in one heatmap batch. The service calls this with its uploads."""
    import torch

    from ..heatmaps import image_heatmaps

    good = [(name, image) for name, image, error in decoded if error is None]
    answers: Iterator[Prediction] = iter(())
    if good:
        pixels = torch.stack([encoder.preprocess(image) for _, image in good])
        answers = iter(head.answer(encoder.encode_images(pixels, precision)))
    out: list[Explanation] = []
    for name, image, error in decoded:
        if error is not None:
            out.append(Explanation(name, Prediction(name, [], [], error)))
            continue
        answer = next(answers)
        answer.source = name
        explanation = Explanation(name, answer, image=image)
        if answer.error is None:
            chosen = fixed if fixed is not None else chosen_labels(head, answer, top_k)
            explanation.labels = [label for label, _, _ in chosen]
            explanation.scores = [score for _, score, _ in chosen] if fixed is None else \
                _scores_of(answer, explanation.labels)
            explanation._targets = [vector for _, _, vector in chosen]  # type: ignore[attr-defined]
        out.append(explanation)
    todo = [e for e in out if e.error is None and e.labels]
    if todo:
        targets = [torch.stack(e._targets) for e in todo]  # type: ignore[attr-defined]
        maps = image_heatmaps(encoder, [e.image for e in todo], targets, method=method, upscale=upscale)
        for explanation, heat in zip(todo, maps, strict=True):
            explanation.heatmaps = heat
    for explanation in out:
        explanation.__dict__.pop("_targets", None)
    return out


def chosen_labels(head: Head, answer: Prediction, top_k: int) -> list[tuple[str, float | None, torch.Tensor]]:
    """(label, score, unit column) for each label this answer explains, through the head's own weights."""
    inner = getattr(head, "inner", head)  # a rejector explains what its head answered (the reject label: nothing)
    if inner.kind == "tree":
        classes = inner.tree_classifier.node_classifier
        levels = inner.tree_classifier.tree.level_names()
        record = answer.record or {}
        picked = [(record.get(level), record.get(f"{level}_probability")) for level in levels]
        picked = [(label, score) for label, score in picked if label is not None]
    elif inner.kind == "multilabel":
        classes = inner.classifier
        picked = list(zip(answer.labels, answer.scores, strict=True))
    else:
        classes = inner.classifier
        picked = list(zip(answer.labels, answer.scores, strict=True))[:top_k]
    names = list(classes.classnames)
    weights = classes.weights
    out = []
    for label, score in picked:
        if label in names:
            out.append((label, None if score is None else float(score), weights[:, names.index(label)].float()))
    return out


def text_targets(head: Head, encoder: Encoder | None, texts: Sequence[str], templates: Templates
                 ) -> list[tuple[str, None, torch.Tensor]]:
    """Given classes (the head's own column) or any text (encoded with ``templates``)."""
    from ..classifier import ZeroShotClassifier

    classes = head.classifier
    names = list(classes.classnames)
    texts = [text.strip() for text in texts if text and text.strip()]
    if not texts:
        raise InputError("--text: give a class or any text to explain")
    new = [text for text in texts if text not in names]
    built = None
    if new:
        if encoder is None:
            raise InputError("explaining a text that is not a class needs the model's text tower")
        import warnings

        from ..errors import ZsclipWarning

        with warnings.catch_warnings():  # "only one class" is about softmax; a text explained alone is fine
            warnings.simplefilter("ignore", ZsclipWarning)
            built = ZeroShotClassifier.build(encoder, new, templates)
    out = []
    for text in texts:
        if text in names:
            out.append((text, None, classes.weights[:, names.index(text)].float()))
        else:
            out.append((text, None, built.weights[:, built.classnames.index(text)].float()))
    return out


def _scores_of(answer: Prediction, labels: list[str]) -> list[float | None]:
    scores = dict(zip(answer.labels, answer.scores, strict=True))
    return [scores.get(label) for label in labels]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str, limit: int = 60) -> str:
    return (_UNSAFE.sub("_", text).strip("._") or "x")[:limit]


class _Writer:
    """Per explained label: NNNNN-STEM-LABEL.png (overlay) and .npy (values), each written atomically;
    ``explained.jsonl`` lists them (written whole at the end, or what was done on an interruption)."""

    def __init__(self, directory: Path, method: str | None) -> None:
        from ..heatmaps import DEFAULT_METHOD

        self.directory, self.method = directory, method or DEFAULT_METHOD
        self.rows: list[dict] = []
        self.count = 0

    def write(self, explanation: Explanation) -> None:
        import numpy as np

        from ..heatmaps.overlay import overlay
        from ..outputs.atomic import atomic_path

        stem = _slug(Path(explanation.source.rstrip("/")).stem or "image", 40)
        for label, score, heat in zip(explanation.labels, explanation.scores, explanation.heatmaps, strict=True):
            base = f"{self.count:05d}-{stem}-{_slug(label)}"
            png, npy = self.directory / f"{base}.png", self.directory / f"{base}.npy"
            with atomic_path(png) as temporary:
                overlay(explanation.image, heat).save(temporary, format="PNG")
            with atomic_path(npy) as temporary, open(temporary, "wb") as handle:
                np.save(handle, heat)
            row = {"source": explanation.source, "label": label, "score": score, "method": self.method,
                   "png": png.name, "npy": npy.name, "width": int(heat.shape[1]), "height": int(heat.shape[0])}
            explanation.files.append(row)
            self.rows.append(row)
        self.count += 1

    def close(self) -> None:
        from ..outputs.atomic import atomic_path

        with atomic_path(self.directory / INDEX_NAME) as temporary:
            temporary.write_text("".join(json.dumps(row) + "\n" for row in self.rows), encoding="utf-8")


__all__ = ["Explanation", "explain", "explanations", "explain_decoded", "chosen_labels", "text_targets",
           "check_source", "check_output_dir", "EXPLAIN_BATCH"]
