"""``zsclip sort``: a collection into class folders by the model's answers (``zsclip.tasks.sort``)."""

from __future__ import annotations

import sys

import click

from ..outputs.placing import PLACE_MODES
from ..outputs.text import printable
from .common import (
    classifier_option,
    decodes_videos,
    image_options,
    label_options,
    model_options,
    note_video_options,
    per_video_option,
    ray_options,
    ray_settings,
    read_classes,
    run_options,
    say_accept,
    scale_option,
    usage_errors,
)
from .trees import tree_options


@click.command("sort")
@click.argument("inputs", nargs=-1, required=True)
@label_options
@classifier_option("A classifier file instead of --labels (from `zsclip build` or `zsclip adapt`).")
@click.option("--into", required=True, type=click.Path(file_okay=False),
              help="The folder to sort into (created; an earlier run's folder is resumed).")
@click.option("--accept", type=float, default=None,
              help="The score an answer needs to go into its class folder (e.g. 0.9); below it, into _review/.")
@click.option("--accept-precision", type=float, default=None,
              help="Instead of --accept, with a classifier file calibrated by `zsclip calibrate`: the precision the "
                   "images in class folders should reach (e.g. 0.95). The threshold is the one classify "
                   "--accept-precision uses, chosen on the calibration images, on calibrated confidences.")
@click.option("--files", type=click.Choice(PLACE_MODES), default="copy", show_default=True,
              help="Copy the images or hard-link them (no extra space). Originals are never moved.")
@per_video_option("Videos: one answer per video from its segments (with --segment).")
@tree_options
@model_options
@image_options
@scale_option
@ray_options
def sort_command(inputs, labels, labels_file, templates, classifier_file, into, accept, accept_precision, files,
                 per_video, labels_tree, tree_mode, beam, descriptions, reject, reject_calibrate, tpr, reject_score,
                 reject_label, model, pretrained, device, precision, cache_dir, no_cache, batch_size, workers,
                 max_pixels, decode, url_timeout, scale, ray_address, ray_actors, ray_stall_timeout) -> None:
    """Sort images into class folders: the sure ones into CLASS/, the rest into _review/.

    \b
    INTO/<class>/      images whose answer scores at least --accept (a label tree: <level1>/<level2>/), or
                       with --accept-precision those classify -c FILE --accept-precision marks accepted
    INTO/_review/      the others; INTO/_review.csv lists them least confident first (score, runner-up, margin)
    INTO/_unknown/     images the reject head refused (--reject / --reject-calibrate: "none of these")
    INTO/_errors.csv   files that could not be read

    \b
    Examples:
      zsclip sort photos/ --labels-file classes.txt --into sorted/ --accept 0.9
      zsclip sort photos/ --labels "cat,dog" --reject-calibrate known/ --into sorted/ --accept 0.8 --files hardlink
      zsclip calibrate --data labelled/ --labels-file classes.txt -o calibrated.zsc
      zsclip sort photos/ -c calibrated.zsc --into sorted/ --accept-precision 0.95

    Images are copied (or hard-linked), never moved or overwritten: a name taken in a folder gets a suffix
    (cat_1.jpg). Killed or interrupted, the same command resumes: a journal (INTO/.zsclip-sort.jsonl) records
    every placed image, so each is placed once.

    Exit status: 0 all sorted, 1 some files could not be read, 2 usage error, 130 interrupted.
    """
    from ..job import HeadOptions, open_source, plan
    from ..outputs.labelling import LabelSpace
    from ..tasks.classify import answers, per_video_source
    from ..tasks.sort import Sorter, accept_threshold, check_accept, check_into, skip_done, sort_answers

    options = run_options(device, precision, batch_size, workers, max_pixels, url_timeout, decode)
    with usage_errors():
        check_accept(accept, accept_precision, classifier_file is not None)  # refused now, before a model loads
        check_into(into)
        source = open_source(list(inputs), model=model)
        if per_video:
            source = per_video_source(source)
        elif options.segment is not None:
            raise click.UsageError("sort places each file once, and --segment answers per clip: add --per-video")
        note_video_options(decodes_videos(source))
        head_options = HeadOptions(labels=read_classes(labels, labels_file), classifier=classifier_file,
                                   templates=templates, descriptions=descriptions, labels_tree=labels_tree,
                                   tree_mode=tree_mode, beam=beam, reject=reject, reject_calibrate=reject_calibrate,
                                   tpr=tpr, reject_score=reject_score, reject_label=reject_label, scale=scale,
                                   accept_precision=accept_precision)
        head_options.check()
        if not head_options.is_tree():
            head_options.top_k = 2  # the runner-up, for the review list's margin
        job = plan(source, head_options, model=model, pretrained=pretrained, run=options, cache=not no_cache,
                   cache_dir=cache_dir, ray=ray_settings(ray_address, ray_actors, ray_stall_timeout))
        sorter = Sorter(into, LabelSpace.of(job.head, timed=job.source.timed),
                        accept_threshold(job.head, accept, accept_precision), files)
    say_accept(job.head)
    skipped = skip_done(job.source, sorter)
    if skipped:
        click.echo(f"zsclip: resuming {printable(into)}: {skipped} images were placed by an earlier run", err=True)
    try:
        summary = sort_answers(answers(job), sorter)
    except KeyboardInterrupt:
        click.echo(f"zsclip: interrupted; run the same command to resume {printable(into)}", err=True)
        raise
    rule = f"score >= {summary.threshold:g}" if summary.threshold != float("inf") else "none reach the precision"
    click.echo(f"zsclip: sorted into {printable(into)}: {summary.accepted} accepted ({rule}), "
               f"{summary.review} to review, {summary.unknown} unknown, {summary.errors} unreadable"
               + (f", {summary.skipped} placed earlier" if summary.skipped else ""), err=True)
    sys.exit(1 if summary.errors else 0)
