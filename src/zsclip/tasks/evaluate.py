"""Zero-shot evaluation: images are encoded once, every template set's classifier scores them.

Images are the expensive part and classifiers are cheap (and cached), so comparing template sets
costs one pass over the data. Metrics are streamed (see metrics.py); images that fail to decode
are counted and listed, never fatal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..classifier import ZeroShotClassifier
from ..data.collections import LabelledCollection, open_collection
from ..encoders.base import Encoder
from ..errors import InputError
from ..options import RunOptions
from ..pipeline import labelled_feature_batches
from ..prompts import DEFAULT_TEMPLATES
from .metrics import StreamingMetrics
from .models import resolve_model


class NothingDecodedError(InputError):
    """Every image of the collection failed to decode: no metrics exist. ``failures`` says why."""

    def __init__(self, message: str, failures: list[dict]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass
class EvalResult:
    """Metrics per template set (in the order given), failures and throughput."""

    classnames: list[str]
    metrics: dict[str, dict]
    failures: list[dict] = field(default_factory=list)
    num_images: int = 0
    images_per_second: float = 0.0


def evaluate(
    collection: LabelledCollection | str | os.PathLike,
    encoder: Encoder | None = None,
    template_sets: str | Sequence[str] = DEFAULT_TEMPLATES,
    *,
    classes: str | Sequence[str | Sequence[str]] | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    options: RunOptions | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    on_prediction: Callable[[str, int, list[int]], None] | None = None,
) -> EvalResult:
    """Evaluate a model zero-shot on a labelled collection with each of ``template_sets``.

    ``collection``: a ``LabelledCollection`` or what ``open_collection`` opens (a class-per-folder
    tree, a CSV/JSONL manifest, WebDataset shards with ``classes``). The model is ``encoder``, else
    ``model``/``pretrained`` (default ViT-B-32). ``classes`` overrides what the classifiers are built
    from (synonym lists, or a named list such as "imagenet1k"), in the collection's class order.
    Images that fail to decode are counted in ``failures``, never fatal.
    ``on_prediction(path, target, top5)`` is called for every decoded image with the first
    template set's ranked class indices.
    """
    options = options or RunOptions()
    if not isinstance(collection, LabelledCollection):
        given = None if classes is None or isinstance(classes, str) else [
            [name] if isinstance(name, str) else list(name) for name in classes]
        collection, opened_classes = open_collection(Path(collection), given)
        classes = classes if classes is not None else opened_classes
    if isinstance(template_sets, str):
        template_sets = [template_sets]
    template_sets = list(template_sets)
    if not template_sets or any(not isinstance(name, str) or not name.strip() for name in template_sets):
        raise InputError(f"template sets {template_sets!r}: name at least one, e.g. openai-imagenet (several: "
                         "openai-imagenet,photo), or a template file")
    if not collection.items and not collection.shards:
        raise InputError("the collection has no images to evaluate")
    encoder = encoder or resolve_model(model, pretrained, options)
    classes = collection.classnames if classes is None else classes
    classifiers = {name: ZeroShotClassifier.build(encoder, classes, name, precision=options.precision,
                                                  cache=cache, cache_dir=cache_dir)
                   for name in template_sets}
    metrics = {name: StreamingMetrics(len(collection.classnames)) for name in template_sets}
    failures: list[dict] = []
    start = time.perf_counter()
    total = len(collection.items) or None  # shards are streamed: their size is unknown up front
    with tqdm(total=total, unit="img", desc="evaluating", disable=not progress, leave=False) as bar:
        for names, errors, batch_targets, features in labelled_feature_batches(collection, encoder, options):
            decoded = [t for t, error in zip(batch_targets, errors, strict=True) if error is None]
            failures += [{"path": n, "error": e} for n, e in zip(names, errors, strict=True) if e is not None]
            if decoded:
                for index, (name, clf) in enumerate(classifiers.items()):
                    logits = clf.logits(features)
                    metrics[name].update(logits, torch.tensor(decoded))
                    if index == 0 and on_prediction is not None:
                        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices.tolist()
                        good = [n for n, error in zip(names, errors, strict=True) if error is None]
                        for path, target, top in zip(good, decoded, ranked, strict=True):
                            on_prediction(path, target, top)
            bar.update(len(names))
    seconds = time.perf_counter() - start
    if not any(m.count for m in metrics.values()):
        first = f"; first: {failures[0]['path']}: {failures[0]['error']}" if failures else ""
        raise NothingDecodedError(f"none of the {len(failures)} images could be read{first}", failures)
    results = {name: m.result() for name, m in metrics.items()}
    evaluated = next(iter(results.values()))["num_images"] if results else 0
    return EvalResult(collection.classnames, results, failures, evaluated,
                      evaluated / seconds if seconds > 0 else 0.0)


def benchmark_record(result: EvalResult, dataset: str, model: str, pretrained: str | None) -> dict:
    """CLIP_benchmark's JSON layout for the first template set, plus zsclip's extras."""
    first, *_ = result.metrics
    headline = ("acc1", "acc5", "mean_per_class_recall")
    record = {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained or "",
        "task": "zeroshot_classification",
        "language": "en",
        "metrics": {key: result.metrics[first][key] for key in headline},
        "templates": first,
        "num_images": result.num_images,
        "num_failed": len(result.failures),
        "failures": result.failures,
        "images_per_second": round(result.images_per_second, 2),
        "classnames": result.classnames,
        "per_class": {key: result.metrics[first][key] for key in ("per_class_recall", "per_class_precision")},
        "confusion_matrix": result.metrics[first]["confusion_matrix"],
    }
    if len(result.metrics) > 1:
        record["template_comparison"] = {name: {key: m[key] for key in headline}
                                         for name, m in result.metrics.items()}
    return record
