"""The run-level operations on Ray: embed into a store, evaluate with counts aggregated per block.

``embed_on_ray`` is ``zsclip.store.embed`` with the Ray job as its feature source: the driver
compares inputs with the store, writes the same shards and commits the same manifest, so a Ray
run and a local run continue each other's work. ``evaluate_on_ray`` scores every batch where it
is encoded and sends back only counts (top-k hits and the confusion matrix per template set),
never logits; the driver adds them up, which gives exactly the local metrics.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from ..classifier import ZeroShotClassifier
from ..data.collections import LabelledCollection
from ..data.sources import Source
from ..errors import InputError
from ..options import RunOptions
from ..store import EmbeddingStore, embed
from ..tasks.evaluate import EvalResult, NothingDecodedError
from ..tasks.metrics import StreamingMetrics
from .pipeline import encoded_dataset, ray_feature_batches
from .session import RaySettings


def embed_on_ray(store: EmbeddingStore, sources: Sequence[Source], encoder, options: RunOptions,
                 settings: RaySettings, **embed_options):
    """``zsclip embed --ray``: new and changed images encoded on the cluster, shards written here."""
    return embed(store, sources, encoder, options,
                 features=lambda todo: ray_feature_batches(list(todo), encoder, options, settings), **embed_options)


def store_rows(row: dict, masks: dict[int, np.ndarray]) -> list[dict]:
    """A Ray task: one store shard's rows that are in the store's view (path, error, embedding)."""
    import pyarrow.parquet as pq

    index = int(row["index"])
    table = pq.read_table(str(row["shard"]), columns=["path", "error", "embedding"])
    keep = np.unpackbits(masks[index])[: table.num_rows].astype(bool)
    table = table.filter(keep)
    out = []
    for path, error, vector in zip(table.column("path").to_pylist(), table.column("error").to_pylist(),
                                   table.column("embedding").to_pylist(), strict=True):
        out.append({"path": path, "error": error or "",
                    "embedding": np.asarray(vector if vector is not None else [], dtype=np.float32)})
    return out


def head_batch(batch: dict[str, np.ndarray], weights: np.ndarray, scale: float, bias: float | None,
               classnames: list[str], top_k: int, sigmoid: bool) -> dict[str, np.ndarray]:
    """A Ray task: a batch of stored embeddings through a classifier head: top-k labels and scores."""
    errors = [str(error) for error in batch["error"]]
    labels = np.empty(len(errors), dtype=object)
    scores = np.empty(len(errors), dtype=object)
    good = [row for row, error in enumerate(errors) if not error]
    for row in range(len(errors)):
        labels[row], scores[row] = [], []
    if good:
        features = torch.from_numpy(np.stack([np.asarray(batch["embedding"][row], dtype=np.float32) for row in good]))
        logits = scale * features @ torch.from_numpy(weights)
        logits = logits + bias if bias is not None else logits
        k = max(1, min(top_k, len(classnames)))
        order = logits.topk(k, dim=-1).indices
        probabilities = torch.sigmoid(logits) if sigmoid else logits.softmax(dim=-1)
        for position, row in enumerate(good):
            picked = order[position].tolist()
            labels[row] = [classnames[i] for i in picked]
            scores[row] = probabilities[position, picked].tolist()
    return {"path": batch["path"], "error": batch["error"], "labels": labels, "scores": scores}


def classify_store_on_ray(store: EmbeddingStore, classifier: ZeroShotClassifier, *, top_k: int = 5,
                          scale: float | None = None, settings: RaySettings | None = None,
                          batch_size: int = 8192):
    """``classify_store`` on Ray: one read task per shard (its rows in the view), heads in tasks."""
    from ..tasks.classify import Prediction
    from .session import connect

    store.check_classifier(classifier)
    ray = connect(settings or RaySettings())
    masks = {index: np.packbits(mask) for index, mask in store.view_masks().items()}
    shards = [{"shard": str(path), "index": index} for index, path in enumerate(store.shard_files) if index in masks]
    if not shards:
        raise InputError(f"store {store.folder} is empty or unreadable")
    dataset = ray.data.from_items(shards, override_num_blocks=len(shards)).flat_map(
        store_rows, fn_kwargs={"masks": masks}).map_batches(
        head_batch, batch_size=batch_size, batch_format="numpy", num_cpus=1,
        fn_kwargs={"weights": classifier.weights.numpy(), "scale": float(classifier.logit_scale if scale is None
                                                                         else scale),
                   "bias": classifier.logit_bias, "classnames": list(classifier.classnames), "top_k": top_k,
                   "sigmoid": classifier.is_sigmoid})
    for row in dataset.iter_rows():
        error = str(row["error"]) or None
        yield Prediction(str(row["path"]), list(row["labels"]), [float(s) for s in row["scores"]], error)


def score_batch(batch: dict[str, np.ndarray], heads: dict[str, tuple[np.ndarray, float, float | None]],
                num_classes: int) -> dict[str, np.ndarray]:
    """A Ray task: one encoded batch scored by every head; one row of counts and the failures."""
    ok = batch["ok"].astype(bool)
    features = torch.from_numpy(np.ascontiguousarray(batch["embedding"][ok]))
    targets = torch.as_tensor(batch["target"][ok].astype(np.int64))
    states = {}
    for name, (weights, scale, bias) in heads.items():
        metrics = StreamingMetrics(num_classes)
        if len(features):
            logits = scale * features @ torch.from_numpy(weights)
            metrics.update(logits + bias if bias is not None else logits, targets)
        state = metrics.state()
        states[name] = {"confusion": state["confusion"].tolist(), "hits": state["hits"], "count": state["count"]}
    failures = [{"path": str(n), "error": str(e)} for n, e, good in zip(batch["name"], batch["error"], ok,
                                                                         strict=True) if not good]
    return {"counts": np.array([json.dumps(states)], dtype=object),
            "failures": np.array([json.dumps(failures)], dtype=object)}


def evaluate_on_ray(collection: LabelledCollection, encoder, template_sets: str | Sequence[str], *,
                    classes=None, options: RunOptions | None = None, settings: RaySettings | None = None,
                    cache: bool = True, cache_dir: str | os.PathLike | None = None) -> EvalResult:
    """``zsclip eval --ray``: the same metrics as ``evaluate`` on the same data."""
    options = options or RunOptions()
    template_sets = [template_sets] if isinstance(template_sets, str) else list(template_sets)
    classes = collection.classnames if classes is None else classes
    classifiers = {name: ZeroShotClassifier.build(encoder, classes, name, precision=options.precision, cache=cache,
                                                  cache_dir=cache_dir) for name in template_sets}
    heads = {name: (clf.weights.numpy(), float(clf.logit_scale), clf.logit_bias) for name, clf in classifiers.items()}
    num_classes = len(collection.classnames)
    metrics = {name: StreamingMetrics(num_classes) for name in template_sets}
    failures: list[dict] = []
    start = time.perf_counter()
    dataset = encoded_dataset(collection.items, encoder, options, settings or RaySettings(), shards=collection.shards,
                              classnames=collection.classnames).map_batches(
        score_batch, batch_size=options.batch_size, batch_format="numpy", num_cpus=1,
        fn_kwargs={"heads": heads, "num_classes": num_classes})
    for row in dataset.iter_rows():
        for name, state in json.loads(row["counts"]).items():
            metrics[name].absorb({"confusion": np.array(state["confusion"]),
                                  "hits": {int(k): v for k, v in state["hits"].items()}, "count": state["count"]})
        failures += json.loads(row["failures"])
    seconds = time.perf_counter() - start
    if not any(m.count for m in metrics.values()):
        first = f"; first: {failures[0]['path']}: {failures[0]['error']}" if failures else ""
        raise NothingDecodedError(f"none of the {len(failures)} images could be read{first}", failures)
    results = {name: m.result() for name, m in metrics.items()}
    count = next(iter(results.values()))["num_images"]
    return EvalResult(collection.classnames, results, failures, count, count / seconds if seconds > 0 else 0.0)


__all__ = ["classify_store_on_ray", "embed_on_ray", "evaluate_on_ray", "head_batch", "score_batch", "store_rows"]
