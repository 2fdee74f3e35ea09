"""``zsclip classify``: inputs in, one answer per input out (terminal table or a results file).

The command only builds a job from its options (a source from INPUTS, a head from the label,
classifier, tree and reject options, a runner from --ray) and streams its answers to a sink."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from ..options import DEFAULT_TOP_K
from ..outputs.text import printable
from .common import (
    Interrupted,
    classifier_option,
    decodes_videos,
    image_options,
    label_options,
    model_options,
    multilabel_options,
    note_video_options,
    per_video_option,
    ray_options,
    ray_settings,
    read_classes,
    run_options,
    say_accept,
    scale_option,
    transductive_option,
    usage_errors,
)
from .explain import explain_options
from .labelling import build_sink_options, sink_options
from .trees import tree_options


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@label_options
@classifier_option("A classifier file instead of --labels: from `zsclip build`, `zsclip adapt` (linear probe, "
                   "Tip-Adapter) or a saved tree classifier.")
@click.option("--top-k", "-k", default=None, type=click.IntRange(min=1),
              help=f"How many labels per image (default {DEFAULT_TOP_K}; flat labels only).")
@click.option("--output", "-o", type=click.Path(), default=None,
              help="Write results to .csv, .jsonl, .json or .parquet (by extension), or with --format a Label "
                   "Studio, FiftyOne or imagefolder dataset, instead of the terminal.")
@sink_options
@per_video_option("One row per video from its segments (a store embedded with --segment, or --segment here): "
                  "their embeddings' duration-weighted mean.")
@click.option("--accept-precision", type=float, default=None,
              help="With a calibrated classifier file (`zsclip calibrate`): each row gets accepted true/false, true "
                   "when its top-1 confidence reaches the threshold that gave this precision on the calibration "
                   "images (e.g. 0.95); the rest are for review.")
@transductive_option
@click.option("--explain", "explain_dir", type=click.Path(file_okay=False), default=None,
              help="Also write a heatmap per answered label (the top --top-k, a tree's path, multi-label's labels) "
                   "into this folder: overlay PNGs, .npy values, explained.jsonl (see `zsclip explain`).")
@explain_options
@tree_options
@multilabel_options
@model_options
@image_options
@scale_option
@ray_options
def classify(inputs, labels, labels_file, templates, classifier_file, top_k, output, output_format, image_prefix,
             image_root, files, per_video, accept_precision, transductive, labels_tree, tree_mode,
             beam, descriptions, reject, reject_calibrate, tpr, reject_score, reject_label, multi_label, multi_score,
             threshold, calibrate, target_precision, model, pretrained, device, precision, cache_dir, no_cache,
             batch_size, workers, max_pixels, decode, url_timeout, scale, ray_address, ray_actors,
             ray_stall_timeout, explain_dir=None, method=None, upscale=None) -> None:
    """Classify images into the classes you name.

    INPUTS are image files, folders (searched recursively), quoted glob patterns ("shots/**/*.jpg"),
    http(s) URLs, - to read one path or URL per line from stdin, WebDataset shards
    ("shards/{00000..00009}.tar"), or an embedding store from `zsclip embed` (no image decoded).

    \b
    Examples:
      zsclip classify photos/ --labels "dog,cat,car,airplane"
      zsclip classify "shots/**/*.jpg" --labels-file labels.txt --top-k 3 --output results.csv
      find /data -name '*.png' | zsclip classify - --labels-file labels.txt --output results.jsonl
      zsclip classify photos.zse --labels-tree taxonomy.yaml --tree-mode chils -o rows.parquet
      zsclip classify photos/ --classifier adapted.zsc --reject-calibrate known/ --tpr 0.95
      zsclip classify examples/ --labels-file examples/labels.txt --model demo   # offline
      zsclip classify photos/ --labels "dog,cat,person,car" --multi-label
      zsclip classify photos/ --labels-file tags.txt --multi-label --calibrate tagged.csv --target-precision 0.9
      zsclip classify photos/ --labels-file classes.txt -o tasks.json --format label-studio
      zsclip classify photos/ --labels-file classes.txt -o dataset/ --format fiftyone --files hardlink
      zsclip classify photos/ -c calibrated.zsc --accept-precision 0.95 -o rows.csv
      zsclip classify photos.zse --labels-file classes.txt --transductive

    --model demo needs no download, but it knows only the synthetic world it was trained on:
    red/green/blue/yellow/purple/orange/white/black circles, squares, triangles, stars, crosses
    and rings on plain backgrounds. Use a real model (the default) for real photos.

    Every head (labels, a classifier file, a label tree, rejection around either) works on every
    input (images, shards, stores) and with --ray; an option that does not apply is refused.

    Bad inputs (missing, empty, corrupt or huge files, unreachable or slow URLs, unreadable folders)
    are reported on stderr and in the output's error column; the run goes on. A file given twice
    (directly, by a glob, through a link) is classified once, with a note. Folders and globs take
    every image type the installed Pillow opens; links to folders are not followed.

    The output is checked writable before the run, written under a temporary name and renamed when
    complete: Ctrl-C leaves the rows so far in NAME.partial. Names and errors in CSV cells and on
    the terminal are shown escaped (control characters as \\n, \\x1b; file-name bytes that are not
    UTF-8 as \\xNN), and CSV cells starting with = + - @ get a ' so spreadsheets show them as text;
    JSON and JSONL keep the raw text.
    """
    from ..errors import ZsclipWarning
    from ..job import HeadOptions, open_source, plan
    from ..tasks.classify import answers

    options = run_options(device, precision, batch_size, workers, max_pixels, url_timeout, decode)
    arguments = [sys.stdin if item == "-" else item for item in inputs]
    with usage_errors():
        source = open_source(["-" if item is sys.stdin else item for item in arguments], model=model)
        if per_video:
            from ..tasks.classify import per_video_source

            source = per_video_source(source)
        head_options = HeadOptions(labels=read_classes(labels, labels_file), classifier=classifier_file,
                                   templates=templates, descriptions=descriptions, labels_tree=labels_tree,
                                   tree_mode=tree_mode, beam=beam, reject=reject, reject_calibrate=reject_calibrate,
                                   tpr=tpr, reject_score=reject_score, reject_label=reject_label, top_k=top_k,
                                   scale=scale, multi_label=multi_label, multi_score=multi_score,
                                   threshold=threshold, calibrate=calibrate, target_precision=target_precision,
                                   accept_precision=accept_precision, transductive=transductive)
        head_options.check()
        if top_k is None and not head_options.is_tree() and not head_options.is_multi_label():
            head_options.top_k = DEFAULT_TOP_K  # the service's too; the Python API's is 5
        sinks = build_sink_options(output_format, image_prefix, image_root, files)
        sink_name = sinks.resolve(output)
        from ..tasks.classify import check_labelling

        check_labelling(sink_name, source, options, per_video, image_root)
        _check_explain(explain_dir, method, upscale, source, per_video, transductive)
    _notes(source)
    note_video_options(decodes_videos(source))
    with usage_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = plan(source, head_options, model=model, pretrained=pretrained, run=options, cache=not no_cache,
                   cache_dir=cache_dir, ray=ray_settings(ray_address, ray_actors, ray_stall_timeout),
                   encoding_actors=explain_dir is None)
    for warning in caught:  # zsclip's own (a threshold out of range, one label); libraries' notes are not the user's
        if issubclass(warning.category, ZsclipWarning):
            click.echo(f"zsclip: warning: {printable(str(warning.message))}", err=True)
    rejector = getattr(job.head, "rejector", None)
    if rejector is not None and rejector.calibration:
        click.echo(f"zsclip: rejection threshold {rejector.threshold:.6g} ({rejector.score}) keeps "
                   f"{rejector.calibration['tpr']:.0%} of {rejector.calibration['num_images']} calibration images",
                   err=True)
    multilabel = getattr(job.head, "multilabel", None)
    if multilabel is not None and multilabel.calibration.get("num_images"):
        values = multilabel.thresholds
        click.echo(f"zsclip: {multilabel.score} thresholds ({multilabel.calibration['thresholds']}) from "
                   f"{multilabel.calibration['num_images']} calibration images: {float(values.min()):.4g} to "
                   f"{float(values.max()):.4g}", err=True)
    say_accept(job.head)
    if explain_dir is None:
        scored = _store_scores(job, transductive, sink_name)
        _emit(answers(job, transductive) if scored is None else None, len(source), job, output, sinks, scored)
        return
    from ..tasks.explain import explanations

    top = getattr(getattr(job.head, "inner", job.head), "top_k", 1)
    explained = explanations(job, top_k=top, method=method, upscale=upscale, directory=Path(explain_dir),
                             templates=templates)
    _emit((explanation.prediction for explanation in explained), len(source), job, output, sinks)


def _check_explain(explain_dir, method, upscale, source, per_video: bool, transductive=None) -> None:
    """--explain's refusals, while parsing: what it cannot apply to, and its options without it."""
    from ..errors import InputError

    if explain_dir is None:
        if method is not None or upscale is not None:
            raise InputError(f"{'--method' if method is not None else '--upscale'} shapes heatmaps: add --explain DIR")
        return
    if per_video:
        raise InputError("--explain draws heatmaps on images: leave out --per-video")
    if transductive is not None:
        raise InputError("--explain explains each image's own answer, not one corrected over the collection: "
                         "leave out --transductive")
    from ..tasks.explain import check_output_dir, check_source

    check_source(source)
    check_output_dir(explain_dir)


def _notes(source) -> None:
    duplicates = getattr(source, "duplicates", [])
    for duplicate, kept in duplicates[:5]:
        click.echo(f"zsclip: note: {printable(duplicate.name)} is the same file as {printable(kept.name)}; "
                   "classified once", err=True)
    if len(duplicates) > 5:
        click.echo(f"zsclip: note: {len(duplicates) - 5} more files were given twice; each classified once", err=True)


def _store_scores(job, transductive, sink_name: str):
    """A store's flat top-k answers as arrays when they go to a CSV file: written a batch at a time (no Python
    object per row; the same bytes). None for any other run."""
    if transductive is not None or sink_name != "csv":
        return None
    from ..tasks.scores import store_scores

    return store_scores(job)


def _emit(predictions, total: int, job, output: str | None, sinks=None, scored=None) -> None:
    """Write or print answers as they stream; report failures; exit with the documented status. ``scored``:
    the answers as batches of arrays (``_store_scores``) instead of ``predictions``."""
    from tqdm.auto import tqdm

    from ..tasks.classify import open_sink

    with usage_errors():
        sink = open_sink(output, job, sinks) if output else None
    failures = count = 0
    bar = tqdm(total=total or None, unit="img", desc="classifying", file=sys.stderr,
               disable=not sys.stderr.isatty() or total < 2, dynamic_ncols=True)
    try:
        for rows, failed in (_batches_written(scored, sink) if scored is not None else
                             _predictions_written(predictions, sink)):
            count += rows
            for source, error in failed:
                failures += 1
                tqdm.write(f"zsclip: skipped {printable(source)}: {printable(error)}", file=sys.stderr)
            bar.update(rows)
    except KeyboardInterrupt:
        kept = (f"the rows so far are in {printable(sink.abandon())} ({printable(output)} is written only when a run "
                "completes)" if sink else "the rows so far are printed above")
        raise Interrupted(f"interrupted after {count} of {total or count} inputs: {kept}; run the same command again "
                          "to classify them all") from None
    except BaseException:
        if sink:
            click.echo(f"zsclip: stopped by an error; results so far are in {printable(sink.abandon())}", err=True)
        raise
    finally:
        bar.close()
    if sink:
        sink.close()
    click.echo(f"zsclip: classified {count - failures} of {count} images"
               + (f"; {failures} failed" if failures else "")
               + (f"; results in {printable(output)}" if output else ""), err=True)
    sys.exit(1 if failures else 0)


def _predictions_written(predictions, sink):
    """(rows counted, [(source, error)] failed) per answer, each then written to ``sink`` or printed (an interrupted
    run counts the row it was writing, as before); a video's note row (cut short) is written, shown, not counted."""
    from tqdm.auto import tqdm

    from ..data.video import NOTE, is_note
    from ..outputs.rows import print_prediction

    for prediction in predictions:
        if is_note(prediction.error):  # a video cut short: its other rows stand (the file keeps the note row)
            tqdm.write(f"zsclip: note: {printable(prediction.source)}: {printable(prediction.error[len(NOTE):])}",
                       file=sys.stderr)
            if sink:
                sink.write(prediction)
            continue
        yield 1, [(prediction.source, prediction.error)] if prediction.error else []  # counted, then written
        if sink:
            sink.write(prediction)
        else:
            print_prediction(prediction, sys.stdout)


def _batches_written(scored, sink):
    """(rows, [(source, error)] failed) per batch of a store's answers as arrays, each then written to ``sink``."""
    for batch in scored:
        yield len(batch.paths), [(path, error) for path, error in zip(batch.paths, batch.errors, strict=True) if error]
        sink.write_arrays(batch.paths, batch.errors, batch.indices, batch.scores, batch.classnames)
