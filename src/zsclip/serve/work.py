"""The work of one request, shared by the FastAPI routes (app.py) and the lean classify path (lean.py).

``ServerState`` is what a running server holds; the functions turn a request's parts into answers:
decode an upload (on the decode threads, never the event loop), find or build its classifier, make
its head, and ``answer_images`` sends the pixels through the batching queue and returns the JSON
content of a classify response. Errors a client can fix are ``ClientError`` (a 4xx with one line).
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ..data.images import decode_bytes
from ..data.video import Sampling, is_video_name, looks_like_video, read_clips
from ..encoders.base import Encoder
from ..errors import ImageReadError, ZsclipError
from ..heads import Head
from ..job.heads import HeadOptions, build_head
from ..options import DEFAULT_TOP_K, RunOptions
from .batching import Announcement, BatchQueue
from .classifiers import ClassifierRegistry, Entry
from .inputs import ClientError, parse_labels, parse_templates, refused
from .metrics import ServeMetrics
from .settings import ServeSettings

MAX_FILENAME_CHARS = 200


@dataclass
class ServerState:
    """What the routes share; created at startup, torn down at shutdown."""

    settings: ServeSettings
    encoder: Encoder
    queue: BatchQueue
    registry: ClassifierRegistry
    decoder: ThreadPoolExecutor
    transform: object
    store: object = None
    shutting_down: bool = False



async def resolve_classifier(current: ServerState, labels: list[str] | None, classifier_id: str | None,
                              templates: list[str] | None, tree=None, descriptions: dict | None = None) -> Entry:
    has_labels = any(value.strip() for value in labels or ())
    if sum((bool(classifier_id), has_labels, tree is not None)) > 1:
        raise ClientError(422, "give labels, a labels_tree or a classifier id: one of them")
    if classifier_id:
        if any(value.strip() for value in templates or ()) or descriptions is not None:
            raise ClientError(422, "templates and descriptions go with labels: a classifier id already has its "
                                   "prompts")
        entry = current.registry.get(classifier_id)
        if entry is None:
            raise ClientError(404, f"no classifier {classifier_id[:40]!r}: GET /v1/classifiers lists them")
        return entry
    limits = current.settings.limits
    classes = None if tree is not None else parse_labels(labels, limits)
    if tree is not None and len(tree.nodes) > limits.max_labels:
        raise ClientError(422, f"the label tree has {len(tree.nodes)} nodes, over the limit of {limits.max_labels}")
    template_spec = parse_templates(templates, current.settings.default_templates, limits)
    return await current.registry.get_or_build(classes, template_spec, tree, descriptions)


async def make_head(current: ServerState, entry: Entry, options: HeadOptions, known: list) -> Head:
    """The head a request asks for over its classifier: flat top-k or a tree mode, with rejection.
    Calibration images are encoded through the same batching queue as the request's images."""
    tree = entry.is_tree
    if not tree and (options.tree_mode is not None or options.beam is not None):
        raise ClientError(422, "tree_mode and beam apply to a label tree: send labels_tree, or a tree classifier id")
    if tree and options.top_k is not None:
        raise ClientError(422, "top_k applies to flat labels: a label tree answers one label per level")

    if options.top_k is None and not tree and not options.multi_label and not hasattr(entry.classifier, "positive"):
        options.top_k = DEFAULT_TOP_K  # flat labels: as many as the command line answers with
    calibrated = None
    if options.reject_calibrate is not None:
        good = [item for item in known if isinstance(item, torch.Tensor)]
        if not good:
            raise ClientError(400, "no calibration image could be decoded: send images of the named classes as "
                                   "reject_calibrate")
        calibrated = await current.queue.submit(torch.stack(good))
    try:
        options.classifier, options.labels_tree = entry.classifier, None  # built or loaded: the head is made over it
        # the registry's text precision: a multi-label head's negative prompts are encoded as its label prompts were
        return build_head(options, current.encoder, RunOptions(device="cpu", precision=current.registry.precision),
                          cache=False,
                          calibration=lambda _images, _labels=None: [calibrated])
    except ZsclipError as error:
        raise refused(error) from None


@dataclass
class UploadedVideo:
    """An uploaded video's sampled frames [k, 3, H, W] (answered as one: their pooled embedding)."""

    pixels: torch.Tensor
    duration: float


def frames_of(item) -> torch.Tensor:
    return item.pixels if isinstance(item, UploadedVideo) else item[None]


def pooled(features: torch.Tensor, items: list) -> torch.Tensor:
    """One row per upload: an image's features, a video's frames pooled (the CLI's pooling)."""
    from ..pipeline.media import pool

    rows, position = [], 0
    for item in items:
        count = len(frames_of(item))
        rows.append(pool(features[position : position + count]))
        position += count
    return torch.stack(rows)


def is_video(filename: str | None, data: bytes) -> bool:
    """An upload is read as a video by its bytes or its name."""
    return looks_like_video(data[:192]) or is_video_name(filename or "")


async def decode_upload(current: ServerState, filename: str | None, data: bytes,
                        frames: int = 8) -> torch.Tensor | UploadedVideo | str:
    """Pixels [3, H, W], an ``UploadedVideo``, or the reason this upload cannot be read (a per-image error).
    A video (by its bytes or its name) is decoded in memory, ``frames`` samples, at most
    ``max_video_seconds`` long; the request's byte limit bounds its size."""
    limits = current.settings.limits

    def decode() -> torch.Tensor | UploadedVideo:
        if is_video(filename, data):
            return _decode_video(data, frames)
        image = decode_bytes(data, current.encoder.image_size, limits.max_pixels)
        return current.transform(image)

    def _decode_video(data: bytes, frames: int) -> UploadedVideo:
        if not data:
            raise ImageReadError("empty file")
        clips, _, info = read_clips(io.BytesIO(data), Sampling(frames=frames, max_frames=limits.max_video_frames),
                                    limits.max_pixels, current.encoder.image_size,
                                    max_seconds=limits.max_video_seconds)
        pictures = [current.transform(frame) for clip in clips for frame in clip.frames]
        return UploadedVideo(torch.stack(pictures), info.duration)

    try:
        return await asyncio.get_running_loop().run_in_executor(current.decoder, decode)
    except ImageReadError as error:
        return str(error)


def shown_name(filename: str | None) -> str | None:
    """The file name a result echoes: bounded, None when the client sent none."""
    return (filename or "")[:MAX_FILENAME_CHARS] or None


async def answer_images(current: ServerState, metrics: ServeMetrics, entry: Entry, head: Head,
                        names: list[str | None], decoded: list, announced: Announcement | None = None) -> dict:
    """The JSON content of a classify response for decoded uploads (pixels, videos or error strings): the
    pixels go through the batching queue in one submit, each upload gets its answer or its error."""
    ok = [i for i, item in enumerate(decoded) if not isinstance(item, str)]
    metrics.images.labels("ok").inc(len(ok))
    metrics.images.labels("error").inc(len(decoded) - len(ok))
    if not ok:
        details = [{"index": i, "filename": names[i], "error": decoded[i]} for i in range(len(decoded))]
        message = "no image could be decoded: " + "; ".join(
            f"{d['filename'] or '#' + str(d['index'])}: {d['error']}" for d in details[:3])
        raise ClientError(400, message, details)
    pixels = torch.cat([frames_of(decoded[i]) for i in ok]) if len(ok) > 1 else frames_of(decoded[ok[0]])
    if len(pixels) > current.settings.queue_limit:
        raise ClientError(413, f"{len(pixels)} images and video frames in one request, over the limit of "
                               f"{current.settings.queue_limit}: send fewer videos or fewer frames")
    features = await current.queue.submit(pixels, announced)
    features = pooled(features, [decoded[i] for i in ok])
    if head.needs_collection:  # the multi-label collection score: statistics over this request's images
        head = head.for_collection(features[features.isfinite().all(dim=1)])
    answers = iter(head.answer(features))
    results = []
    for i, item in enumerate(decoded):
        if isinstance(item, str):
            results.append({"index": i, "filename": names[i], "start": None, "end": None, "predictions": None,
                            "record": None, "error": item, "accepted": None})
            continue
        answer = next(answers)
        video = isinstance(item, UploadedVideo)
        results.append({"index": i, "filename": names[i], "start": 0.0 if video else None,
                        "end": item.duration if video else None,
                        "predictions": None if answer.error else [
                            {"label": label, "score": float(score)}
                            for label, score in zip(answer.labels, answer.scores, strict=True)],
                        "record": answer.record, "error": answer.error, "accepted": answer.accepted})
    described = head.describe()
    # a multi-label head (a request's multi_label over flat labels, or a multi-label file) scores each label alone
    scoring = f"multi-label {described['score']}" if described.get("head") == "multilabel" else entry.scoring
    return {"model": current.encoder.name, "classifier": entry.id, "scoring": scoring, "head": described,
            "results": results}


__all__ = ["ServerState", "UploadedVideo", "resolve_classifier", "make_head", "decode_upload", "is_video",
           "answer_images", "frames_of", "pooled", "shown_name", "MAX_FILENAME_CHARS"]
