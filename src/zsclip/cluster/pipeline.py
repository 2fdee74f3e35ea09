"""The local pipeline's stages as a Ray Data job: decode tasks, then an actor pool that encodes.

Both stages call the same code as the local pipeline (``DecodedBatches`` decodes, the model's own
``encode_images`` encodes), so a row's embedding is the one a single process computes. Rows keep
their error (a bad image is a row, the job goes on); an actor that dies is restarted and its batch
retried by Ray (``max_restarts`` / ``max_task_retries``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data.collections import LabelledSource
from ..data.sources import Source
from ..errors import InputError, ZsclipWarning
from ..options import RunOptions
from ..pipeline.decode import DecodedBatches
from .session import RaySettings, connect, watched

#: How often Ray restarts a dead encoding actor, and retries the batch it was running.
ACTOR_RESTARTS = 3


@dataclass(frozen=True)
class ModelSpec:
    """What each actor loads: the model, its weights, the device and precision to encode with."""

    model: str
    pretrained: str | None
    device: str
    precision: str
    fingerprint: str

    @classmethod
    def of(cls, encoder, options: RunOptions) -> ModelSpec:
        return cls(encoder.name, getattr(encoder, "pretrained", None),
                   "cuda" if encoder.device.type == "cuda" else "cpu", options.precision, encoder.fingerprint)


def decode_batch(batch: dict[str, np.ndarray], transform: Callable, target_size: int | None, max_pixels: int,
                 draft: bool, url_timeout: float, pixel_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """A Ray task: one batch of sources decoded and preprocessed, a row per source (zeros where it failed)."""
    names = [str(name) for name in batch["name"]]
    items = [Source(name, str(error) or None) for name, error in zip(names, batch["error"], strict=True)]
    decoded = DecodedBatches(items, max(1, len(items)), transform, target_size, max_pixels, draft, url_timeout)[0]
    ok = np.array([error is None for error in decoded["errors"]], dtype=bool)
    pixels = np.zeros((len(items), *pixel_shape), dtype=np.float32)
    if ok.any():
        pixels[ok] = decoded["pixels"].numpy()
    return {"name": np.array(names, dtype=object), "target": batch["target"],
            "error": np.array([error or "" for error in decoded["errors"]], dtype=object), "ok": ok,
            "pixels": pixels}


def shard_records(row: dict, classnames: list[str]) -> list[dict]:
    """A Ray task: one WebDataset shard's samples as records (image bytes, target, or the error;
    a shard that cannot be read is one error record naming it, as in the local reader)."""
    from ..data.shards import IMAGE_KEYS, sample_target, shard_samples

    lookup = {name: index for index, name in enumerate(classnames)}
    records = []
    for name, fields, error in shard_samples(str(row["shard"])):
        data, target = b"", -1
        if error is None:
            try:
                target = sample_target(fields, lookup, len(classnames)) if classnames else -1
                data = next((fields[key] for key in IMAGE_KEYS if key in fields), None)
                if data is None:
                    raise ValueError(f"no image ({', '.join(IMAGE_KEYS)})")
            except (ValueError, UnicodeDecodeError) as failure:
                error, data, target = str(failure), b"", -1
        records.append({"name": name, "error": error or "", "target": target, "data": data})
    return records


def decode_bytes_batch(batch: dict[str, np.ndarray], transform: Callable, target_size: int | None, max_pixels: int,
                       draft: bool, pixel_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """A Ray task: shard samples' bytes decoded and preprocessed, a row per sample."""
    from ..data.images import decode_bytes
    from ..errors import ImageReadError

    errors = [str(error) or None for error in batch["error"]]
    pixels = np.zeros((len(errors), *pixel_shape), dtype=np.float32)
    for row, data in enumerate(batch["data"]):
        if errors[row] is None:
            try:
                pixels[row] = transform(decode_bytes(bytes(data), target_size, max_pixels, draft=draft)).numpy()
            except ImageReadError as failure:
                errors[row] = str(failure)
            except Exception as failure:  # one odd sample must not end the batch
                errors[row] = f"preprocessing failed: {type(failure).__name__}: {failure}"
    return {"name": batch["name"], "target": batch["target"],
            "error": np.array([error or "" for error in errors], dtype=object),
            "ok": np.array([error is None for error in errors], dtype=bool), "pixels": pixels}


class EncodeActor:
    """An actor holding one model: pixels in, L2-normalised float32 embeddings out (per row)."""

    def __init__(self, spec: ModelSpec) -> None:
        from ..encoders.resolve import resolve_model

        self.spec = spec
        self.encoder = resolve_model(spec.model, spec.pretrained, RunOptions(device=spec.device,
                                                                             precision=spec.precision))
        if self.encoder.fingerprint != spec.fingerprint:  # e.g. random weights, or other files on this node
            raise InputError(f"the model loaded on a Ray worker ({spec.model}, {self.encoder.fingerprint}) differs "
                             f"from the driver's ({spec.fingerprint}): give every node the same weights (a "
                             "checkpoint file or local-dir: on shared storage)")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["ok"].astype(bool)
        embeddings = np.zeros((len(ok), self.encoder.embed_dim), dtype=np.float32)
        if ok.any():
            pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            embeddings[ok] = self.encoder.encode_images(pixels, self.spec.precision).numpy()
        return {"name": batch["name"], "target": batch["target"], "error": batch["error"], "ok": ok,
                "embedding": embeddings}


def encoded_dataset(items: Sequence[Source], encoder, options: RunOptions, settings: RaySettings,
                    actor: type = EncodeActor, shards: Sequence[str] = (), classnames: Sequence[str] = ()):
    """The Ray Dataset of ``items`` (or of the samples of WebDataset ``shards``, one read task per
    shard) decoded by tasks and encoded by an actor pool (of ``actor``, an ``EncodeActor``), in order."""
    ray = connect(settings)
    transform = encoder.image_transform()
    pixel_shape = tuple(transform(Image.new("RGB", (encoder.image_size or 224,) * 2)).shape)
    gpus = encoder.device.type == "cuda"
    # on CPUs, leave most cores to the decoding tasks: an actor holds its CPU for the whole job
    cpus = int(ray.cluster_resources().get("CPU", 1))
    cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus and cluster_gpus < 1:  # an actor asking for a GPU the cluster lacks would wait forever
        raise InputError("the model runs on CUDA but the Ray cluster has no GPU: add GPU nodes, or run with "
                         "--device cpu")
    actors = settings.actors or (cluster_gpus if gpus else max(1, cpus // 4))
    if gpus and actors > cluster_gpus:
        warnings.warn(f"--ray-actors {actors}: the Ray cluster has {cluster_gpus} GPU(s); using {cluster_gpus} "
                      "actors (one per GPU)", ZsclipWarning, stacklevel=2)
        actors = cluster_gpus
    if not gpus and actors >= cpus:
        raise InputError(f"--ray-actors {actors} would hold all {cpus} CPUs of the Ray cluster and leave none for "
                         "decoding: use fewer actors")
    if shards:
        dataset = ray.data.from_items([{"shard": shard} for shard in shards], override_num_blocks=len(shards))
        dataset = dataset.flat_map(shard_records, fn_kwargs={"classnames": list(classnames)}).map_batches(
            decode_bytes_batch, batch_size=options.batch_size, batch_format="numpy", num_cpus=1,
            fn_kwargs={"transform": transform, "target_size": encoder.image_size, "max_pixels": options.max_pixels,
                       "draft": options.draft, "pixel_shape": pixel_shape})
    else:
        records = [{"name": item.name, "error": item.error or "",
                    "target": item.target if isinstance(item, LabelledSource) else -1} for item in items]
        dataset = ray.data.from_items(records).map_batches(
            decode_batch, batch_size=options.batch_size, batch_format="numpy", num_cpus=1,
            fn_kwargs={"transform": transform, "target_size": encoder.image_size, "max_pixels": options.max_pixels,
                       "draft": options.draft, "url_timeout": options.url_timeout, "pixel_shape": pixel_shape})
    with warnings.catch_warnings():  # Ray 2.60 flags remote args passed this way; they are the documented way
        warnings.simplefilter("ignore")
        return dataset.map_batches(
            actor, fn_constructor_kwargs={"spec": ModelSpec.of(encoder, options)}, batch_size=options.batch_size,
            batch_format="numpy", concurrency=actors, num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
            max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)


def ray_feature_batches(items: Sequence[Source], encoder, options: RunOptions | None = None,
                        settings: RaySettings | None = None, actor: type = EncodeActor
                        ) -> Iterator[tuple[list[str], list[str | None], torch.Tensor]]:
    """``pipeline.feature_batches`` on Ray: (names, errors, features of the decoded ones) per batch."""
    options = options or RunOptions()
    settings = settings or RaySettings()
    dataset = encoded_dataset(items, encoder, options, settings, actor)
    for batch in watched(dataset.iter_batches(batch_size=options.batch_size, batch_format="numpy"),
                         settings.stall_timeout_s):
        ok = batch["ok"].astype(bool)
        yield ([str(name) for name in batch["name"]], [str(error) or None for error in batch["error"]],
               torch.from_numpy(np.ascontiguousarray(batch["embedding"][ok])))


__all__ = ["EncodeActor", "ModelSpec", "decode_batch", "encoded_dataset", "ray_feature_batches"]
