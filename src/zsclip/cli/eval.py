"""``zsclip eval``: zero-shot accuracy on labelled images, as CLIP_benchmark reports it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..data.collections import open_collection
from ..errors import InputError
from ..outputs import PredictionsCsv, write_json
from ..outputs.atomic import check_writable, write_atomically
from ..outputs.text import printable
from ..prompts import read_labels, resolve_templates
from ..tasks.evaluate import NothingDecodedError, benchmark_record, evaluate
from ..tasks.models import default_weights, resolve_model
from ..tasks.stored import is_store
from .common import image_options, model_options, ray_options, ray_settings, run_options, usage_errors


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
@click.option("--labels-tree", type=click.Path(dir_okay=False), default=None,
              help="A label tree (YAML/JSON/indented text) whose nodes the data's classes name: accuracy per level "
                   "and mistake severity for each mode (flat, top-down, chils).")
@click.option("--unknown", default=None,
              help="Images of none of the classes (folder, glob): open-set AUROC and FPR at --tpr for the MCM and "
                   "max-probability scores.")
@click.option("--tpr", default=0.95, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="True-positive rate for the FPR figure.")
@click.option("--descriptions", type=click.Path(dir_okay=False), default=None,
              help="A JSON of class -> sentences (CuPL / CLIP_benchmark format) added to each class's prompts.")
@click.option("--select-templates", type=click.IntRange(min=1), default=None,
              help="Choose this many templates from the --templates pool by greedy forward selection on --data "
                   "(as OpenAI chose its 7); --output then names the template file written.")
@model_options
@image_options
@ray_options
def eval_command(data, dataset, labels_file, templates, output, report_dir, labels_tree, unknown, tpr, descriptions,
                 select_templates, model, pretrained, device, precision, cache_dir, no_cache, batch_size, workers,
                 max_pixels, decode, url_timeout, ray_address, ray_actors) -> None:
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
    given_model, given_pretrained = model, pretrained
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
    if is_store(data):
        _eval_store(data, dataset, labels_file, template_sets, given_model, given_pretrained, options, no_cache,
                    cache_dir, output, report_dir, precision)
        return
    with usage_errors():
        collection, classes = open_collection(data, read_labels(labels_file) if labels_file else None, dataset)
        encoder = resolve_model(model, pretrained, options)
    if select_templates:
        _select_templates(collection, classes, encoder, select_templates, template_sets[0], options, output,
                          not no_cache, cache_dir)
        return
    if labels_tree or unknown or descriptions:
        _eval_tree(collection, classes, encoder, labels_tree, unknown, tpr, descriptions, template_sets[0], options,
                   not no_cache, cache_dir, output, report_dir, dataset or Path(data).name, model, pretrained)
        return
    settings = ray_settings(ray_address, ray_actors)
    try:
        if settings is not None:
            from ..cluster.tasks import evaluate_on_ray

            with usage_errors():
                result = evaluate_on_ray(collection, encoder, template_sets, classes=classes, options=options,
                                         settings=settings, cache=not no_cache, cache_dir=cache_dir)
        else:
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


def _eval_tree(collection, classes, encoder, labels_tree, unknown, tpr, descriptions, templates, options, cache,
               cache_dir, output, report_dir, dataset, model, pretrained) -> None:
    """Hierarchical and open-set evaluation: every mode on one pass over the images; a flat label
    list is a tree of one level, so --unknown and --descriptions work without a tree too."""
    from ..hierarchy import TreeClassifier, from_data, plot_node_recall, read_tree
    from ..tasks.hierarchy import evaluate_tree_collection

    with usage_errors():
        if labels_tree:
            tree = read_tree(labels_tree)
        else:
            names = classes if isinstance(classes, list) else [[name] for name in collection.classnames]
            tree = from_data([" | ".join(synonyms) for synonyms in names], source="the data's classes")
        tree_classifier = TreeClassifier.build(encoder, tree, templates, descriptions=descriptions,
                                               precision=options.precision, cache=cache, cache_dir=cache_dir)
        modes = ("flat", "top-down", "chils") if tree.depth > 1 else ("flat",)
        result, failures = evaluate_tree_collection(collection, tree_classifier, encoder, modes=modes,
                                                    unknown=unknown, tpr=tpr, options=options)
    _report_failures(failures)
    for mode, metrics in result["modes"].items():
        levels = "  ".join(f"{entry['level']} {entry['accuracy']:.2%}" if entry["accuracy"] is not None
                           else f"{entry['level']} n/a" for entry in metrics["levels"])
        severity = metrics["mistake_severity"]
        click.echo(f"{mode:9s} {levels}" + (f"  mistake severity {severity:.2f}" if severity is not None else ""))
    for score, entry in result.get("openset", {}).items():
        fpr = entry.get(f"fpr{round(tpr * 100)}")
        click.echo(f"open set {score:8s} AUROC {entry['auroc']:.4f}  FPR@{tpr:.0%} TPR {fpr:.4f}  "
                   f"({entry['num_known']} known, {entry['num_unknown']} unknown images)"
                   if entry["auroc"] is not None else f"open set {score:8s} n/a (no unknown images read)")
    record = {"dataset": dataset, "model": model, "pretrained": pretrained or "", "task": "zeroshot_classification",
              "language": "en", "templates": templates, "tree": tree.to_data(), **result,
              "num_failed": len(failures), "failures": failures}
    with usage_errors():
        if output:
            write_json(output, record)
        if report_dir:
            folder = Path(report_dir)
            write_json(folder / "metrics.json", record)
            first = next(iter(result["modes"]))
            plot_node_recall(folder / "node_recall.png", result["modes"][first], tree,
                             title=f"per-node recall ({first} mode)")
            from ..outputs.report import tree_page

            page = write_atomically(folder / "index.html", tree_page(record, tpr))
            click.echo(f"zsclip: report in {printable(page)} (with metrics.json, node_recall.png)", err=True)
    sys.exit(1 if failures else 0)


def _select_templates(collection, classes, encoder, count, pool, options, output, cache, cache_dir) -> None:
    """eval --select-templates N: greedy forward selection; the chosen templates as a file."""
    from ..adapt.templates import select_templates

    with usage_errors():
        selection = select_templates(collection, encoder, count, pool=pool,
                                     classes=classes if isinstance(classes, list) else None,
                                     precision=options.precision, output=output, reported_on_same_data=True,
                                     batch_size=options.batch_size, workers=options.workers,
                                     max_pixels=options.max_pixels, cache=cache, cache_dir=cache_dir)
    for rank, (template, accuracy) in enumerate(zip(selection.texts, selection.accuracies, strict=True), start=1):
        click.echo(f"{rank:3d}. acc1 {accuracy:.2%}  {printable(template)}")
    click.echo(f"zsclip: chose {len(selection.templates)} of {selection.pool_size} templates"
               + (f"; written to {printable(output)} (use it as --templates)" if output else ""), err=True)


def _eval_store(data, dataset, labels_file, template_sets, model, pretrained, options, no_cache, cache_dir, output,
                report_dir, precision) -> None:
    """eval --data STORE: the stored embeddings of a labelled collection, no image decoded."""
    from ..store import EmbeddingStore
    from ..tasks.stored import evaluate_store

    with usage_errors():
        store = EmbeddingStore.open(data, model=model)
        encoder = resolve_model(store.model, pretrained or store.pretrained, options)
        classes = read_labels(labels_file) if labels_file else None
        result = evaluate_store(store, encoder, template_sets, classes=classes, precision=options.precision,
                                cache=not no_cache, cache_dir=cache_dir)
    _report_failures(result.failures)
    record = benchmark_record(result, dataset or Path(data).name, store.model, store.pretrained)
    for name, metrics in result.metrics.items():
        acc5 = "n/a" if metrics["acc5"] is None else f"{metrics['acc5']:.2%}"
        click.echo(f"{name:24s} acc1 {metrics['acc1']:.2%}  acc5 {acc5}  "
                   f"mean per-class recall {metrics['mean_per_class_recall']:.2%}")
    click.echo(f"zsclip: evaluated {result.num_images} stored images ({len(result.failures)} failed)", err=True)
    with usage_errors():
        if output:
            write_json(output, record)
        if report_dir:
            from ..outputs.report import write_report

            settings = {"data": data, "model": store.model, "pretrained": store.pretrained,
                        "templates": ", ".join(template_sets), "precision": precision, "store": True,
                        "zsclip": __version__}
            click.echo(f"zsclip: report in {printable(write_report(report_dir, record, settings))}", err=True)
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
