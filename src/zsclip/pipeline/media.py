"""Photos and videos together: sampled frames -> normalised features -> one row per clip.

Each input is decoded in a worker process (``MediaItems``): a photo is one frame, a video the frames
sampled for its clips (``zsclip.data.video``). The main process encodes frames in batches of
``batch_size`` whatever the video they come from, then answers per clip: the mean of its frames'
normalised embeddings, normalised again (the CLIP paper's video protocol). A clip's row carries its
span (start, end) in seconds; a photo's has none. A bad file, a clip without frames and a video cut
at the frame limit each cost one error row naming the file; the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.images import MAX_PIXELS, load_image
from ..data.sources import Source
from ..data.video import Sampling, is_video_name, looks_like_video, read_clips
from ..encoders.base import Encoder
from ..errors import ImageReadError
from ..options import RunOptions

Span = tuple[float, float]


@dataclass(frozen=True)
class VideoPart:
    """Clips ``first`` to ``stop - 1`` of a video (a Ray task's share of a long video's segments)."""

    source: Source
    first: int
    stop: int

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def error(self) -> str | None:
        return self.source.error

    @property
    def target(self) -> int:
        return getattr(self.source, "target", -1)


def sampling_of(options: RunOptions) -> Sampling:
    return Sampling(options.frames, options.segment, options.max_video_frames)


class MediaItems(Dataset):
    """Item ``i`` decoded: ``{"name", "target", "pixels" [k, 3, H, W], "rows": [(span, frames, error)]}``,
    where each row (a clip, or the photo) takes the next ``frames`` pixel rows."""

    def __init__(self, items: Sequence[Source], transform: Callable, target_size: int | None,
                 max_pixels: int = MAX_PIXELS, sampling: Sampling | None = None, url_timeout: float = 30.0) -> None:
        self.items = list(items)
        self.transform = transform
        self.target_size = target_size
        self.max_pixels = max_pixels
        self.sampling = sampling or Sampling()
        self.url_timeout = url_timeout

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        decoded = {"name": item.name, "target": getattr(item, "target", -1), "pixels": torch.empty(0), "rows": []}
        if item.error is not None:
            decoded["rows"] = [(None, 0, item.error)]
            return decoded
        try:
            if isinstance(item, VideoPart) or is_video_name(item.name) or _sniffed_video(item.name):
                return self._video(item, decoded)
            image = load_image(item.name, self.target_size, self.max_pixels, timeout=self.url_timeout)
            decoded.update(pixels=self.transform(image).unsqueeze(0), rows=[(None, 1, None)])
        except ImageReadError as failure:
            decoded["rows"] = [(None, 0, str(failure))]
        except Exception as failure:  # one odd file must not end the run
            decoded["rows"] = [(None, 0, f"decoding failed: {type(failure).__name__}: {failure}")]
        return decoded

    def _video(self, item: Source | VideoPart, decoded: dict) -> dict:
        only = (item.first, item.stop) if isinstance(item, VideoPart) else None
        clips, note, _ = read_clips(item.name, self.sampling, self.max_pixels, self.target_size, only=only)
        pixels, rows = [], []
        for clip in clips:
            pixels.extend(self.transform(frame) for frame in clip.frames)
            rows.append(((clip.start, clip.end), len(clip.frames), clip.error))
        if note is not None:
            end = clips[-1].end if clips else 0.0
            rows.append(((end, end), 0, note))
        decoded.update(pixels=torch.stack(pixels) if pixels else torch.empty(0), rows=rows)
        return decoded


def _sniffed_video(name: str) -> bool:
    """A local file whose name says image but whose bytes are a video container (a wrong extension)."""
    from ..data.sources import image_extensions
    from ..data.urls import is_url

    if is_url(name):
        return False
    import os

    if os.path.splitext(name)[1].lower() in image_extensions():
        try:
            with open(name, "rb") as handle:
                return looks_like_video(handle.read(192))
        except OSError:
            return False
    return False


@dataclass
class MediaBatch:
    """Rows of a batch: per row its input's name, error, span, target; features [n_ok, D] in order."""

    ids: list[str]
    errors: list[str | None]
    features: torch.Tensor
    targets: list[int]
    spans: list[Span | None]


def media_feature_batches(items: Sequence[Source], encoder: Encoder,
                          options: RunOptions | None = None) -> Iterator[MediaBatch]:
    """Rows (a photo, a whole video, or a video's segment) in input order with their features."""
    options = options or RunOptions()
    dataset = MediaItems(items, encoder.image_transform(), encoder.image_size, options.max_pixels,
                         sampling_of(options), options.url_timeout)
    workers = 0 if len(dataset) <= 1 else min(options.decode_workers, len(dataset))
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_keep,
                        pin_memory=False, prefetch_factor=2 if workers else None)
    yield from aggregate(iter(loader), lambda pixels: encoder.encode_images(pixels, options.precision),
                         options.batch_size, encoder.embed_dim)


def _keep(item):
    return item


def aggregate(decoded: Iterator[dict], encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
              embed_dim: int) -> Iterator[MediaBatch]:
    """Encode the frames of decoded items ``batch_size`` at a time and answer per row (clip or photo)."""
    pending: list[dict] = []
    frames = 0
    for item in decoded:
        pending.append(item)
        frames += len(item["pixels"])
        if frames >= batch_size:
            yield _rows(pending, encode, batch_size, embed_dim)
            pending, frames = [], 0
    if pending:
        yield _rows(pending, encode, batch_size, embed_dim)


def _rows(items: list[dict], encode, batch_size: int, embed_dim: int) -> MediaBatch:
    pixels = [item["pixels"] for item in items if len(item["pixels"])]
    if pixels:
        stacked = torch.cat(pixels)
        features = torch.cat([encode(stacked[i : i + batch_size]).float().cpu()
                              for i in range(0, len(stacked), batch_size)])
    else:
        features = torch.empty(0, embed_dim)
    ids, errors, targets, spans, pooled = [], [], [], [], []
    position = 0
    for item in items:
        for span, count, error in item["rows"]:
            ids.append(item["name"])
            targets.append(item["target"])
            spans.append(span)
            if count:
                pooled.append(pool(features[position : position + count]))
                position += count
                errors.append(None)
            else:
                errors.append(error or "no frame decoded")
    return MediaBatch(ids, errors, torch.stack(pooled) if pooled else torch.empty(0, embed_dim), targets, spans)


def pool(frames: torch.Tensor) -> torch.Tensor:
    """A clip's embedding: the mean of its frames' normalised embeddings, normalised again."""
    if len(frames) == 1:
        return frames[0]
    return torch.nn.functional.normalize(frames.mean(dim=0), dim=-1)


__all__ = ["VideoPart", "MediaItems", "MediaBatch", "media_feature_batches", "aggregate", "pool", "sampling_of"]
