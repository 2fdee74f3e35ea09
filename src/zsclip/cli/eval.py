"""``zsclip eval``: zero-shot accuracy on labelled images, as CLIP_benchmark reports it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..data.collections import open_collection
from ..outputs import PredictionsCsv, write_json
from ..prompts import read_labels
from ..tasks.evaluate import benchmark_record, evaluate
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
                 cache_dir, no_cache, batch_size, workers, max_pixels) -> None:
    """Measure zero-shot accuracy on labelled images: acc1, acc5, mean per-class recall.

    \b
    Examples:
      zsclip eval --data /data/imagenet/val --dataset imagenet1k --model ViT-B-32 --pretrained laion2b_s34b_b79k
      zsclip eval --data my_photos/ --templates openai-imagenet,openai-imagenet-7,photo
      zsclip eval --data labels.csv --labels-file classes.txt --output results.json
      zsclip eval --data "shards/{00000..00099}.tar" --labels-file classes.txt

    Images that fail to decode are counted and listed, not fatal.
    """
    options = run_options(device, precision, batch_size, workers, max_pixels)
    model, pretrained = default_weights(model, pretrained)
    with usage_errors():
        collection, classes = open_collection(data, read_labels(labels_file) if labels_file else None, dataset)
        template_sets = [name.strip() for name in templates.split(",") if name.strip()]
        encoder = resolve_model(model, pretrained, options)
        with PredictionsCsv(report_dir, collection.classnames) as on_prediction:
            result = evaluate(collection, encoder, template_sets, classes=classes, options=options,
                              cache=not no_cache, cache_dir=cache_dir, progress=sys.stderr.isatty(),
                              on_prediction=on_prediction)
    record = benchmark_record(result, dataset or Path(data).name, model, pretrained)
    for failure in result.failures:
        click.echo(f"zsclip: skipped {failure['path']}: {failure['error']}", err=True)
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
            click.echo(f"zsclip: report in {page}", err=True)
