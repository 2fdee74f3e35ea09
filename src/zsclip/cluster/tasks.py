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


__all__ = ["embed_on_ray", "evaluate_on_ray", "score_batch"]
