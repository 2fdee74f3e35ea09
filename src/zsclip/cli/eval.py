"""``zsclip eval``: zero-shot accuracy on labelled images, as CLIP_benchmark reports it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..data.collections import open_collection
from ..errors import InputError
from ..outputs import PredictionsCsv, write_json
from ..outputs.atomic import check_writable
from ..outputs.text import printable
from ..prompts import read_labels, resolve_templates
from ..tasks.evaluate import NothingDecodedError, benchmark_record, evaluate
from ..tasks.models import default_weights, resolve_model
from .common import image_options, model_options, run_options, usage_errors


@click.command(name="eval")
@click.option("--data", "-d", required=True,
              help="A class-per-folder tree (folder names are the classes), a .csv/.jsonl manifest of path,label, "
                   "or WebDataset shards (\"shards/{00000..00099}.tar\", with --labels-file).")
@click.option("--dataset", default=None,
              help="Name recorded in the results; imagenet1k also gives ImageNet's class names for synset folders.")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
              help="Class names, one per line in the folders' sorted order (synonyms: 'dog | puppy').")
@click.option("--templates", "-t", default="openai-imagenet", show_default=True,
              help="One or more template sets or files, comma-separated: all are scored on one pass over the images.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write results as JSON (CLIP_benchmark's layout plus per-class metrics and failures).")
@click.option("--report", "-r", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write a report folder: index.html with plots, metrics.json, predictions.csv.")
@model_options
@image_options
def eval_command(data, dataset, labels_file, templates, output, report_dir, model, pretrained, device, precision,
                 cache_dir, no_cache, batch_size, workers, max_pixels, decode, url_timeout) -> None:
    """Measure zero-shot accuracy on labelled images: acc1, acc5, mean per-class recall.

    \b
    Examples:
      zsclip eval --data /data/imagenet/val --dataset imagenet1k --model ViT-B-32 --pretrained laion2b_s34b_b79k
      zsclip eval --data my_photos/ --templates openai-imagenet,openai-imagenet-7,photo
      zsclip eval --data labels.csv --labels-file classes.txt --output results.json
      zsclip eval --data "shards/{00000..00099}.tar" --labels-file classes.txt

    Images that fail to decode are listed on stderr and in the results, and the metrics count the
    others; the exit status is then 1 (as for classify). If no image can be read, that is one line
    and exit 1. Templates, labels and the -o / --report places are checked before the pass starts.
    Manifests and labels files are UTF-8 (a BOM is fine); a line starting with # is a comment.
    """
    options = run_options(device, precision, batch_size, workers, max_pixels, url_timeout, decode)
    model, pretrained = default_weights(model, pretrained)
    with usage_errors():
        template_sets = [name.strip() for name in templates.split(",") if name.strip()]
        if not template_sets:
            raise InputError(f"--templates {templates!r} names no template set: give e.g. openai-imagenet, or "
                             "several comma-separated (openai-imagenet,photo)")
        for name in template_sets:
            resolve_templates(name)
        if output:
            check_writable(output, "--output")
        if report_dir:
            _check_report_folder(Path(report_dir))
        collection, classes = open_collection(data, read_labels(labels_file) if labels_file else None, dataset)
        encoder = resolve_model(model, pretrained, options)
    try:
        with PredictionsCsv(report_dir, collection.classnames) as on_prediction:
            result = evaluate(collection, encoder, template_sets, classes=classes, options=options,
                              cache=not no_cache, cache_dir=cache_dir, progress=sys.stderr.isatty(),
                              on_prediction=on_prediction)
    except NothingDecodedError as error:
        _report_failures(error.failures)
        raise
    record = benchmark_record(result, dataset or Path(data).name, model, pretrained)
    _report_failures(result.failures)
    for name, metrics in result.metrics.items():
        acc5 = "n/a" if metrics["acc5"] is None else f"{metrics['acc5']:.2%}"
        click.echo(f"{name:24s} acc1 {metrics['acc1']:.2%}  acc5 {acc5}  "
                   f"mean per-class recall {metrics['mean_per_class_recall']:.2%}")
    click.echo(f"zsclip: evaluated {result.num_images} images ({len(result.failures)} failed), "
               f"{result.images_per_second:.1f} images/s", err=True)
    with usage_errors():
        if output:
            write_json(output, record)
        if report_dir:
            from ..outputs.report import write_report

            settings = {"data": data, "model": model, "pretrained": pretrained,
                        "templates": ", ".join(template_sets), "precision": precision,
                        "device": str(encoder.device), "zsclip": __version__}
            page = write_report(report_dir, record, settings)
            click.echo(f"zsclip: report in {printable(page)}", err=True)
    sys.exit(1 if result.failures else 0)


def _report_failures(failures: list[dict], shown: int = 20) -> None:
    for failure in failures[:shown]:
        click.echo(f"zsclip: skipped {printable(failure['path'])}: {printable(failure['error'])}", err=True)
    if len(failures) > shown:
        click.echo(f"zsclip: ... and {len(failures) - shown} more failed images (all listed in the results)",
                   err=True)


def _check_report_folder(folder: Path) -> None:
    """The report folder is created if missing; either way, check now that files can go into it."""
    try:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--report {printable(folder)} is a file: give a folder name")
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--report {printable(folder)} cannot be created: {error.strerror or error}") from None
    check_writable(folder / "index.html", "--report")
