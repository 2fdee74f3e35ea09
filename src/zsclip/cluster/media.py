"""Photos and videos on Ray: each input is decoded (its sampled frames) by a Ray task; the frames are
encoded by the driver's model in batches and pooled per clip exactly as the local pipeline pools
them (``zsclip.pipeline.media.aggregate``), so rows, order and answers are the local ones.

At most ``IN_FLIGHT`` decode tasks run ahead of the encoder (memory stays bounded by them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

from ..data.sources import Source
from ..options import RunOptions
from ..pipeline.media import MediaBatch, MediaItems, aggregate, sampling_of
from .session import RaySettings, connect

#: Decode tasks submitted ahead of the one the encoder waits for.
IN_FLIGHT = 16


def _decode(dataset: MediaItems, index: int) -> dict:
    return dataset[index]


def ray_media_batches(items: Sequence[Source], encoder, options: RunOptions,
                      settings: RaySettings | None = None) -> Iterator[MediaBatch]:
    """The rows ``media_feature_batches`` gives, with every input decoded in a Ray task."""
    ray = connect(settings or RaySettings())
    dataset = MediaItems(items, encoder.image_transform(), encoder.image_size, options.max_pixels,
                         sampling_of(options), options.url_timeout)
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


__all__ = ["ray_media_batches"]
