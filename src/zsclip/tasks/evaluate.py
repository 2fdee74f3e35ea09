"""Zero-shot evaluation: the images are encoded once, every head scores them, metrics stream.

One job: a labelled source (class-per-folder tree, manifest, WebDataset shards, a labelled store)
on a runner (this process or Ray), and one or more heads scored on the same features: a built
classifier per template set (all compared on one pass), a classifier file of any kind, or a label
tree in each of its modes. ``unknown`` images add open-set AUROC / FPR. Images that fail are
counted and listed, never fatal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..calibration.measures import CalibrationMeasures
from ..classifier import ZeroShotClassifier
from ..data.collections import LabelledCollection
from ..data.video import is_note
from ..encoders.base import Encoder
from ..errors import InputError
from ..hierarchy import MODES, OpenSetMetrics, TreeClassifier, tree_targets
from ..hierarchy.metrics import TreeMetrics
from ..job import HeadOptions, LabelledData, features, open_source, resolve_encoder
from ..job.heads import cached_classifier, read_head_files
from ..job.plan import check_ray, ray_settings, say
from ..options import RunOptions
from ..precision import known_without_torch, resolve_precision
from ..prompts import DEFAULT_TEMPLATES
from .metrics import StreamingMetrics


class NothingDecodedError(InputError):
    """Every image of the collection failed to decode: no metrics exist. ``failures`` says why."""

    def __init__(self, message: str, failures: list[dict]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass
class EvalResult:
    """Metrics per flat head (a template set's name, or the classifier file's), or per tree mode
    (``tree``), open-set figures (``openset``, with unknown images), failures and throughput."""

    classnames: list[str]
    metrics: dict[str, dict]
    failures: list[dict] = field(default_factory=list)
    num_images: int = 0
    images_per_second: float = 0.0
    tree: dict | None = None
    openset: dict | None = None
    model: str | None = None
    pretrained: str | None = None
    #: the precision the run resolved (``"auto"`` made concrete for its device: zsclip.precision)
    precision: str | None = None
    #: per flat head, the measures after a collection-level correction (``transductive``), side by side
    transductive: dict | None = None
    #: the flat classifiers scored, by head name (``zsclip calibrate`` saves the one it fitted)
    classifiers: dict = field(default_factory=dict, repr=False)


def evaluate(
    collection,
    encoder: Encoder | None = None,
    template_sets: str | Sequence[str] = DEFAULT_TEMPLATES,
    *,
    classes: str | Sequence[str | Sequence[str]] | None = None,
    classifier=None,
    labels_tree=None,
    tree_modes: Sequence[str] | None = None,
    beam: int | None = None,
    descriptions=None,
    unknown=None,
    tpr: float = 0.95,
    dataset: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    options: RunOptions | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    on_prediction: Callable[[str, str, list[str]], None] | None = None,
    on_logits: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
    on_tree: Callable | None = None,
    transductive: str | None = None,
    ray=None,
) -> EvalResult:
    """Evaluate zero-shot on labelled data: CLIP_benchmark's metrics per head, on one pass.

    ``collection``: a ``LabelledCollection`` or what ``open_collection`` opens (a class-per-folder
    tree, a CSV/JSONL manifest, WebDataset shards with ``classes``), or an embedding store made with
    ``zsclip embed --labelled``. The heads: a classifier per template set in ``template_sets``
    (with ``descriptions`` added to each class's prompts), or ``classifier`` (a file or object of
    any kind, whose class names must cover the data's), or ``labels_tree`` (metrics per level for
    each of ``tree_modes``). ``unknown``: images of none of the classes, for open-set AUROC / FPR at
    ``tpr``. The model is ``encoder``, a store's own, a classifier file's own, else ``model``.
    ``on_prediction(path, true_label, top5_labels)`` is called per decoded image (the first flat head's ranking);
    ``on_logits(head, logits [B, C], targets [B])`` per batch and flat head (``zsclip calibrate`` fits on them);
    ``on_tree(mode, TreePrediction, true nodes [B])`` per batch and tree mode (a tree's per-level calibration).
    Each flat head also gets calibration measures (ECE, NLL, Brier, AURC: ``zsclip.calibration.measures``).
    ``transductive`` ("em", "ot", "ot-em"): each flat head is also measured after the collection-level
    correction, in ``EvalResult.transductive``.
    """
    options = options or RunOptions()
    template_sets = [template_sets] if isinstance(template_sets, str) else list(template_sets)
    if classifier is None and (not template_sets or any(not isinstance(n, str) or not n.strip()
                                                        for n in template_sets)):
        raise InputError(f"template sets {template_sets!r}: name at least one, e.g. openai-imagenet (several: "
                         "openai-imagenet,photo), or a template file")
    if classifier is not None and (descriptions is not None or labels_tree is not None or classes is not None):
        raise InputError("a classifier file holds its classes and prompts: leave out --labels-file, --descriptions "
                         "and --labels-tree")
    if labels_tree is not None and classes is not None:
        raise InputError("the label tree names the classes: leave out --labels-file")
    if transductive is not None:
        from ..calibration import METHODS

        if transductive not in METHODS:
            raise InputError(f"unknown --transductive method {transductive!r}: use {', '.join(METHODS)}")
        if labels_tree is not None or unknown is not None:
            raise InputError("--transductive corrects flat labels: leave out --labels-tree and --unknown")
    labels_tree, descriptions = read_head_files(labels_tree, descriptions)  # a bad file: one line, before a model
    head_options = HeadOptions(classifier=classifier) if classifier is not None else None
    if beam is not None and labels_tree is None and not (head_options is not None and head_options.is_tree()):
        raise InputError("--beam applies to a label tree (--labels-tree or a tree classifier file)")
    given = None if classes is None or isinstance(classes, str) else [
        [name] if isinstance(name, str) else list(name) for name in classes]
    source = LabelledData(collection) if isinstance(collection, LabelledCollection) else open_source(
        collection, labelled=True, classes=given, dataset=dataset, model=model)
    if source.multi_label:
        from ..job.sources import require_labels

        require_labels(source, "eval")  # several labels per image: refused with "add --multi-label"
    if classes is None:
        classes = getattr(source, "build_classes", None)
    settings = ray_settings(ray)
    check_ray(source, settings)
    if isinstance(source, LabelledData) and not source.collection.items and not source.collection.shards:
        raise InputError("the collection has no images to evaluate")
    cached: dict[str, ZeroShotClassifier] = {}
    if classifier is None and labels_tree is None and unknown is None and encoder is None and not source.needs_model:
        for name in template_sets:  # a store and labels seen before: classifiers from the cache, no model
            wanted = HeadOptions(labels=classes if classes is not None else list(source.classnames), templates=name,
                                 descriptions=descriptions)
            hit = cached_classifier(wanted, source.fingerprint, options, cache=cache, cache_dir=cache_dir,
                                    embed_dim=source.embed_dim)
            if hit is None:
                cached.clear()
                break
            cached[name] = hit
        if cached:
            say(f"zsclip: classifiers for these labels cached for {source.model}: no model loaded")
    needs_model = source.needs_model or (classifier is None and not cached) or unknown is not None
    encoder = resolve_encoder(source, head_options, encoder=encoder, model=model,
                              pretrained=pretrained, run=options, needs_model=needs_model, ray=settings)
    if encoder is not None:
        source.check_encoder(encoder)
    build = {"precision": options.precision, "cache": cache, "cache_dir": cache_dir}
    data_classes = list(source.classnames)
    build_from = classes if classes is not None else data_classes
    flat: dict[str, tuple[ZeroShotClassifier, torch.Tensor]] = {}
    tree_classifier = None
    if classifier is not None:
        loaded = head_options._loaded()
        if isinstance(loaded, TreeClassifier):
            tree_classifier = loaded
        else:
            flat[_file_name(classifier, loaded)] = (loaded, _class_map(data_classes, loaded.classnames))
        if encoder is not None:
            (tree_classifier.node_classifier if tree_classifier else loaded).check_encoder(encoder)
    elif labels_tree is not None:
        tree_classifier = TreeClassifier.build(encoder, labels_tree, template_sets[0], descriptions=descriptions,
                                               **build)
    else:
        from ..hierarchy.descriptions import build_classifier

        for name in template_sets:
            built = cached.get(name) or build_classifier(encoder, build_from, name, descriptions, **build)
            flat[name] = (built, torch.arange(len(data_classes)))
    for clf, _ in flat.values():
        source.check_classifier(clf)
    if transductive is not None and tree_classifier is not None:
        raise InputError("--transductive corrects flat labels: a tree classifier file answers per level")
    if tree_classifier is not None:
        source.check_classifier(tree_classifier.node_classifier)
        node_of = torch.tensor(tree_targets(tree_classifier.tree, data_classes))
        modes = list(tree_modes or (MODES if tree_classifier.tree.depth > 1 else ("flat",)))
        tree_metrics = {mode: TreeMetrics(tree_classifier.tree) for mode in modes}
    metrics = {name: StreamingMetrics(len(clf.classnames)) for name, (clf, _) in flat.items()}
    measures = {name: CalibrationMeasures() for name in flat}
    kept = _Kept(flat, transductive)
    openset_classifier = tree_classifier.leaf_classifier if tree_classifier is not None else (
        next(iter(flat.values()))[0] if flat else None)
    openset = OpenSetMetrics(tpr=tpr) if unknown is not None else None
    failures: list[dict] = []
    counted = 0
    start = time.perf_counter()
    with tqdm(total=len(source) or None, unit="img", desc="evaluating", disable=not progress, leave=False) as bar:
        for batch in features(source, encoder, options, settings):
            failures += [{"path": n, "error": e} for n, e in zip(batch.ids, batch.errors, strict=True)
                         if e and not is_note(e)]  # a video cut short: a note, its rows stand
            targets = torch.tensor(batch.good_targets(), dtype=torch.long)
            bar.update(len(batch.ids))
            if not len(targets):
                continue
            counted += len(targets)
            good_features = batch.features
            for index, (name, (clf, class_map)) in enumerate(flat.items()):
                logits = clf.logits(good_features)
                mapped = class_map[targets]
                metrics[name].update(logits[mapped >= 0], mapped[mapped >= 0])
                known_logits, known_targets = logits[mapped >= 0].float().numpy(), mapped[mapped >= 0].numpy()
                measures[name].update(known_logits, known_targets)
                kept.add(name, known_logits, known_targets)
                if on_logits is not None:
                    on_logits(name, logits[mapped >= 0], mapped[mapped >= 0])
                if index == 0 and on_prediction is not None:
                    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices.tolist()
                    good = [n for n, e in zip(batch.ids, batch.errors, strict=True) if e is None]
                    for path, target, top in zip(good, mapped.tolist(), ranked, strict=True):
                        on_prediction(path, clf.classnames[target], [clf.classnames[i] for i in top])
            if tree_classifier is not None:
                for mode in modes:
                    prediction = tree_classifier.predict(good_features, mode, beam or 1)
                    tree_metrics[mode].update(prediction.nodes, node_of[targets])
                    if on_tree is not None:
                        on_tree(mode, prediction, node_of[targets])
            if openset is not None:
                openset.update(openset_classifier, good_features, known=True)
    if openset is not None:
        unknown_source = open_source(unknown)
        for batch in features(unknown_source, encoder, options, settings):
            failures += [{"path": n, "error": e} for n, e in zip(batch.ids, batch.errors, strict=True)
                         if e and not is_note(e)]  # a video cut short: a note, its rows stand
            openset.update(openset_classifier, batch.features, known=False)
    seconds = time.perf_counter() - start
    if not counted:
        first = f"; first: {failures[0]['path']}: {failures[0]['error']}" if failures else ""
        raise NothingDecodedError(f"none of the {len(failures)} images could be read{first}", failures)
    results = {name: {**m.result(), "calibration": measures[name].result()} for name, m in metrics.items()}
    corrected = kept.finish()
    tree = None
    if tree_classifier is not None:
        tree = {"modes": {mode: m.result() for mode, m in tree_metrics.items()}, "beam": beam or 1,
                "tree": tree_classifier.tree.to_data()}
    used = _used_model(encoder, source, flat, tree_classifier)
    # a classifier file's metrics are indexed by its own classes (it may hold more than the data names)
    reported = list(next(iter(flat.values()))[0].classnames) if classifier is not None and flat else data_classes
    return EvalResult(reported, results, failures, counted, counted / seconds if seconds > 0 else 0.0, tree,
                      openset.result() if openset is not None else None, *used,
                      precision=resolved_precision(options, encoder), transductive=corrected,
                      classifiers={name: clf for name, (clf, _) in flat.items()})


def resolved_precision(options: RunOptions, encoder: Encoder | None) -> str:
    """What ``options.precision`` means for this run: on the model's device, or (no model loaded: stored
    features and cached classifiers) on the device the options name, through the one resolver."""
    if encoder is not None:
        return resolve_precision(options.precision, encoder.device)
    known = known_without_torch(options.precision, options.model_device)
    if known is not None:
        return known
    from ..encoders import resolve_device

    return resolve_precision(options.precision, resolve_device(options.model_device))


class _Kept:
    """Each flat head's log-probabilities and targets, kept on disk through the pass when a collection-level
    correction is asked for (``ScoreBuffer``), then measured again after it."""

    def __init__(self, flat: dict, method: str | None) -> None:
        from ..calibration.scores import ScoreBuffer

        self.method = method
        self.buffers = {name: ScoreBuffer(len(clf.classnames)) for name, (clf, _) in flat.items()} if method else {}
        self.targets: dict[str, list] = {name: [] for name in self.buffers}

    def add(self, name: str, logits, targets) -> None:
        if self.method is None:
            return
        from ..calibration.measures import log_softmax

        self.buffers[name].append(log_softmax(logits))
        self.targets[name].append(targets.astype("int64"))

    def finish(self) -> dict | None:
        if self.method is None:
            return None
        import numpy as np

        from ..calibration.transductive import class_log_weights

        results = {}
        try:
            for name, buffer in self.buffers.items():
                fitted = class_log_weights(self.method, buffer.chunks, buffer.num_classes)
                targets = np.concatenate(self.targets[name]) if self.targets[name] else np.zeros(0, "int64")
                metrics, measures, start = StreamingMetrics(buffer.num_classes), CalibrationMeasures(), 0
                for block in buffer.chunks():
                    corrected = block + fitted["log_weights"].astype("float32")
                    batch_targets = targets[start:start + len(block)]
                    start += len(block)
                    metrics.update(torch.from_numpy(corrected), torch.from_numpy(batch_targets))
                    measures.update(corrected, batch_targets)
                results[name] = {"method": self.method, "iterations": fitted["iterations"],
                                 "prior": [round(float(p), 6) for p in fitted["prior"]],
                                 **metrics.result(), "calibration": measures.result()}
        finally:
            for buffer in self.buffers.values():
                buffer.close()
        return results


def _used_model(encoder, source, flat, tree_classifier) -> tuple[str | None, str | None]:
    """(model, pretrained) the evaluated features came from, for the results record."""
    if encoder is not None:
        return encoder.name, getattr(encoder, "pretrained", None)
    if source.model is not None:
        return source.model, source.pretrained
    clf = tree_classifier.node_classifier if tree_classifier is not None else next(iter(flat.values()))[0]
    return clf.provenance.get("model"), clf.provenance.get("pretrained")


def _file_name(given, loaded: ZeroShotClassifier) -> str:
    if isinstance(given, (str, os.PathLike)):
        return os.path.basename(os.fspath(given))
    return loaded.provenance.get("adaptation", {}).get("method") or "classifier"


def _class_map(data_classes: list[str], classifier_classes: list[str]) -> torch.Tensor:
    """The classifier's index of each of the data's classes (a classifier file may order its classes
    differently, or hold more): refused in one line when a data class is missing."""
    lookup = {name: index for index, name in enumerate(classifier_classes)}
    missing = [name for name in data_classes if name not in lookup]
    if missing:
        raise InputError(f"the classifier has no class {missing[0]!r} ({len(missing)} of the data's "
                         f"{len(data_classes)} classes are missing): evaluate it on data of its own classes "
                         f"({', '.join(classifier_classes[:5])}{', ...' if len(classifier_classes) > 5 else ''})")
    return torch.tensor([lookup[name] for name in data_classes], dtype=torch.long)


def benchmark_record(result: EvalResult, dataset: str, model: str, pretrained: str | None) -> dict:
    """CLIP_benchmark's JSON layout for the first flat head, plus zsclip's extras (template
    comparison, per-class metrics, failures); a label tree's per-level metrics under ``tree``, and
    open-set figures under ``openset``."""
    record = {"dataset": dataset, "model": model, "pretrained": pretrained or "", "task": "zeroshot_classification",
              "language": "en"}
    if result.precision is not None:
        record["precision"] = result.precision
    headline = ("acc1", "acc5", "mean_per_class_recall")
    if result.metrics:
        first = next(iter(result.metrics))
        record.update({
            "metrics": {key: result.metrics[first][key] for key in headline},
            "templates": first,
        })
    record.update({"num_images": result.num_images, "num_failed": len(result.failures), "failures": result.failures,
                   "images_per_second": round(result.images_per_second, 2), "classnames": result.classnames})
    if result.metrics:
        record["calibration"] = result.metrics[first]["calibration"]
        record["per_class"] = {key: result.metrics[first][key] for key in ("per_class_recall", "per_class_precision")}
        record["confusion_matrix"] = result.metrics[first]["confusion_matrix"]
        if len(result.metrics) > 1:
            record["template_comparison"] = {name: {**{key: m[key] for key in headline},
                                                    **{key: m["calibration"][key] for key in CALIBRATION_HEADLINE}}
                                             for name, m in result.metrics.items()}
    if result.tree is not None:
        record["tree"] = result.tree["tree"]
        record["modes"] = result.tree["modes"]
        record["beam"] = result.tree["beam"]
    if result.openset is not None:
        record["openset"] = result.openset
    if result.transductive:
        corrected = result.transductive[first]
        record["transductive"] = {
            "method": corrected["method"], "iterations": corrected["iterations"], "prior": corrected["prior"],
            "metrics": {key: corrected[key] for key in headline},
            "without": {key: result.metrics[first][key] for key in headline},
            "calibration": {key: corrected["calibration"][key] for key in CALIBRATION_HEADLINE},
            "per_class_recall": corrected["per_class_recall"], "confusion_matrix": corrected["confusion_matrix"]}
    return record


#: The calibration figures shown beside accuracy (template comparison, transductive side by side).
CALIBRATION_HEADLINE = ("ece", "nll", "brier", "aurc")


__all__ = ["EvalResult", "NothingDecodedError", "benchmark_record", "evaluate"]
