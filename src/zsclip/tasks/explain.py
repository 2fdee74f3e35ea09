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
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, OutputError
from ..heatmaps.explained import Explanation, chosen_labels, decode_chunk, explain_decoded
from ..job import HeadOptions, Job, open_source, plan
from ..options import RunOptions
from .models import Classes, Templates

if TYPE_CHECKING:
    import torch

    from ..encoders.base import Encoder
    from ..heads import Head

#: Images per heatmap batch: the gradient method keeps one batch's graph alive, so this bounds memory.
EXPLAIN_BATCH = 8
INDEX_NAME = "explained.jsonl"


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
    ray=None,
) -> Iterator[Explanation]:
    """Classify ``inputs`` (image files, folders, globs, URLs) and explain each answer with heatmaps.

    The head as in ``zsclip.classify`` (a rejected image explains nothing); ``top_k`` flat labels are
    explained per image (a tree: the chosen path; multi-label: every label over its threshold); ``texts``
    explains those classes or any texts on every image instead. ``method``: "patch" (training-free, the
    default) or "gradcam"; ``upscale``: run the image tower on pixels enlarged this much (None: enough for
    an 8x8 grid). With ``output_dir`` each
    heatmap is written as NAME.png (overlay) and NAME.npy (float32 values, the image's size), listed in
    ``explained.jsonl``. Returns an iterator of ``Explanation``s in input order; a bad image is one with an
    error, never an exception that ends the run. ``ray``: True / "auto" / an address / RaySettings explains on
    Ray actors that each hold the model and the head (the files are written here, as they arrive in order).
    """
    from ..heatmaps import check_method

    check_method(method or "patch")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k {top_k!r}: explain at least one label per image")
    source = open_source(inputs)
    check_source(source)
    head_options = HeadOptions(labels=labels, classifier=classifier, templates=templates, descriptions=descriptions,
                               labels_tree=labels_tree, tree_mode=tree_mode, beam=beam, reject=reject,
                               reject_calibrate=reject_calibrate, tpr=tpr, reject_score=reject_score,
                               reject_label=reject_label, multi_label=multi_label, multi_score=multi_score,
                               threshold=threshold, calibrate=calibrate, target_precision=target_precision)
    head_options.check()
    if not head_options.is_tree() and not head_options.is_multi_label():
        head_options.top_k = top_k
    directory = check_output_dir(output_dir) if output_dir is not None else None
    job = plan(source, head_options, encoder=encoder, model=model, pretrained=pretrained, run=options, cache=cache,
               cache_dir=cache_dir, ray=ray, encoding_actors=False)
    return explanations(job, top_k=top_k, texts=texts, method=method, upscale=upscale, directory=directory,
                        templates=templates)


def explanations(job: Job, *, top_k: int = 1, texts: Sequence[str] | None = None, method: str | None = None,
                 upscale: int | None = None, directory: Path | None = None, templates: Templates = None,
                 keep_images: bool = False) -> Iterator[Explanation]:
    """The explanations of a planned job (an image source, a model), EXPLAIN_BATCH images at a time: in this
    process, or on Ray actors when the job was planned with ``ray`` (``zsclip.cluster.explain``)."""
    fixed = text_targets(job.head, job.encoder, texts, templates) if texts else None
    writer = _Writer(directory, method) if directory is not None else None
    sources = job.source.sources
    chunks = [sources[start:start + EXPLAIN_BATCH] for start in range(0, len(sources), EXPLAIN_BATCH)]
    settings = {"top_k": top_k, "fixed": fixed, "method": method, "upscale": upscale}
    if job.ray is not None:
        from ..cluster.explain import ray_explanations

        batches = ray_explanations(chunks, job.head, job.encoder, job.run, job.ray, **settings)
    else:
        batches = (explain_decoded(job.head, job.encoder, decode_chunk(chunk, job.run), precision=job.run.precision,
                                   **settings) for chunk in chunks)
    try:
        for batch in batches:
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
