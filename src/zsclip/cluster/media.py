"""Photos and videos on Ray: every input is decoded (its sampled frames) by a Ray task, and with
``--segment`` a long video is split into parts of ``SEGMENTS_PER_TASK`` segments, each its own task
(a probe task per video reads its duration first). The frames are encoded by the driver's model in
batches and pooled per clip exactly as locally (``zsclip.pipeline.media.aggregate``), so rows, order
and answers are the local ones.

At most ``IN_FLIGHT`` decode tasks run ahead of the encoder (memory stays bounded by them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

from ..data.sources import Source
from ..data.video import Sampling, is_video_name, read_clips
from ..errors import ImageReadError
from ..options import RunOptions
from ..pipeline.media import MediaBatch, MediaItems, VideoPart, aggregate, sampling_of
from .session import RaySettings, connect

#: Decode tasks submitted ahead of the one the encoder waits for.
IN_FLIGHT = 16
#: Segments one Ray task decodes (a two-hour video at 2 s segments = 225 tasks).
SEGMENTS_PER_TASK = 16


def _decode(dataset: MediaItems, index: int) -> dict:
    return dataset[index]


def _clip_count(source: Source, sampling: Sampling) -> int | None:
    """How many clips a video has (None: it cannot be read; its one task then reports why)."""
    try:
        clips, _, _ = read_clips(source.name, sampling, probe=True)
    except ImageReadError:
        return None
    return len(clips)


def split_videos(items: Sequence[Source], counts: Sequence[int | None], per_task: int | None = None) -> list:
    """Items with each video of more than ``per_task`` clips replaced by its parts, in order."""
    per_task = per_task or SEGMENTS_PER_TASK
    out: list = []
    for item, count in zip(items, counts, strict=True):
        if count is None or count <= per_task:
            out.append(item)
        else:
            out.extend(VideoPart(item, first, min(count, first + per_task)) for first in range(0, count, per_task))
    return out


def ray_media_batches(items: Sequence[Source], encoder, options: RunOptions,
                      settings: RaySettings | None = None) -> Iterator[MediaBatch]:
    """The rows ``media_feature_batches`` gives, with every input (or part of a video) decoded in a Ray task."""
    ray = connect(settings or RaySettings())
    sampling = sampling_of(options)
    items = list(items)
    if sampling.segment is not None:
        probe = ray.remote(num_cpus=1)(_clip_count)
        videos = [i for i, item in enumerate(items) if item.error is None and is_video_name(item.name)]
        found = dict(zip(videos, ray.get([probe.remote(items[i], sampling) for i in videos]), strict=True))
        items = split_videos(items, [found.get(i) for i in range(len(items))])
    dataset = MediaItems(items, encoder.image_transform(), encoder.image_size, options.max_pixels, sampling,
                         options.url_timeout)
    shared = ray.put(dataset)
    decode = ray.remote(num_cpus=1)(_decode)

    def decoded() -> Iterator[dict]:
        pending: deque = deque()
        for index in range(len(dataset)):
            pending.append(decode.remote(shared, index))
            if len(pending) >= IN_FLIGHT:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())

    yield from aggregate(decoded(), lambda pixels: encoder.encode_images(pixels, options.precision),
                         options.batch_size, encoder.embed_dim)




# --- Hugging Face splits: a Ray task per part (a Parquet row group, an Arrow file) ------------------------

#: Parts (row groups) decoded ahead of the encoder.
PARTS_IN_FLIGHT = 4


def _decode_part(table, part, transform, target_size, max_pixels, batch_size) -> list[dict]:
    from dataclasses import replace

    from ..pipeline.hfdata import TableBatches

    return list(TableBatches(replace(table, parts=[part]), batch_size, transform, target_size, max_pixels))


def ray_table_batches(table, encoder, options: RunOptions, settings: RaySettings | None = None):
    """(names, errors, targets, features) per batch of a Hugging Face split, each part decoded by a Ray
    task, encoded by the driver's model, in the split's order."""
    import torch

    ray = connect(settings or RaySettings())
    decode = ray.remote(num_cpus=1)(_decode_part)
    shared = ray.put(table)
    transform = encoder.image_transform()

    def submitted(part):
        return decode.remote(shared, part, transform, encoder.image_size, options.max_pixels, options.batch_size)

    pending: deque = deque()
    parts = iter(table.parts)
    for part in parts:
        pending.append(submitted(part))
        if len(pending) >= PARTS_IN_FLIGHT:
            break
    while pending:
        batches = ray.get(pending.popleft())
        following = next(parts, None)
        if following is not None:
            pending.append(submitted(following))
        for batch in batches:
            pixels = batch["pixels"]
            features = (encoder.encode_images(pixels, options.precision) if len(pixels)
                        else torch.empty(0, encoder.embed_dim))
            yield batch["names"], batch["errors"], batch["targets"], features


__all__ = ["ray_media_batches", "ray_table_batches", "split_videos", "SEGMENTS_PER_TASK"]
