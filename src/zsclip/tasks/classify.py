"""Classify: a job's answers as rows, one per input, in input order, streamed (and written to a sink).

``classify`` is the library call under ``zsclip classify``, the service's batch jobs and the Ray
runner. It takes any source (images, folders, globs, URLs, shards, a manifest, an embedding store)
and any head (labels, a classifier file of any kind, a label tree in a mode, a rejector around
either); a bad input is a row with its error, never an exception that ends the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..classifier.predict import TopK
from ..data.sources import Source, expand_inputs
from ..heads.base import Prediction
from ..job import HeadOptions, Job, open_source, plan
from ..options import RunOptions
from .models import Classes, Templates

if TYPE_CHECKING:
    from ..encoders.base import Encoder


def classify(
    inputs,
    labels: Classes | None = None,
    *,
    classifier=None,
    templates: Templates = None,
    descriptions=None,
    labels_tree=None,
    tree_mode: str | None = None,
    beam: int | None = None,
    reject: float | None = None,
    reject_calibrate=None,
    tpr: float | None = None,
    reject_score: str | None = None,
    reject_label: str | None = None,
    top_k: int | None = None,
    scale: float | None = None,
    multi_label: bool | None = None,
    multi_score: str | None = None,
    threshold: float | None = None,
    calibrate=None,
    target_precision: float | None = None,
    accept_precision: float | None = None,
    transductive: str | None = None,
    encoder: Encoder | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    options: RunOptions | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    ray=None,
    per_video: bool = False,
    output_format: str | None = None,
    sink_options=None,
) -> Iterator[Prediction]:
    """Classify images (files, folders, globs, URLs), WebDataset shards, or an embedding store.

    The head: ``labels`` (with ``templates``, ``descriptions``), or ``classifier`` (a file or object:
    zero-shot, linear probe, Tip-Adapter, or a tree classifier), or ``labels_tree`` (a tree file or a
    ``LabelTree``, with ``tree_mode`` and ``beam``); ``reject`` (a fixed threshold) or
    ``reject_calibrate`` (images of the named classes, kept at rate ``tpr``) wraps it in open-set
    rejection. ``multi_label`` gives every label over its own threshold (``multi_score``: collection, negative,
    standardised, sigmoid, softmax; ``threshold`` fixed, or ``calibrate`` on a multi-label manifest,
    for ``target_precision`` or the best F1). ``accept_precision``: with a calibrated classifier file
    (``zsclip calibrate``), each row's ``accepted`` says whether its top-1 confidence reaches the threshold
    chosen for that precision on the calibration images. ``transductive`` ("em", "ot", "ot-em"): a flat
    head's answers corrected over the whole collection (``zsclip.tasks.transductive``). Options that cannot
    apply are refused (``InputError``) before anything runs.

    Returns an iterator of ``Prediction``s, one per input in order (``.record`` holds a tree's
    levels); with ``output`` (.csv, .jsonl, .json, .parquet) the rows are also written there,
    atomically, when the iterator is exhausted. ``ray``: True / "auto" / an address runs the job on Ray.
    ``per_video``: one row per video from its clips (a store of ``--segment`` rows, or ``segment`` files).
    ``output_format``: a sink by name where the extension cannot tell (``label-studio``, ``fiftyone``,
    ``imagefolder``, see ``zsclip.outputs.sinks``), with their options in ``sink_options`` (a SinkOptions).
    """
    sink_options = _sink_options(output_format, sink_options)
    sink_name = sink_options.resolve(output)
    source = open_source(inputs, model=model if _is_single_store(inputs) else None)
    check_labelling(sink_name, source, options, per_video, sink_options.image_root)
    job = plan(per_video_source(source) if per_video else source,
               HeadOptions(labels, classifier, templates, descriptions, labels_tree, tree_mode, beam, reject,
                           reject_calibrate, tpr, reject_score, reject_label, top_k, scale, multi_label, multi_score,
                           threshold, calibrate, target_precision, accept_precision, transductive),
               encoder=encoder, model=model, pretrained=pretrained, run=options, cache=cache, cache_dir=cache_dir,
               ray=ray)
    sink = open_sink(output, job, sink_options) if output is not None else None
    rows = answers(job, transductive)
    return _written(rows, sink) if sink is not None else rows


def per_video_source(source):
    """``source`` with its video clips pooled per video (``--per-video``); refused where nothing is timed."""
    from ..errors import InputError
    from ..job.sources import PerVideo

    if not source.timed:
        raise InputError(f"--per-video pools video clips: {source.describe()} has no videos")
    return PerVideo(source)


def _is_single_store(inputs) -> bool:
    from ..job.sources import is_store

    single = inputs if isinstance(inputs, (str, os.PathLike)) else None
    if single is None and isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        single = inputs[0] if isinstance(inputs[0], (str, os.PathLike)) else None
    return single is not None and is_store(single)


def answers(job: Job, transductive: str | None = None) -> Iterator[Prediction]:
    """Every input's answer, in order: the head's for inputs with features, an error row for the rest;
    with ``transductive`` (a method of ``zsclip.calibration.METHODS``), corrected over the collection."""
    if transductive is not None:
        from .transductive import transductive_answers

        yield from transductive_answers(job, transductive)
        return
    from ..job.collection import over_collection

    head, batches = over_collection(job.head, job.features())  # a score over every image: all batches first
    for batch in batches:
        answered = iter(head.answer(batch.values))  # a store's numpy rows as they are (see Head.takes_arrays)
        spans = batch.spans or [None] * len(batch.ids)
        for name, error, span in zip(batch.ids, batch.errors, spans, strict=True):
            if error is not None:
                answer = Prediction(name, [], [], error)
            else:
                answer = next(answered)
                answer.source = name
            if span is not None:
                answer.start, answer.end = span
            yield answer


def _sink_options(output_format: str | None, sink_options):
    from dataclasses import replace

    from ..outputs.sinks import SinkOptions

    sink_options = sink_options or SinkOptions()
    return replace(sink_options, format=output_format) if output_format is not None else sink_options


def check_labelling(sink_name: str, source, options: RunOptions | None, per_video: bool,
                    image_root: str | None = None) -> None:
    """Refuse a labelling format for inputs it cannot hold (see ``zsclip.outputs.sinks.check_source``)."""
    from ..outputs.sinks import check_source

    clips = not per_video and options is not None and options.segment is not None
    check_source(sink_name, source, clips, image_root)


def open_sink(output: str | os.PathLike, job: Job, sink_options=None):
    """The sink for ``output``: rows by extension, or a labelling format (``sink_options.format``); checked
    writable now, before any work."""
    from ..outputs.rows import RowSink
    from ..outputs.sinks import LABELLING_FORMATS, open_labelling_sink

    sink_options = _sink_options(None, sink_options)
    name = sink_options.resolve(output)
    if name in LABELLING_FORMATS:
        from ..outputs.labelling import LabelSpace

        return open_labelling_sink(name, output, LabelSpace.of(job.head, timed=job.source.timed), sink_options)
    head = job.head
    top_k = getattr(getattr(head, "inner", head), "top_k", 1)
    return RowSink(output, head.columns, top_k, timed=job.source.timed,
                   accept=getattr(head, "accept", None) is not None)


def _written(rows: Iterator[Prediction], sink) -> Iterator[Prediction]:
    """Pass rows through while writing them; the file is renamed into place at the end (an
    interrupted run leaves NAME.partial)."""
    try:
        for row in rows:
            sink.write(row)
            yield row
    except BaseException:
        sink.abandon()
        raise
    sink.close()


def classify_items(items, classifier, encoder: Encoder, *, top_k: int = 5, scale: float | None = None,
                   options: RunOptions | None = None, rejector=None) -> Iterator[Prediction]:
    """Predictions for already expanded ``items`` (sources or PIL images) with a built classifier:
    the job of an image source and a flat head (wrapped in ``rejector`` when given)."""
    from ..heads import FlatHead, RejectingHead
    from ..job import ImageFiles

    classifier.check_encoder(encoder)
    head = FlatHead(classifier, top_k, scale)
    job = Job(ImageFiles(items), head if rejector is None else RejectingHead(head, rejector), encoder,
              options or RunOptions())
    return answers(job)


def expand_sources(inputs: str | os.PathLike | Iterable[str | os.PathLike | Source]) -> Iterator[Source]:
    """Sources from what the user named (one or many paths, folders, globs, URLs; ``Source`` as is)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        if isinstance(item, Source):
            yield item
        else:
            yield from expand_inputs([os.fspath(item)])


__all__ = ["Prediction", "TopK", "classify", "classify_items", "answers", "open_sink", "check_labelling",
           "expand_sources"]
