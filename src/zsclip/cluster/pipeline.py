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

The encoding actors are a pool the driver keeps between jobs (``actors.py``): the decode stage is a
Ray Dataset whose blocks go, as object references, to the pool's actors; a driver that runs one
job after another starts its actors once.
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
from . import actors
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
#: Bytes of decoded pixels a decode task aims to return: small images are decoded several encoder
#: batches per task (a task's fixed cost, its scheduling, the Arrow block and the object store, was
#: a quarter of the decode time of 64-pixel images at 64 per task), large ones a batch per task.
DECODE_BLOCK_BYTES = 16 << 20
#: The most encoder batches one decode task decodes (enough blocks stay to keep every core busy).
MAX_BATCHES_PER_TASK = 4
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
    fingerprint: str | None  # None: started before the driver's model loaded (checked by the job)
    actors_per_node: int = 1
    batch_size: int = 64
    runtime: str = "torch"  # RunOptions.runtime; the driver's own choice where it resolved "auto"
    calibration: tuple[str, ...] = ()  # RunOptions.calibration: each actor finds (or makes) the same static int8

    @classmethod
    def of(cls, encoder, options: RunOptions, actors_per_node: int = 1) -> ModelSpec:
        return cls(encoder.name, getattr(encoder, "pretrained", None),
                   "cuda" if encoder.device.type == "cuda" else "cpu", options.precision, encoder.fingerprint,
                   actors_per_node, options.batch_size, getattr(encoder, "runtime", "torch"), options.calibration)


def decode_rows(batch_size: int, pixel_shape: tuple[int, ...]) -> int:
    """Rows per decode task: whole encoder batches, as many as fit ``DECODE_BLOCK_BYTES`` (at least one,
    at most ``MAX_BATCHES_PER_TASK``)."""
    batch_bytes = batch_size * 4 * math.prod(pixel_shape)
    return batch_size * max(1, min(MAX_BATCHES_PER_TASK, DECODE_BLOCK_BYTES // batch_bytes))


def actor_threads(actors_per_node: int) -> int:
    """Torch threads for a CPU encoding actor: its node's CPUs shared among the actors on the node
    (never more than the cores this process may run on). Ray would give a 1-CPU actor one thread."""
    import ray

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not ray.is_initialized():  # built outside Ray (a test, a local check): asking Ray would start one
        return max(1, usable // max(1, actors_per_node))
    node = ray.get_runtime_context().get_node_id()
    cpus = next((info["Resources"].get("CPU", 0) for info in ray.nodes() if info["NodeID"] == node), 1)
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


def decode_chunks(batch: dict[str, np.ndarray], **decode_options) -> dict[str, np.ndarray]:
    """A Ray task: whole chunks of sources (a row each: their names, errors and targets as lists)
    decoded as one ``decode_batch``. Chunks are whole encoder batches of the job, so every block the
    encoding actors receive starts where a local batch starts and the actors encode the local batches."""
    flat = {key: np.concatenate([np.asarray(part, dtype=object if key != "target" else np.int64)
                                 for part in batch[key]]) for key in ("name", "error", "target")}
    return decode_batch(flat, **decode_options)


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
                                                                             precision=spec.precision,
                                                                             runtime=spec.runtime,
                                                                             calibration=spec.calibration))
        if spec.fingerprint is not None and self.encoder.fingerprint != spec.fingerprint:  # e.g. other files here
            raise actors.other_weights(spec.model, self.encoder.fingerprint, spec.fingerprint)

    def ready(self) -> str:
        """The loaded model's fingerprint, once it is loaded (a reused pool's check that its actors still
        serve; a pool started before the driver's model loaded is checked against it with this)."""
        return self.encoder.fingerprint

    def encode_block(self, block, rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """One block of the decode stage (``rows``: the slice of it that belongs to the job), encoded."""
        from ray.data.block import BlockAccessor

        accessor = BlockAccessor.for_block(block)
        if rows is not None:
            accessor = BlockAccessor.for_block(accessor.slice(*rows, copy=False))
        return self(accessor.to_batch_format("numpy"))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's rows encoded ``spec.batch_size`` at a time (a decode block may hold several
        encoder batches: the actor's memory stays that of one)."""
        ok = batch["ok"].astype(bool)
        embeddings = np.zeros((len(ok), self.encoder.embed_dim), dtype=np.float32)
        for start in range(0, len(ok), self.spec.batch_size):
            rows = slice(start, start + self.spec.batch_size)
            if ok[rows].any():
                pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][rows][ok[rows]]))
                embeddings[rows][ok[rows]] = self.encoder.encode_images(pixels, self.spec.precision).numpy()
        return {"name": batch["name"], "target": batch["target"], "error": batch["error"], "ok": ok,
                "embedding": embeddings, "node": np.full(len(ok), self.node, dtype=object)}


def _node_id() -> str:
    """The Ray node this runs on, or "local" outside Ray (``ray.get_runtime_context()`` would start a Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


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


def actor_options(gpus: bool) -> dict:
    """How an encoding actor is placed: a GPU each, or a sliver of a CPU node (``ACTOR_CPUS``), spread
    over the nodes; restarted when it dies (its calls retried), on another node if its node is gone."""
    placement = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": ACTOR_CPUS, "scheduling_strategy": "SPREAD"}
    return {**placement, "max_restarts": ACTOR_RESTARTS, "max_task_retries": ACTOR_RESTARTS}


@dataclass
class EncodingJob:
    """A job's decode stage (a Ray Dataset of preprocessed pixel batches) and its encoding actors."""

    dataset: object
    actor: type
    spec: ModelSpec
    actors: int
    options: dict


def encoding_job(items: Sequence[Source], encoder, options: RunOptions, settings: RaySettings,
                 actor: type = EncodeActor, shards: Sequence[str] = (), classnames: Sequence[str] = ()) -> EncodingJob:
    """``items`` (or the samples of WebDataset ``shards``, one read task per shard) to be decoded by
    tasks and encoded by an actor pool of ``actor`` (an ``EncodeActor``), sized to the cluster (a
    cluster that cannot host the pool is refused here, before anything runs)."""
    ray = connect(settings)
    transform = encoder.image_transform()
    pixel_shape = tuple(transform(Image.new("RGB", (encoder.image_size or 224,) * 2)).shape)
    gpus = encoder.device.type == "cuda"
    size, per_node = pool_size(ray, settings, gpus)
    rows = decode_rows(options.batch_size, pixel_shape)
    if shards:
        dataset = ray.data.from_items([{"shard": shard} for shard in shards], override_num_blocks=len(shards))
        dataset = dataset.flat_map(shard_records, fn_kwargs={"classnames": list(classnames)},
                                   num_cpus=DECODE_CPUS).map_batches(
            decode_bytes_batch, batch_size=rows, batch_format="numpy", num_cpus=DECODE_CPUS,
            fn_kwargs={"transform": transform, "target_size": encoder.image_size, "max_pixels": options.max_pixels,
                       "draft": options.draft, "pixel_shape": pixel_shape})
    else:
        chunks = [items[start:start + rows] for start in range(0, len(items), rows)]
        records = [{"name": [item.name for item in chunk], "error": [item.error or "" for item in chunk],
                    "target": [item.target if isinstance(item, LabelledSource) else -1 for item in chunk]}
                   for chunk in chunks]
        dataset = ray.data.from_items(records, override_num_blocks=max(1, len(records))).map_batches(
            decode_chunks, batch_size=1, batch_format="numpy", num_cpus=DECODE_CPUS,
            fn_kwargs={"transform": transform, "target_size": encoder.image_size, "max_pixels": options.max_pixels,
                       "draft": options.draft, "url_timeout": options.url_timeout, "pixel_shape": pixel_shape})
    return EncodingJob(dataset, actor, ModelSpec.of(encoder, options, per_node), size, actor_options(gpus))


def prestart(model: str, pretrained: str | None, options: RunOptions, settings: RaySettings) -> None:
    """Start the encoding actors a job of ``model`` will use before the driver loads its own copy, so
    that both load at once (the job checks the actors' fingerprints against the driver's model). A
    cluster that cannot host them is refused here, before any model loads."""
    from ..encoders import resolve_device

    ray = connect(settings)
    gpus = resolve_device(options.model_device).type == "cuda"
    with warnings.catch_warnings():  # a pool sized down is reported once, by the job
        warnings.simplefilter("ignore", ZsclipWarning)
        size, per_node = pool_size(ray, settings, gpus)
    spec = ModelSpec(model, pretrained, "cuda" if gpus else "cpu", options.precision, None, per_node,
                     options.batch_size, options.runtime, options.calibration)
    actors.start(ray, EncodeActor, spec, size, actor_options(gpus), settings.keep_actors_s)


def _blocks(dataset) -> Iterator[tuple[object, tuple[int, int] | None]]:
    """(block reference, row slice or None) of each block the decode stage yields, in order; the
    blocks stay in the object store (the driver never fetches pixels)."""
    for bundle in dataset.iter_internal_ref_bundles():
        slices = bundle.slices or [None] * len(bundle.block_refs)
        for block, part in zip(bundle.block_refs, slices, strict=True):
            yield block, None if part is None else (part.start_offset, part.end_offset)


def _rebatched(results: Iterator[dict[str, np.ndarray]], size: int) -> Iterator[dict[str, np.ndarray]]:
    """The actors' results (a block each) as batches of ``size`` rows (the last may be smaller)."""
    held: list[dict[str, np.ndarray]] = []
    count = 0
    for result in results:
        held.append(result)
        count += len(result["ok"])
        while count >= size:
            joined = {key: np.concatenate([part[key] for part in held]) for key in held[0]}
            yield {key: value[:size] for key, value in joined.items()}
            rest = {key: value[size:] for key, value in joined.items()}
            held, count = [rest], count - size
    if count:
        yield {key: np.concatenate([part[key] for part in held]) for key in held[0]}


def encoded_rows(job: EncodingJob, options: RunOptions, settings: RaySettings, nodes: Counter | None = None
                 ) -> Iterator[tuple[list[str], list[str | None], torch.Tensor, list[int]]]:
    """(names, errors, features of the decoded ones, targets) per batch of an ``encoding_job``, watched
    for stalls; ``nodes`` (when given) counts the images each Ray node encoded."""
    ray = connect(settings)
    with actors.lease(ray, job.actor, job.spec, job.actors, job.options, settings.keep_actors_s) as pool:
        results = _rebatched(pool.encode(_blocks(job.dataset), job.spec.fingerprint), options.batch_size)
        for batch in _actor_errors_named(watched(results, settings.stall_timeout_s), ray):
            ok = batch["ok"].astype(bool)
            if nodes is not None:
                nodes.update(str(node) for node in batch["node"])
            yield ([str(name) for name in batch["name"]], [str(error) or None for error in batch["error"]],
                   torch.from_numpy(np.ascontiguousarray(batch["embedding"][ok])), [int(t) for t in batch["target"]])


#: How Ray's report of an actor that failed to start names a zsclip error (its exception's class path).
_INPUT_ERROR = f"{InputError.__module__}.{InputError.__qualname__}: "


def _actor_errors_named(batches: Iterator, ray) -> Iterator:
    """``batches``, with an actor that could not start because of the user's input (e.g. other weights
    on a worker node: an InputError in its constructor) reported as that one line, not Ray's trace."""
    try:
        yield from batches
    except ray.exceptions.RayActorError as error:
        text = str(error)
        if _INPUT_ERROR not in text:
            raise
        raise InputError(text.split(_INPUT_ERROR, 1)[1].splitlines()[0]) from None


def ray_feature_batches(items: Sequence[Source], encoder, options: RunOptions | None = None,
                        settings: RaySettings | None = None, actor: type = EncodeActor, nodes: Counter | None = None
                        ) -> Iterator[tuple[list[str], list[str | None], torch.Tensor]]:
    """``pipeline.feature_batches`` on Ray: (names, errors, features of the decoded ones) per batch;
    ``nodes`` (when given) counts the images each Ray node encoded."""
    options = options or RunOptions()
    settings = settings or RaySettings()
    job = encoding_job(items, encoder, options, settings, actor)
    for names, errors, features, _ in encoded_rows(job, options, settings, nodes):
        yield names, errors, features


__all__ = ["EncodeActor", "EncodingJob", "ModelSpec", "actor_options", "decode_batch", "encoded_rows",
           "encoding_job", "pool_size", "prestart", "ray_feature_batches"]
