"""The local pipeline's stages as a Ray Data job: decode tasks, then an actor pool that encodes.

Both stages call the same code as the local pipeline (``DecodedBatches`` decodes, the model's own
``encode_images`` encodes), so a row's embedding is the one a single process computes. Rows keep
their error (a bad image is a row, the job goes on); an actor that dies is restarted and its batch
retried by Ray (``max_restarts`` / ``max_task_retries``), on another node if its node is gone.

On CPUs the pool shares each node's cores the way the local pipeline shares the machine's: the
local run's main process encodes on all cores while its decode workers run beside it, and the OS
gives the cores to whichever stage has work. An encoding actor therefore reserves only a sliver of
a CPU (``ACTOR_CPUS``: enough to be placed on nodes that have CPUs) and runs torch on its node's
CPUs divided among the node's actors, while decode tasks take the node's CPUs one each. Reserving
a whole CPU per actor instead left one decode task on a 2-CPU node (half the local decoding) and
one torch thread per actor (half the local encoding): 0.16x and 0.43x of the local pipeline.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
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
#: The CPU an encoding actor reserves on CPU nodes: a sliver, so decode tasks keep the node's cores
#: (the actor's torch threads share them, as in the local pipeline) and the actor lands on a CPU node.
ACTOR_CPUS = 0.001
#: The CPU a decode task reserves: one core, less room for the slivers of the node's actors, so a
#: node with C CPUs runs C decode tasks beside up to 10 actors per CPU. (With 0.999, two actors moved
#: onto a 1-CPU node when the other node was lost left 0.998: no decode task fit, and the job hung.)
DECODE_CPUS = 0.99
#: Torch threads an encoding actor aims for on CPUs: a node gets one actor per this many CPUs
#: (at least one), each running on its share of the node's cores.
CPUS_PER_ACTOR = 8


@dataclass(frozen=True)
class ModelSpec:
    """What each actor loads: the model, its weights, the device and precision to encode with."""

    model: str
    pretrained: str | None
    device: str
    precision: str
    fingerprint: str
    actors_per_node: int = 1

    @classmethod
    def of(cls, encoder, options: RunOptions, actors_per_node: int = 1) -> ModelSpec:
        return cls(encoder.name, getattr(encoder, "pretrained", None),
                   "cuda" if encoder.device.type == "cuda" else "cpu", options.precision, encoder.fingerprint,
                   actors_per_node)


def actor_threads(actors_per_node: int) -> int:
    """Torch threads for a CPU encoding actor: its node's CPUs shared among the actors on the node
    (never more than the cores this process may run on). Ray would give a 1-CPU actor one thread."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    cpus = next((info["Resources"].get("CPU", 0) for info in ray.nodes() if info["NodeID"] == node), 1)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(int(cpus) // max(1, actors_per_node), usable))


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
        if spec.device == "cpu":
            torch.set_num_threads(actor_threads(spec.actors_per_node))
        self.node = _node_id()
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
                "embedding": embeddings, "node": np.full(len(ok), self.node, dtype=object)}


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def pool_size(ray, settings: RaySettings, gpus: bool) -> tuple[int, int]:
    """(encoding actors, actors per node) for this cluster: one per GPU, or one per ``CPUS_PER_ACTOR``
    CPUs of each CPU node; ``--ray-actors`` beyond what the cluster can host is sized down with a
    warning, and a cluster that cannot host one actor is refused in one line (never waited on)."""
    nodes = [info["Resources"] for info in ray.nodes() if info.get("Alive")]
    cpu_nodes = [int(resources.get("CPU", 0)) for resources in nodes if resources.get("CPU", 0) >= 1]
    cluster_gpus = sum(int(resources.get("GPU", 0)) for resources in nodes)
    if gpus:
        if cluster_gpus < 1:  # an actor asking for a GPU the cluster lacks would wait forever
            raise InputError("the model runs on CUDA but the Ray cluster has no GPU: add GPU nodes, or run with "
                             "--device cpu")
        if not cpu_nodes:
            raise InputError("the Ray cluster has no node with a CPU to decode images on: add CPU to a node")
        actors, most, what = settings.actors or cluster_gpus, cluster_gpus, "GPU(s); one actor per GPU"
    else:
        if not cpu_nodes:
            raise InputError("the Ray cluster has no node with a CPU: nothing can decode or encode; add CPU nodes")
        default = sum(max(1, cpus // CPUS_PER_ACTOR) for cpus in cpu_nodes)
        actors, most, what = settings.actors or default, sum(cpu_nodes), "CPUs; one actor per CPU at most"
    if actors > most:
        warnings.warn(f"--ray-actors {actors}: the Ray cluster has {most} {what}; using {most} actors",
                      ZsclipWarning, stacklevel=3)
        actors = most
    return actors, math.ceil(actors / len(cpu_nodes)) if not gpus else 1


def encoded_dataset(items: Sequence[Source], encoder, options: RunOptions, settings: RaySettings,
                    actor: type = EncodeActor, shards: Sequence[str] = (), classnames: Sequence[str] = ()):
    """The Ray Dataset of ``items`` (or of the samples of WebDataset ``shards``, one read task per
    shard) decoded by tasks and encoded by an actor pool (of ``actor``, an ``EncodeActor``), in order."""
    ray = connect(settings)
    transform = encoder.image_transform()
    pixel_shape = tuple(transform(Image.new("RGB", (encoder.image_size or 224,) * 2)).shape)
    gpus = encoder.device.type == "cuda"
    actors, per_node = pool_size(ray, settings, gpus)
    if shards:
        dataset = ray.data.from_items([{"shard": shard} for shard in shards], override_num_blocks=len(shards))
        dataset = dataset.flat_map(shard_records, fn_kwargs={"classnames": list(classnames)},
                                   num_cpus=DECODE_CPUS).map_batches(
            decode_bytes_batch, batch_size=options.batch_size, batch_format="numpy", num_cpus=DECODE_CPUS,
            fn_kwargs={"transform": transform, "target_size": encoder.image_size, "max_pixels": options.max_pixels,
                       "draft": options.draft, "pixel_shape": pixel_shape})
    else:
        records = [{"name": item.name, "error": item.error or "",
                    "target": item.target if isinstance(item, LabelledSource) else -1} for item in items]
        dataset = ray.data.from_items(records).map_batches(
            decode_batch, batch_size=options.batch_size, batch_format="numpy", num_cpus=DECODE_CPUS,
            fn_kwargs={"transform": transform, "target_size": encoder.image_size, "max_pixels": options.max_pixels,
                       "draft": options.draft, "url_timeout": options.url_timeout, "pixel_shape": pixel_shape})
    with warnings.catch_warnings():  # Ray 2.60 flags remote args passed this way; they are the documented way
        warnings.simplefilter("ignore")
        return dataset.map_batches(
            actor, fn_constructor_kwargs={"spec": ModelSpec.of(encoder, options, per_node)},
            batch_size=options.batch_size, batch_format="numpy", concurrency=actors, num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else ACTOR_CPUS,
            max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)


def encoded_rows(dataset, options: RunOptions, settings: RaySettings, nodes: Counter | None = None
                 ) -> Iterator[tuple[list[str], list[str | None], torch.Tensor, list[int]]]:
    """(names, errors, features of the decoded ones, targets) per batch of an ``encoded_dataset``,
    watched for stalls; ``nodes`` (when given) counts the images each Ray node encoded."""
    for batch in watched(dataset.iter_batches(batch_size=options.batch_size, batch_format="numpy"),
                         settings.stall_timeout_s):
        ok = batch["ok"].astype(bool)
        if nodes is not None:
            nodes.update(str(node) for node in batch["node"])
        yield ([str(name) for name in batch["name"]], [str(error) or None for error in batch["error"]],
               torch.from_numpy(np.ascontiguousarray(batch["embedding"][ok])), [int(t) for t in batch["target"]])


def ray_feature_batches(items: Sequence[Source], encoder, options: RunOptions | None = None,
                        settings: RaySettings | None = None, actor: type = EncodeActor, nodes: Counter | None = None
                        ) -> Iterator[tuple[list[str], list[str | None], torch.Tensor]]:
    """``pipeline.feature_batches`` on Ray: (names, errors, features of the decoded ones) per batch;
    ``nodes`` (when given) counts the images each Ray node encoded."""
    options = options or RunOptions()
    settings = settings or RaySettings()
    dataset = encoded_dataset(items, encoder, options, settings, actor)
    for names, errors, features, _ in encoded_rows(dataset, options, settings, nodes):
        yield names, errors, features


__all__ = ["EncodeActor", "ModelSpec", "decode_batch", "encoded_dataset", "encoded_rows", "pool_size",
           "ray_feature_batches"]
