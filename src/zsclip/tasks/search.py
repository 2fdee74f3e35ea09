"""Search: the inputs nearest to a text or an image query, by cosine similarity, best first.

Any source works (an embedding store answers without decoding; images and shards are encoded on
the way); a running top-k per batch keeps memory flat at any size. Rows whose features are not
finite are skipped (they would rank first as NaN).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ImageReadError, InputError
from ..job import FeatureBatch, FeatureSource, features, open_source, resolve_encoder
from ..job.plan import check_ray, ray_settings
from ..job.sources import ImageFiles, MediaFiles
from ..options import RunOptions

if TYPE_CHECKING:  # torch loads when a search runs, not to say that its input is missing
    import torch

    from ..encoders.base import Encoder

MAX_RESULTS = 100_000


@dataclass
class Hit:
    """One search result: the input's id, its cosine similarity to the query, and its rank (1 = best)."""

    rank: int
    source: str
    score: float
    #: a video clip's span in seconds (None for photos)
    start: float | None = None
    end: float | None = None


class Hits(list):
    """Search results, best first (``Hit`` items), and ``failures``: the inputs that could not be read, as
    ``{"path", "error"}`` (a missing path, an undecodable file in a folder, a stored error row): reported
    as classify reports them, never dropped without a word."""

    def __init__(self, hits=(), failures: list[dict] | None = None) -> None:
        super().__init__(hits)
        self.failures = list(failures or [])


def nearest(batches: Iterator[FeatureBatch], query: torch.Tensor, top_k: int,
            failures: list[dict] | None = None) -> list[Hit]:
    """The ``top_k`` rows of ``batches`` nearest to ``query`` (a normalised [D] feature), best first;
    rows that carry an error are appended to ``failures`` (when given) as ``{"path", "error"}``."""
    import torch

    if not 1 <= top_k <= MAX_RESULTS:
        raise InputError(f"--top-k {top_k}: ask for 1 to {MAX_RESULTS} results")
    query = query.float().reshape(-1)
    best_scores = torch.empty(0)
    best_ids: list[tuple[str, tuple[float, float] | None]] = []
    for batch in batches:
        if failures is not None:
            failures.extend({"path": name, "error": error} for name, error in zip(batch.ids, batch.errors, strict=True)
                            if error is not None)
        if not len(batch.features):
            continue
        if batch.features.shape[1] != query.numel():
            raise InputError(f"a query of width {query.numel()} cannot search features of width "
                             f"{batch.features.shape[1]}: use the source's model")
        spans = batch.spans or [None] * len(batch.ids)
        good = [(name, span) for name, error, span in zip(batch.ids, batch.errors, spans, strict=True)
                if error is None]
        scores = batch.features.float() @ query
        finite = torch.isfinite(scores)
        if failures is not None and not bool(finite.all()):
            failures.extend({"path": name, "error": "its embedding is not finite (NaN or infinity)"}
                            for (name, _), ok in zip(good, finite.tolist(), strict=True) if not ok)
        scores, good = scores[finite], [name for name, ok in zip(good, finite.tolist(), strict=True) if ok]
        merged = torch.cat([best_scores, scores])
        keep = merged.topk(min(top_k, len(merged))).indices
        ids = best_ids + good
        best_scores, best_ids = merged[keep], [ids[i] for i in keep.tolist()]
    return [Hit(rank, name, float(score), *(span or (None, None))) for rank, ((name, span), score) in
            enumerate(zip(best_ids, best_scores.tolist(), strict=True), start=1)]


def search(inputs, query: str | None = None, *, image=None, top_k: int = 10, encoder: Encoder | None = None,
           model: str | None = None, pretrained: str | None = None, options: RunOptions | None = None,
           output: str | os.PathLike | None = None, ray=None, exact: bool = False) -> Hits:
    """The inputs (a store, images, folders, shards) nearest to a text ``query`` or an ``image``
    (a path or PIL image); with ``output`` (.csv, .jsonl, .json, .parquet) also written there, with a
    row per input that could not be read (its error). Those inputs are the result's ``failures``;
    when every input is known bad before decoding (a mistyped path), no model is loaded. A store with
    an index (``zsclip index``) is searched through it, candidates rescored exactly; ``exact``: score
    every row instead."""
    from ..data.images import load_image, probe_image

    if (query is None) == (image is None):
        raise InputError("give a text query or an image to search with (one of them)")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise InputError("the search text is empty: describe what to find, e.g. \"a dog on a beach\"")
    options = options or RunOptions()
    if output is not None:
        from ..outputs.rows import HitSink

        HitSink.check(output)
    if isinstance(image, (str, os.PathLike)):
        _not_a_video(image)
        with _naming(image):  # a query image that cannot be read is its one line before the model loads
            probe_image(image, options.max_pixels)
    source: FeatureSource = open_source(inputs, model=model)
    if exact and getattr(source, "kind", None) != "store":
        raise InputError("--exact applies to a store (images and shards are always scored one by one): leave it out")
    settings = ray_settings(ray)
    check_ray(source, settings)
    unread = _known_bad(source, inputs)
    if unread is not None:  # nothing to search: say so without loading a model
        hits = Hits([], unread)
    else:
        encoder = resolve_encoder(source, None, encoder=encoder, model=model, pretrained=pretrained, run=options,
                                  needs_model=True, ray=settings)
        source.check_encoder(encoder)
        if image is not None:
            with _naming(image):
                picture = load_image(image, encoder.image_size) if isinstance(image, (str, os.PathLike)) else image
            vector = encoder.encode_images(encoder.preprocess(picture.convert("RGB"))[None], "fp32")[0]
        else:
            vector = encoder.encode_text([query], precision="fp32")[0]
        failures: list[dict] = []
        indexed = None if exact else store_index(source)
        if indexed is not None:
            hits = Hits(indexed_hits(indexed, vector, top_k, failures, settings), failures)
        else:
            hits = Hits(nearest(features(source, encoder, options, settings), vector, top_k, failures), failures)
    if output is not None:
        from ..outputs.rows import HitSink

        HitSink.write_all(output, hits, hits.failures, timed=source.timed)
    return hits


def _not_a_video(image: str | os.PathLike) -> None:
    """A video given as the query: one line saying where videos go (a query is one image)."""
    from ..data.video import is_video_name, looks_like_video

    name = os.fspath(image)
    video = is_video_name(name)
    if not video and os.path.isfile(name):  # a FIFO or a device is never opened here: reading it could block
        try:
            with open(name, "rb") as handle:
                video = looks_like_video(handle.read(192))
        except OSError:
            return  # the image check names the problem
    if video:
        raise InputError(f"search image {name} is a video: a query is one image (search with a frame of it, saved as "
                         "an image); to search inside videos, give them as INPUT (`zsclip search VIDEOS \"TEXT\"`, "
                         "or embed them with --segment into a store and search that)")


def _known_bad(source: FeatureSource, inputs) -> list[dict] | None:
    """The failures of a source whose every input is already known bad (missing paths, globs matching
    nothing), or None when there is something to read. A lone missing path is named as the store,
    folder or file the user meant."""
    items = getattr(source, "sources", None) if isinstance(source, ImageFiles) else \
        getattr(source, "items", None) if isinstance(source, MediaFiles) else None
    if not items or any(item.error is None for item in items):
        return None
    lone = len(items) == 1 and isinstance(inputs, (str, os.PathLike)) or (
        isinstance(inputs, (list, tuple)) and len(inputs) == 1)
    return [{"path": item.name, "error": "no such store, folder or file" if lone and item.error ==
             "no such file or directory" else item.error} for item in items]


@contextlib.contextmanager
def _naming(image) -> Iterator[None]:
    """An unreadable query image as one line naming the file (the reason alone would not say which)."""
    try:
        yield
    except ImageReadError as error:
        raise InputError(f"search image {os.fspath(image)}: {error}") from None


def search_store(store, query: torch.Tensor, top_k: int = 10, batch_size: int = 8192,
                 exact: bool = False) -> list[tuple[str, float]]:
    """The ``top_k`` stored images nearest to ``query`` (a normalised [D] feature), best first (through the
    store's index when it has one, unless ``exact``)."""
    if query.numel() != store.embed_dim:
        from ..store.format import StoreError

        raise StoreError(f"a query of width {query.numel()} cannot search a store of width {store.embed_dim}: "
                         "use the store's model")
    hits = store_hits(store, query, top_k, exact=exact, batch_size=batch_size)
    return [(hit.source, hit.score) for hit in hits]


def store_hits(store, query: torch.Tensor, top_k: int, failures: list[dict] | None = None, *, exact: bool = False,
               batch_size: int = 8192, ray=None) -> list[Hit]:
    """The ``top_k`` rows of ``store`` nearest to ``query``: through its index when it has one (and not
    ``exact``), else every row scored. The one search of a store that the CLI, Python API and service share."""
    from ..job import StoreSource

    source = StoreSource(store, batch_size).unlabelled()
    indexed = None if exact else store_index(source)
    if indexed is not None:
        return indexed_hits(indexed, query, top_k, failures, ray)
    return nearest(source.batches(None, RunOptions(device="cpu")), query, top_k, failures)


def store_index(source: FeatureSource):
    """The index of a store source (``zsclip.store.index.StoreIndex``), or None: not a store, no index, or
    an index that could not be used at all (said in one warning line)."""
    from ..job import StoreSource

    if not isinstance(source, StoreSource):
        return None
    from ..store.index import StoreIndex, has_index

    if not has_index(source.store):
        return None
    index = StoreIndex.cached(source.store)
    return index if index is not None and index.parts else None


def indexed_hits(index, query: torch.Tensor, top_k: int, failures: list[dict] | None = None, ray=None) -> list[Hit]:
    """``nearest`` answered by a store's index: candidates per part (in Ray tasks with ``ray``), rescored
    exactly, merged; rows are named through ``zsclip.store.rows.describe_rows``; the view's rows recorded
    with an error are ``failures``, as an exact search reports them."""
    import numpy as np

    from ..store.rows import describe_rows, failed_rows

    if not 1 <= top_k <= MAX_RESULTS:
        raise InputError(f"--top-k {top_k}: ask for 1 to {MAX_RESULTS} results")
    vector = np.asarray(query.float().reshape(1, -1).numpy() if hasattr(query, "numpy") else query,
                        dtype=np.float32).reshape(1, -1)
    runner = None
    if ray is not None:
        from ..cluster.index import part_runner

        runner = part_runner(index.store, ray)
    found = index.search(vector, top_k, runner)[0]
    named = describe_rows(index.store, [(shard, row) for shard, row, _ in found])
    if failures is not None:
        failures.extend(failed_rows(index.store, index.masks))
    hits = []
    for rank, (shard, row, score) in enumerate(found, start=1):
        facts = named[(shard, row)]
        start, end = facts["start"], facts["end"]
        timed = start is not None and end is not None and start == start
        hits.append(Hit(rank, facts["path"], float(score), float(start) if timed else None,
                        float(end) if timed else None))
    return hits


__all__ = ["Hit", "Hits", "indexed_hits", "nearest", "search", "search_store", "store_hits", "MAX_RESULTS"]
