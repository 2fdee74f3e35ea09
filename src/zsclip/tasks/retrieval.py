"""Retrieval evaluation: image-to-text and text-to-image recall@k, as CLIP_benchmark reports it.

Data: a ``path,caption`` file (several captions per image), whose images go through the pipeline
(in this process or on Ray), or an embedding store with such a captions file (images embedded once,
no image decoded). Captions are encoded by the model's text tower. The metrics are CLIP_benchmark
1.6.2's ``zeroshot_retrieval`` (``image_retrieval_recall@k``, ``text_retrieval_recall@k``), computed
on the same features the same way (``multilabel_metrics.retrieval_recall``). An image that cannot be
read is left out with its captions, and listed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch

from ..data.collections import read_captions
from ..data.sources import Source
from ..errors import InputError
from ..job import ImageFiles, features, open_source, resolve_encoder
from ..job.plan import check_ray, ray_settings
from ..job.sources import is_store
from ..options import RunOptions
from ..precision import resolve_precision, text_precision
from .multilabel_metrics import RECALL_K, retrieval_recall


def evaluate_retrieval(data, captions=None, *, encoder=None, model: str | None = None, pretrained: str | None = None,
                       options: RunOptions | None = None, dataset: str | None = None, ks: Sequence[int] = RECALL_K,
                       ray=None) -> dict:
    """Recall@k both ways. ``data``: a captions file (path,caption), or a store with ``captions``."""
    options = options or RunOptions()
    store = isinstance(data, (str, os.PathLike)) and is_store(data)
    if store and captions is None:
        raise InputError("a store holds images, not captions: add --captions FILE (path,caption)")
    if not store and captions is not None:
        raise InputError("--captions goes with a store (--data photos.zse); a captions file as --data holds both")
    rows = read_captions(captions if store else data)
    images = list(dict.fromkeys(image for image, _ in rows))
    source = open_source(data, model=model) if store else ImageFiles([Source(image) for image in images])
    settings = ray_settings(ray)
    check_ray(source, settings)
    encoder = resolve_encoder(source, None, encoder=encoder, model=model, pretrained=pretrained, run=options,
                              needs_model=True, ray=settings)
    source.check_encoder(encoder)
    start = time.perf_counter()
    found: dict[str, torch.Tensor] = {}
    failures: list[dict] = []
    for batch in features(source, encoder, options, settings):
        good = iter(batch.features)
        keys = batch.keys or [_key(name) for name in batch.ids]  # a store row: its recorded absolute path
        for name, key, error in zip(batch.ids, keys, batch.errors, strict=True):
            if error is not None:
                failures.append({"path": name, "error": error})
            else:
                found[key] = next(good)
    kept = [image for image in images if _key(image) in found]
    if store:
        failures += [{"path": image, "error": "not in the store"} for image in images if _key(image) not in found]
    if not kept:
        first = f"; first: {failures[0]['path']}: {failures[0]['error']}" if failures else ""
        raise InputError(f"none of the {len(images)} captioned images could be read{first}")
    index = {image: i for i, image in enumerate(kept)}
    texts = [(caption, index[image]) for image, caption in rows if image in index]
    precision = text_precision(resolve_precision(options.precision, encoder.device))
    text_features = encoder.encode_text([caption for caption, _ in texts], precision=precision,
                                        batch_size=options.batch_size)
    image_features = torch.stack([found[_key(image)] for image in kept]).float()
    metrics = retrieval_recall(image_features, text_features, [owner for _, owner in texts], ks)
    seconds = time.perf_counter() - start
    return {"dataset": dataset or os.path.basename(os.fspath(captions if store else data)), "model": encoder.name,
            "pretrained": getattr(encoder, "pretrained", None) or "", "task": "zeroshot_retrieval", "language": "en",
            "metrics": metrics, "num_images": len(kept), "num_captions": len(texts), "num_failed": len(failures),
            "failures": failures, "seconds": round(seconds, 3)}


def _key(path: str) -> str:
    """Paths match across a captions file and a store as absolute real paths (URLs as they are)."""
    return path if "://" in path else os.path.realpath(path)


__all__ = ["evaluate_retrieval"]
