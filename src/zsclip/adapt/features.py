"""A labelled collection's images, encoded once, as (features, targets), cached on disk.

Every adaptation method here (template selection, linear probe, Tip-Adapter, the alpha sweeps)
works on image features only, so the image pass is paid once per (model, data) and reused.
The cache key is the encoder's fingerprint, the precision and the identity of every file (path,
size, modification time): change any image or the model and the features are recomputed. The
cache is safetensors + JSON metadata: never pickle, nothing executes when it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..classifier.cache import cache_dir as default_cache_dir
from ..data.collections import LabelledCollection
from ..data.images import MAX_PIXELS
from ..encoders.base import Encoder
from ..errors import InputError, ZsclipWarning
from ..options import RunOptions
from ..outputs.atomic import atomic_path
from ..pipeline.features import labelled_feature_batches
from ..precision import resolve_precision

_FORMAT = "zsclip-features/1"


@dataclass
class LabelledFeatures:
    """Normalised image features [N, D] with their class indices [N], for the images that decoded.

    ``failures`` lists the images that did not decode ({"path", "error"}): reported, never used.
    ``data_fingerprint`` names the files (and class names) the features came from; it goes into
    the provenance of everything adapted from them.
    """

    features: torch.Tensor
    targets: torch.Tensor
    names: list[str]
    classnames: list[str]
    model_fingerprint: str
    data_fingerprint: str
    failures: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: Sequence[int] | torch.Tensor) -> LabelledFeatures:
        """The rows ``index`` (failures are kept: they describe the source data)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return LabelledFeatures(self.features[index], self.targets[index], [self.names[i] for i in index.tolist()],
                                self.classnames, self.model_fingerprint, self.data_fingerprint, self.failures)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.targets, minlength=len(self.classnames)).tolist()

    def few_shot(self, shots: int, seed: int = 0) -> LabelledFeatures:
        """``shots`` images of every class, drawn reproducibly from ``seed``.

        Refuses (InputError) when a class has fewer decoded images than ``shots``: a head trained on
        fewer shots than asked would be reported as something it is not.
        """
        check_shots(self, shots)
        rng = random.Random(seed)
        chosen: list[int] = []
        for target in range(len(self.classnames)):
            rows = (self.targets == target).nonzero().flatten().tolist()
            chosen += sorted(rng.sample(rows, shots))
        return self.subset(chosen)


def check_shots(data: LabelledFeatures, shots: int | None = None) -> None:
    """InputError naming the classes that have too few (decoded) images for ``shots`` per class
    (``None``: at least one each)."""
    need = 1 if shots is None else int(shots)
    if need < 1:
        raise InputError(f"--shots {shots}: give at least 1 image per class")
    short = [(name, count) for name, count in zip(data.classnames, data.class_counts(), strict=True) if count < need]
    if short:
        listed = ", ".join(f"{name!r} ({count})" for name, count in short[:5]) + (" ..." if len(short) > 5 else "")
        failed = f" ({len(data.failures)} images failed to decode)" if data.failures else ""
        raise InputError(f"{len(short)} of {len(data.classnames)} classes have fewer than {need} usable labelled "
                         f"image(s){failed}: {listed}; add images of those classes or lower --shots")


def data_fingerprint(collection: LabelledCollection) -> str:
    """Hex digest of the class names and every file's identity (path, size, mtime), without reading
    the images: a changed, added or removed file changes it."""
    digest = hashlib.sha256(json.dumps(collection.classnames, ensure_ascii=False).encode())
    paths = collection.shards or [item.name for item in collection.items]
    targets = [-1] * len(collection.shards) if collection.shards else [item.target for item in collection.items]
    for path, target in zip(paths, targets, strict=True):
        try:
            stat = os.stat(path)
            identity = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:  # URLs, missing files: their name is all we know before decoding
            identity = "?"
        digest.update(f"{path}\0{target}\0{identity}\n".encode())
    return digest.hexdigest()[:32]


def encode_collection(
    collection: LabelledCollection,
    encoder: Encoder,
    *,
    precision: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> LabelledFeatures:
    """Encode every image of ``collection`` once (or read the cached result).

    Images that fail to decode are listed in ``failures`` and left out; the rest keep their order.
    """
    precision = resolve_precision(precision, encoder.device)
    fingerprint = data_fingerprint(collection)
    key = hashlib.sha256(json.dumps([_FORMAT, encoder.fingerprint, precision, fingerprint, max_pixels]).encode())
    path = features_dir(cache_dir) / f"{key.hexdigest()[:32]}.safetensors"
    if cache and path.is_file():
        hit = _load(path)
        if hit is not None:
            return hit
    features, targets, names, failures = [], [], [], []
    total = len(collection.items) or None
    with tqdm(total=total, unit="img", desc="encoding images", disable=not progress, leave=False) as bar:
        options = RunOptions(batch_size=batch_size, workers=workers, precision=precision, max_pixels=max_pixels)
        for batch_names, errors, batch_targets, batch_features in labelled_feature_batches(
                collection, encoder, options):
            for name, error, target in zip(batch_names, errors, batch_targets, strict=True):
                if error is None:
                    names.append(name)
                    targets.append(target)
                else:
                    failures.append({"path": name, "error": error})
            features.append(batch_features)
            bar.update(len(batch_names))
    result = LabelledFeatures(torch.cat(features) if features else torch.empty(0, encoder.embed_dim),
                              torch.tensor(targets, dtype=torch.long), names, list(collection.classnames),
                              encoder.fingerprint, fingerprint, failures)
    if cache:
        _store(result, path)
    return result


def features_dir(override: str | os.PathLike | None = None) -> Path:
    """Where encoded features are cached: ``features/`` inside the classifier cache folder."""
    return default_cache_dir(override) / "features"


def _store(data: LabelledFeatures, path: Path) -> None:
    metadata = {"format": _FORMAT, "names": data.names, "classnames": data.classnames,
                "model_fingerprint": data.model_fingerprint, "data_fingerprint": data.data_fingerprint,
                "failures": data.failures}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            save_file({"features": data.features.contiguous(), "targets": data.targets.contiguous()}, temporary,
                      metadata={"zsclip": json.dumps(metadata, ensure_ascii=False)})
    except OSError as error:  # a read-only or full cache must not fail the run
        warnings.warn(f"could not write feature cache {path}: {error}", ZsclipWarning, stacklevel=3)


def _load(path: Path) -> LabelledFeatures | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {})["zsclip"])
        tensors = load_file(str(path))
        if metadata.get("format") != _FORMAT or len(metadata["names"]) != len(tensors["targets"]):
            raise ValueError("unexpected layout")
        return LabelledFeatures(tensors["features"].float(), tensors["targets"].long(), metadata["names"],
                                metadata["classnames"], metadata["model_fingerprint"], metadata["data_fingerprint"],
                                metadata["failures"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:
        warnings.warn(f"ignoring unreadable feature cache {path} ({error}): encoding again", ZsclipWarning,
                      stacklevel=3)
        return None
