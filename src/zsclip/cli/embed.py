"""``zsclip embed``: encode images once into a store; later runs add only what is new or changed."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter

import click

from ..data.collections import open_collection
from ..data.hf import hf_layout, one_split, open_hf
from ..data.shards import is_shards
from ..data.sources import unique_sources
from ..outputs.text import printable
from ..prompts import read_labels
from ..store.defaults import COMMIT_EVERY
from .common import (
    Interrupted,
    UsageFailure,
    given,
    image_options,
    model_options,
    note_video_options,
    ray_options,
    ray_settings,
    run_options,
    usage_errors,
)

NO_VIDEO_TO_REEMBED = "--reembed embeds videos again with new --frames / --segment: there is no video among the inputs"


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True,
              help="The store folder (created, or added to: only new or changed files are encoded); a local path or "
                   "a pyarrow filesystem URI (s3://bucket/photos.zse, gs://..., hdfs://...).")
@click.option("--labelled", is_flag=True,
              help="INPUT is a labelled collection (class-per-folder tree or a .csv/.jsonl manifest): the store "
                   "keeps each image's label (or label set, from a multi-label manifest), so `zsclip eval --data "
                   "STORE` (with --multi-label) works.")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
              help="With --labelled: class names, one per line, in class-index order (WebDataset shards whose "
                   "labels are indices), or renaming a folder tree's classes in sorted folder order.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default=None,
              help="How embeddings are stored: float16 (the default for a new store) is half the disk with the same "
                   "top-1 (see the README). An existing store keeps its own; another one given is refused.")
@click.option("--commit-every", default=COMMIT_EVERY, show_default=True, type=click.IntRange(min=1),
              help="Images per shard: a killed run loses at most this many, and resumes from there.")
@click.option("--reembed", is_flag=True,
              help="Videos: embed every video again with this run's --frames / --segment / --max-video-frames, "
                   "replacing clips the store holds with other settings (which are otherwise refused).")
@model_options
@image_options
@ray_options
def embed_command(inputs, output, labelled, labels_file, dtype, commit_every, reembed, model, pretrained, device,
                  precision, cache_dir, no_cache, batch_size, workers, max_pixels, decode, url_timeout, ray_address,
                  ray_stall_timeout, ray_actors) -> None:
    """Encode images once into an embedding store, to classify, evaluate and search without decoding them again.

    \b
    Examples:
      zsclip embed photos/ --model ViT-B-32 --pretrained laion2b_s34b_b79k --output photos.zse
      zsclip embed photos/ --output photos.zse        # later: only new or changed files are encoded
      zsclip classify photos.zse --labels "forklift,pallet,empty shelf" --output results.parquet
      zsclip embed labelled_tree/ --labelled --output tree.zse && zsclip eval --data tree.zse
      zsclip search photos.zse "a forklift in the rain" --top-k 20
      zsclip embed "shards/**/*.jpg" --output store/ --ray auto      # on Ray: local, or $RAY_ADDRESS

    A store is a folder of Parquet shards and a JSON manifest naming the model. Rows are committed
    every --commit-every images: kill the run at any time and run the same command again, and it
    goes on from the last commit. Changed files are encoded again; files that are gone are dropped
    from the store's view. The model of an existing store is the one used (--model must match).
    """
    from tqdm.auto import tqdm

    from ..job.sources import has_videos
    from ..store import embed
    from ..tasks.classify import expand_sources

    options = run_options(device, precision, batch_size, workers, max_pixels, url_timeout, decode)
    settings = ray_settings(ray_address, ray_actors, ray_stall_timeout)
    with usage_errors():
        unused = next((f"--{name.replace('_', '-')}" for name in ("cache_dir", "no_cache") if given(name)), None)
        if unused:
            raise UsageFailure(f"{unused} is about the classifier cache, and embed builds no classifier: leave it out")
        if labels_file and not labelled:
            raise UsageFailure("--labels-file names the classes of --labelled data: add --labelled")
        if reembed and len(inputs) == 1 and (is_shards(inputs[0]) or hf_layout(inputs[0]) in ("parquet", "arrow")):
            raise UsageFailure(NO_VIDEO_TO_REEMBED)
        if len(inputs) == 1 and (is_shards(inputs[0]) or hf_layout(inputs[0]) in ("parquet", "arrow")):
            note_video_options(False)
        if len(inputs) == 1 and is_shards(inputs[0]):
            _embed_shards(inputs[0], output, labelled, labels_file, dtype, commit_every, model, pretrained, options,
                          settings)
            return
        if len(inputs) == 1 and hf_layout(inputs[0]) in ("parquet", "arrow"):
            _embed_source("table", inputs, output, labelled, labels_file, dtype, commit_every, model, pretrained,
                          options, settings)
            return
        classnames, multi_label = None, False
        if labelled:
            if len(inputs) != 1:
                raise UsageFailure("--labelled takes one labelled collection (a class-per-folder tree or a manifest)")
            classes = read_labels(labels_file) if labels_file else None
            data = one_split(inputs[0]) if hf_layout(inputs[0]) == "splits" else inputs[0]
            if hf_layout(data) == "imagefolder":
                collection = open_hf(data, [synonyms[0] for synonyms in classes] if classes else None)
                sources, classnames = list(collection.items), list(collection.classnames)
            else:
                collection, _ = open_collection(data, classes)
                sources, classnames = collection.labelled_sources(), list(collection.classnames)
                multi_label = collection.multi_label
        else:
            sources, duplicates = unique_sources(s for item in inputs for s in expand_sources(item))
            for duplicate, kept in duplicates[:5]:
                click.echo(f"zsclip: note: {printable(duplicate.name)} is the same file as {printable(kept.name)}; "
                           "embedded once", err=True)
        if not sources:
            raise UsageFailure("no images to embed: give image files, folders or glob patterns")
        note_video_options(has_videos(sources))
        if has_videos(sources):
            _embed_source("media", sources, output, labelled, None, dtype, commit_every, model, pretrained,
                          options, settings, classnames, reembed)
            return
        if reembed:
            raise UsageFailure(NO_VIDEO_TO_REEMBED)
        if settings is None and model is None and pretrained is None and _existing_model(output):
            # a rerun: the store's model loads only if some file is new or changed
            encoder, store = None, _open_existing(output, dtype, classnames, multi_label)
        else:
            encoder, store = _open_store(output, model, pretrained, options, dtype, classnames, multi_label,
                                         ray_pool=settings)
    with tqdm(total=len(sources), unit="img", desc="embedding", file=sys.stderr, dynamic_ncols=True,
              disable=not sys.stderr.isatty()) as bar, usage_errors(), _resumable(output, store):
        if settings is not None:
            from ..cluster.tasks import embed_on_ray

            nodes: Counter = Counter()
            report = embed_on_ray(store, sources, encoder, options, settings, nodes=nodes, commit_every=commit_every,
                                  on_progress=bar.update)
        else:
            nodes, report = Counter(), embed(store, sources, encoder, options, commit_every=commit_every,
                                             on_progress=bar.update,
                                             load_encoder=lambda: _store_model(store, options))
    click.echo(f"zsclip: {printable(output)}: {report.encoded} encoded, {report.skipped} unchanged, "
               f"{report.failed} failed, {report.deleted} gone; {len(store)} images in the store", err=True)
    if nodes:
        click.echo(f"zsclip: Ray: encoded on {len(nodes)} node(s): "
                   + ", ".join(f"{node[:12]} {count}" for node, count in nodes.most_common()), err=True)
    sys.exit(1 if report.failed else 0)


def _embed_shards(pattern, output, labelled, labels_file, dtype, commit_every, model, pretrained, options,
                  settings) -> None:
    """WebDataset shards into a store: samples as rows (``shard#key``), unchanged shards skipped."""
    from tqdm.auto import tqdm

    from ..job import open_source
    from ..tasks.embed import embed_shards

    source = open_source([pattern], labelled=labelled, classes=read_labels(labels_file) if labels_file else None)
    encoder, store = _open_store(output, model, pretrained, options, dtype,
                                 list(source.classnames) if source.labelled else None, ray_pool=settings)
    with tqdm(unit="img", desc="embedding", file=sys.stderr, dynamic_ncols=True,
              disable=not sys.stderr.isatty()) as bar, _resumable(output, store):
        report = embed_shards(store, source, encoder, options, commit_every=commit_every, on_progress=bar.update,
                              ray=settings)
    click.echo(f"zsclip: {printable(output)}: {report.encoded} encoded, {report.skipped} unchanged shards, "
               f"{report.failed} failed; {len(store)} images in the store", err=True)
    sys.exit(1 if report.failed else 0)


def _embed_source(kind, inputs, output, labelled, labels_file, dtype, commit_every, model, pretrained, options,
                  settings, classnames=None, reembed: bool = False) -> None:
    """Videos (a row per clip, with its span) or a Hugging Face split (a row per record) into a store."""
    from tqdm.auto import tqdm

    from ..job import MediaFiles, open_source
    from ..tasks.embed import embed_media, embed_table

    if kind == "media":
        _check_sampling(output, options, reembed)  # before the model loads
        source = MediaFiles(inputs, classnames)
    else:
        source = open_source(inputs, labelled=labelled, classes=read_labels(labels_file) if labels_file else None)
    encoder, store = _open_store(output, model, pretrained, options, dtype,
                                 list(source.classnames) if source.labelled else None)
    extra = {"reembed": reembed} if kind == "media" else {}
    run = embed_media if kind == "media" else embed_table
    with tqdm(total=len(source) or None, unit="file" if kind == "media" else "img", desc="embedding",
              file=sys.stderr, dynamic_ncols=True, disable=not sys.stderr.isatty()) as bar, usage_errors(), \
            _resumable(output, store):
        report = run(store, source, encoder, options, commit_every=commit_every, on_progress=bar.update, ray=settings,
                     **extra)
    for name, text in report.notes:
        click.echo(f"zsclip: note: {printable(name)}: {printable(text)}", err=True)
    click.echo(f"zsclip: {printable(output)}: {report.encoded} encoded, {report.skipped} unchanged, "
               f"{report.failed} failed, {report.deleted} gone; {len(store)} rows in the store", err=True)
    sys.exit(1 if report.failed else 0)


@contextlib.contextmanager
def _resumable(output: str, store):
    """Ctrl-C while embedding: one line saying what the store holds (rows are committed every --commit-every
    images) and that the same command goes on from there."""
    try:
        yield
    except KeyboardInterrupt:
        try:
            held = f"{len(store)} rows"
        except Exception:  # the store's count is only a courtesy here
            held = "the rows"
        raise Interrupted(f"interrupted: {printable(output)} keeps {held} committed so far (every --commit-every "
                          "images); run the same command again to go on from there") from None


def _open_store(output: str, model, pretrained, options, dtype: str, classnames, multi_label: bool = False,
                ray_pool=None):
    """(encoder, store): the store at ``output`` opened with its own model (a rerun needs no --model) or
    created with the one named, for every kind of input embed takes. ``ray_pool``: the RaySettings of
    a job Ray's actor pool will encode, whose actors start before this process loads the model."""
    from ..encoders.resolve import default_weights, resolve_model
    from ..store import EmbeddingStore

    existing = _existing_model(output)
    if existing and model is None:
        model, pretrained = existing[0], pretrained or existing[1]
    if dtype is None:
        dtype = _existing(output).dtype if existing else "float16"
    if ray_pool is not None:
        from ..cluster.pipeline import prestart

        prestart(*default_weights(model, pretrained), options, ray_pool)
    encoder = resolve_model(model, pretrained, options)
    return encoder, EmbeddingStore.create_or_open(output, encoder, precision=options.precision, dtype=dtype,
                                                  classnames=classnames, multi_label=multi_label)


def _check_sampling(folder: str, options, reembed: bool) -> None:
    """Refuse videos sampled otherwise than an existing store's clips, in one line, before any model loads."""
    from ..data.video import Sampling
    from ..store.format import MANIFEST, read_manifest
    from ..store.location import Location
    from ..store.store import sampling_mismatch

    location = Location(folder)
    if not location.exists(MANIFEST):
        return
    asked = Sampling(options.frames, options.segment, options.max_video_frames).record()
    problem = sampling_mismatch(location, read_manifest(location).get("video_sampling"), asked, reembed)
    if problem:
        raise UsageFailure(problem)


def _existing(folder: str):
    """The store at ``folder`` as its manifest describes it, or None when there is none yet."""
    from ..store import EmbeddingStore
    from ..store.format import MANIFEST, read_manifest
    from ..store.location import Location

    location = Location(folder)
    if not location.exists(MANIFEST):
        return None
    return EmbeddingStore(location, read_manifest(location))


def _existing_model(folder: str) -> tuple[str, str | None] | None:
    """(model, pretrained) an existing store was made with, so a rerun needs no --model."""
    store = _existing(folder)
    return None if store is None else (store.model, store.pretrained)  # its model keeps a prefix (transformers:)


def _open_existing(output: str, dtype: str | None, classnames, multi_label: bool):
    """An existing store opened for adding without its model (checked when one loads): its dtype unless
    --dtype names one (then it must match), its classes and label kind checked now."""
    from ..store import EmbeddingStore

    store = _existing(output)
    return EmbeddingStore.create_or_open(output, None, precision="auto", dtype=dtype or store.dtype,
                                        classnames=classnames, multi_label=multi_label)


def _store_model(store, options):
    """The model (and weights) a store was made with, loaded when some file is new."""
    from ..encoders.resolve import resolve_model

    return resolve_model(store.model, store.pretrained, options)
