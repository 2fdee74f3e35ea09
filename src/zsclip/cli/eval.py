"""``zsclip eval``: zero-shot accuracy on labelled images, as CLIP_benchmark reports it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..data.collections import open_collection
from ..encoders.resolve import default_weights
from ..errors import InputError, ZsclipError
from ..outputs.atomic import check_writable, write_atomically
from ..outputs.text import printable
from ..prompts import read_labels, resolve_templates
from .common import (
    UsageFailure,
    classifier_option,
    debugging,
    image_options,
    model_options,
    multilabel_options,
    ray_options,
    ray_settings,
    run_options,
    transductive_option,
    usage_errors,
)


@click.command(name="eval")
@click.option("--task", type=click.Choice(["classification", "retrieval"]), default="classification",
              show_default=True,
              help="retrieval: image-to-text and text-to-image recall@1/5/10 (CLIP_benchmark's names) on a "
                   "path,caption file (--data), or on a store with --captions.")
@click.option("--captions", type=click.Path(dir_okay=False), default=None,
              help="With --task retrieval and a store as --data: the path,caption file of its images.")
@click.option("--data", "-d", required=True,
              help="A class-per-folder tree (folder names are the classes), a .csv/.jsonl manifest of path,label, "
                   "or WebDataset shards (\"shards/{00000..00099}.tar\", with --labels-file).")
@click.option("--dataset", default=None,
              help="Name recorded in the results; imagenet1k also gives ImageNet's class names for synset folders.")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
              help="Class names, one per line in the folders' sorted order (synonyms: 'dog | puppy').")
@click.option("--templates", "-t", default=None,
              help="One or more template sets or files, comma-separated: all are scored on one pass over the images "
                   "(default openai-imagenet; not with --classifier, whose file holds its prompts).")
@classifier_option("Evaluate a classifier file (from `zsclip build`, `zsclip adapt`, or a tree classifier) instead "
                   "of building one from the data's class names; its classes must cover the data's.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write results as .json (CLIP_benchmark's layout plus per-class metrics and failures).")
@click.option("--report", "-r", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write a report folder: index.html with plots, metrics.json, predictions.csv.")
@click.option("--labels-tree", type=click.Path(dir_okay=False), default=None,
              help="A label tree (YAML/JSON/indented text) whose nodes the data's classes name: accuracy per level "
                   "and mistake severity for each mode (flat, top-down, chils).")
@click.option("--unknown", default=None,
              help="Images of none of the classes (folder, glob): open-set AUROC and FPR at --tpr for the MCM and "
                   "max-probability scores.")
@click.option("--tpr", default=None, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="With --unknown: the true-positive rate for the FPR figure (default 0.95).")
@click.option("--beam", default=None, type=click.IntRange(min=1, max=1000),
              help="With a label tree: nodes kept per level by the top-down mode (default 1).")
@click.option("--descriptions", type=click.Path(dir_okay=False), default=None,
              help="A JSON of class -> sentences (CuPL / CLIP_benchmark format) added to each class's prompts.")
@click.option("--select-templates", type=click.IntRange(min=1), default=None,
              help="Choose this many templates from the --templates pool by greedy forward selection on --data "
                   "(as OpenAI chose its 7); --output then names the template file written.")
@transductive_option
@multilabel_options
@model_options
@image_options
@ray_options
def eval_command(task, captions, data, dataset, labels_file, templates, classifier_file, output, report_dir,
                 labels_tree, unknown, tpr, beam, descriptions, select_templates, transductive, multi_label,
                 multi_score, threshold,
                 calibrate, target_precision, model, pretrained, device, precision, cache_dir, no_cache, batch_size,
                 workers, max_pixels, decode, url_timeout, ray_address, ray_actors,
                 ray_stall_timeout) -> None:
    """Measure zero-shot accuracy on labelled images: acc1, acc5, mean per-class recall.

    \b
    Examples:
      zsclip eval --data /data/imagenet/val --dataset imagenet1k --model ViT-B-32 --pretrained laion2b_s34b_b79k
      zsclip eval --data my_photos/ --templates openai-imagenet,openai-imagenet-7,photo
      zsclip eval --data labels.csv --labels-file classes.txt --output results.json
      zsclip eval --data "shards/{00000..00099}.tar" --labels-file classes.txt
      zsclip eval --data tagged.csv --labels-file tags.txt --multi-label --report report/
      zsclip eval --task retrieval --data captions.csv --output results.json
      zsclip eval --task retrieval --data photos.zse --captions captions.csv
      zsclip eval --data shifted.zse --labels-file classes.txt --transductive --output results.json

    Flat heads also get calibration measures (ECE over 15 bins, NLL, Brier score, AURC; a reliability
    diagram and a risk-coverage curve in --report); --transductive adds the figures after a collection-level
    correction beside those without it.

    Images that fail to decode are listed on stderr and in the results, and the metrics count the
    others; the exit status is then 1 (as for classify). If no image can be read, that is one line
    and exit 1. Templates, labels and the -o / --report places are checked before the pass starts.
    Manifests and labels files are UTF-8 (a BOM is fine); a line starting with # is a comment.
    """
    from ..encoders.resolve import resolve_model
    from ..outputs.evalfiles import PredictionsCsv, write_json
    from ..tasks.evaluate import NothingDecodedError, benchmark_record, evaluate

    options = run_options(device, precision, batch_size, workers, max_pixels, url_timeout, decode)
    multi = {"multi_score": multi_score, "threshold": threshold, "calibrate": calibrate,
             "target_precision": target_precision}
    if task == "retrieval" or multi_label or captions is not None or any(v is not None for v in multi.values()):
        _other_task(task, captions, data, dataset, labels_file, templates, classifier_file, output, report_dir,
                    multi_label, multi, {"labels_tree": labels_tree, "unknown": unknown, "tpr": tpr, "beam": beam,
                                         "select_templates": select_templates, "descriptions": descriptions,
                                         "transductive": transductive},
                    model, pretrained, options, not no_cache, cache_dir,
                    ray_settings(ray_address, ray_actors, ray_stall_timeout))
        return
    with usage_errors():
        template_sets = [name.strip() for name in (templates or "").split(",") if name.strip()]
        if templates is not None and not template_sets:
            raise InputError(f"--templates {templates!r} names no template set: give e.g. openai-imagenet, or "
                             "several comma-separated (openai-imagenet,photo)")
        if classifier_file and templates is not None:
            raise InputError("a classifier file holds its templates: leave out --templates")
        if tpr is not None and unknown is None:
            raise InputError("--tpr applies to --unknown (the open-set FPR at that true-positive rate)")
        if transductive and (labels_tree or unknown or select_templates):
            raise InputError("--transductive corrects flat labels: leave out --labels-tree, --unknown and "
                             "--select-templates")
        if select_templates and (classifier_file or labels_tree or unknown or descriptions):
            raise InputError("--select-templates chooses templates for a flat classifier built from the data's "
                             "classes: leave out --classifier, --labels-tree, --unknown and --descriptions")
        template_sets = template_sets or ["openai-imagenet"]
        for name in template_sets:
            resolve_templates(name)
        if output:
            if not select_templates and not output.lower().endswith(".json"):
                raise InputError(f"--output {printable(output)}: eval writes CLIP_benchmark's JSON; name it .json "
                                 "(per-image predictions go to --report DIR/predictions.csv)")
            check_writable(output, "--output")
        if report_dir:
            _check_report_folder(Path(report_dir))
    if select_templates:
        with usage_errors():
            collection, classes = open_collection(data, read_labels(labels_file) if labels_file else None, dataset)
            encoder = resolve_model(*default_weights(model, pretrained), options)
        _select_templates(collection, classes, encoder, select_templates, template_sets[0], options, output,
                          not no_cache, cache_dir)
        return
    settings = ray_settings(ray_address, ray_actors, ray_stall_timeout)
    try:
        with PredictionsCsv(report_dir if not labels_tree else None) as on_prediction:
            result = evaluate(data, None, template_sets, classes=read_labels(labels_file) if labels_file else None,
                              classifier=classifier_file, labels_tree=labels_tree, beam=beam,
                              descriptions=descriptions, unknown=unknown, tpr=tpr or 0.95, dataset=dataset,
                              model=model, pretrained=pretrained, options=options, cache=not no_cache,
                              cache_dir=cache_dir, progress=sys.stderr.isatty(), on_prediction=on_prediction,
                              transductive=transductive, ray=settings)
    except NothingDecodedError as error:  # the inputs failed (exit 1), not the options
        _report_failures(error.failures)
        raise
    except ZsclipError as error:
        if debugging():
            raise
        raise UsageFailure(str(error)) from None
    _report_failures(result.failures)
    used_model, used_pretrained = result.model or default_weights(model, pretrained)[0], result.pretrained
    record = benchmark_record(result, dataset or Path(str(data).rstrip("/")).name, used_model, used_pretrained)
    record.setdefault("templates", classifier_file or template_sets[0])  # a tree's prompts
    _print_result(result, tpr or 0.95)
    click.echo(f"zsclip: evaluated {result.num_images} images ({len(result.failures)} failed), "
               f"{result.images_per_second:.1f} images/s", err=True)
    with usage_errors():
        if output:
            write_json(output, record)
        if report_dir:
            _write_report(Path(report_dir), record, result, {
                "data": data, "model": used_model, "pretrained": used_pretrained,
                "templates": classifier_file if classifier_file else ", ".join(template_sets),
                "precision": result.precision or precision, "zsclip": __version__}, tpr or 0.95)
    sys.exit(1 if result.failures else 0)


def _other_task(task, captions, data, dataset, labels_file, templates, classifier_file, output, report_dir,
                multi_label, multi, others, model, pretrained, options, cache, cache_dir, settings) -> None:
    """eval --task retrieval, or --multi-label: refused combinations first, then the task and its record."""
    from ..outputs.evalfiles import write_json
    with usage_errors():
        given = next((f"--{name.replace('_', '-')}" for name, value in others.items() if value), None)
        if task == "retrieval":
            named = (("labels_file", labels_file), ("templates", templates), ("classifier", classifier_file),
                     ("multi_label", multi_label), *multi.items())
            extra = given or next((f"--{name.replace('_', '-')}" for name, value in named if value is not None), None)
            if extra:
                raise InputError(f"{extra} does not apply to --task retrieval (captions against images)")
            if report_dir:
                raise InputError("--report applies to classification: retrieval writes its figures with --output")
        else:
            if given:
                raise InputError(f"{given} does not apply to --multi-label evaluation")
            if captions is not None:
                raise InputError("--captions applies to --task retrieval")
            if not multi_label:
                name = next(f"--{k.replace('_', '-')}" for k, v in multi.items() if v is not None)
                raise InputError(f"{name} applies to multi-label classification: add --multi-label")
        if output:
            if not output.lower().endswith(".json"):
                raise InputError(f"--output {printable(output)}: eval writes JSON; name it .json")
            check_writable(output, "--output")
        if report_dir:
            _check_report_folder(Path(report_dir))
        if task == "retrieval":
            from ..tasks.retrieval import evaluate_retrieval

            record = evaluate_retrieval(data, captions, model=model, pretrained=pretrained, options=options,
                                        dataset=dataset, ray=settings)
            for k in (1, 5, 10):
                click.echo(f"recall@{k:<3d} image retrieval {record['metrics'][f'image_retrieval_recall@{k}']:.2%}  "
                           f"text retrieval {record['metrics'][f'text_retrieval_recall@{k}']:.2%}")
            click.echo(f"zsclip: evaluated {record['num_images']} images against {record['num_captions']} captions "
                       f"({record['num_failed']} failed)", err=True)
        else:
            from ..tasks.multilabel import evaluate_multilabel

            record = evaluate_multilabel(data, read_labels(labels_file) if labels_file else None,
                                         classifier=classifier_file, templates=templates,
                                         score=multi["multi_score"],
                                         threshold=multi["threshold"], calibrate=multi["calibrate"],
                                         target_precision=multi["target_precision"], dataset=dataset, model=model,
                                         pretrained=pretrained, options=options, cache=cache, cache_dir=cache_dir,
                                         ray=settings)
            m = record["metrics"]
            click.echo(f"{record['score']:14s} mAP {m['mAP']:.4f}  micro F1 {m['micro_f1']:.4f}  macro F1 "
                       f"{m['macro_f1']:.4f}  precision {m['micro_precision']:.4f}  recall {m['micro_recall']:.4f}")
            for name, value in record["score_comparison"].items():
                click.echo(f"  mAP ranking by {name}: {value:.4f}" if value is not None else f"  {name}: n/a")
            measured = record["calibration"]
            if measured["ece"] is not None:
                click.echo(f"  per-label probabilities: ECE {measured['ece']:.4f}  Brier {measured['brier']:.4f}  "
                           f"NLL {measured['nll']:.4f}")
            click.echo(f"zsclip: evaluated {record['num_images']} images ({record['num_failed']} failed), "
                       f"{record['images_per_second']:.1f} images/s", err=True)
        _report_failures(record["failures"])
        if output:
            write_json(output, record)
        if report_dir:
            from ..outputs.report import write_multilabel_report

            click.echo(f"zsclip: report in {printable(write_multilabel_report(Path(report_dir), record))}", err=True)
    sys.exit(1 if record["failures"] else 0)


def _print_result(result, tpr: float) -> None:
    for name, metrics in result.metrics.items():
        acc5 = "n/a" if metrics["acc5"] is None else f"{metrics['acc5']:.2%}"
        click.echo(f"{name:24s} acc1 {metrics['acc1']:.2%}  acc5 {acc5}  "
                   f"mean per-class recall {metrics['mean_per_class_recall']:.2%}")
        measured = metrics.get("calibration") or {}
        if measured.get("ece") is not None:
            click.echo(f"{'':24s} ECE {measured['ece']:.4f}  NLL {measured['nll']:.4f}  Brier {measured['brier']:.4f}  "
                       f"AURC {measured['aurc']:.4f}")
        corrected = (result.transductive or {}).get(name)
        if corrected is not None:
            click.echo(f"{'  --transductive ' + corrected['method']:24s} acc1 {corrected['acc1']:.2%}  "
                       f"mean per-class recall {corrected['mean_per_class_recall']:.2%}  "
                       f"ECE {corrected['calibration']['ece']:.4f}")
    for mode, metrics in (result.tree or {}).get("modes", {}).items():
        levels = "  ".join(f"{entry['level']} {entry['accuracy']:.2%}" if entry["accuracy"] is not None
                           else f"{entry['level']} n/a" for entry in metrics["levels"])
        severity = metrics["mistake_severity"]
        click.echo(f"{mode:9s} {levels}" + (f"  mistake severity {severity:.2f}" if severity is not None else ""))
    for score, entry in (result.openset or {}).items():
        fpr = entry.get(f"fpr{round(tpr * 100)}")
        click.echo(f"open set {score:8s} AUROC {entry['auroc']:.4f}  FPR@{tpr:.0%} TPR {fpr:.4f}  "
                   f"({entry['num_known']} known, {entry['num_unknown']} unknown images)"
                   if entry["auroc"] is not None else f"open set {score:8s} n/a (no unknown images read)")


def _write_report(folder: Path, record: dict, result, settings: dict, tpr: float) -> None:
    if result.tree is not None:
        from ..hierarchy import from_data, plot_node_recall
        from ..outputs.evalfiles import write_json
        from ..outputs.report import tree_page

        write_json(folder / "metrics.json", record)
        first = next(iter(result.tree["modes"]))
        plot_node_recall(folder / "node_recall.png", result.tree["modes"][first], from_data(result.tree["tree"]),
                         title=f"per-node recall ({first} mode)")
        page = write_atomically(folder / "index.html", tree_page(record, tpr))
        click.echo(f"zsclip: report in {printable(page)} (with metrics.json, node_recall.png)", err=True)
        return
    from ..outputs.report import write_report

    click.echo(f"zsclip: report in {printable(write_report(folder, record, settings))}", err=True)


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
