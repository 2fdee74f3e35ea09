"""``zsclip classify``: images in, top-k labels out (terminal table or a results file)."""

from __future__ import annotations

import sys

import click
from tqdm.auto import tqdm

from ..data.sources import unique_sources
from ..errors import InputError
from ..outputs import RecordWriter, ResultWriter, print_record, print_table
from ..outputs.text import printable
from ..store import EmbeddingStore
from ..tasks.classify import classify_items, expand_sources
from ..tasks.hierarchy import classify_tree, classify_tree_store
from ..tasks.models import resolve_classifier
from ..tasks.stored import classify_store, is_store
from .common import (
    UsageFailure,
    image_options,
    label_options,
    model_options,
    ray_options,
    ray_settings,
    read_classes,
    run_options,
    scale_option,
    usage_errors,
)
from .trees import make_rejector, resolve_tree_classifier, tree_options


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@label_options
@click.option("--classifier", "-c", "classifier_file", type=click.Path(dir_okay=False), default=None,
              help="Use a classifier file from `zsclip build` instead of --labels.")
@click.option("--top-k", "-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many labels per image.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write results to .csv, .jsonl or .json (by extension) instead of the terminal.")
@tree_options
@model_options
@image_options
@scale_option
@ray_options
def classify(inputs, labels, labels_file, templates, classifier_file, top_k, output, labels_tree, tree_mode, beam,
             descriptions, reject, reject_calibrate, tpr, reject_score, reject_label, model, pretrained, device,
             precision, cache_dir, no_cache, batch_size, workers, max_pixels, decode, url_timeout, scale, ray_address,
             ray_actors) -> None:
    """Classify images into the classes you name.

    INPUTS are image files, folders (searched recursively), quoted glob patterns ("shots/**/*.jpg"),
    http(s) URLs, or - to read one path or URL per line from stdin.

    \b
    Examples:
      zsclip classify photos/ --labels "dog,cat,car,airplane"
      zsclip classify "shots/**/*.jpg" --labels-file labels.txt --top-k 3 --output results.csv
      find /data -name '*.png' | zsclip classify - --labels-file labels.txt --output results.jsonl
      zsclip classify examples/ --labels-file examples/labels.txt --model demo   # offline

    --model demo needs no download, but it knows only the synthetic world it was trained on:
    red/green/blue/yellow/purple/orange/white/black circles, squares, triangles, stars, crosses
    and rings on plain backgrounds. Use a real model (the default) for real photos.

    Bad inputs (missing, empty, corrupt or huge files, unreachable or slow URLs, unreadable folders)
    are reported on stderr and in the output's error column; the run goes on. A file given twice
    (directly, by a glob, through a link) is classified once, with a note. Folders and globs take
    every image type the installed Pillow opens; links to folders are not followed.

    The output is checked writable before the run, written under a temporary name and renamed when
    complete: Ctrl-C leaves the rows so far in NAME.partial. Names and errors in CSV cells and on
    the terminal are shown escaped (control characters as \\n, \\x1b; file-name bytes that are not
    UTF-8 as \\xNN), and CSV cells starting with = + - @ get a ' so spreadsheets show them as text;
    JSON and JSONL keep the raw text.

    Exit status: 0 all classified, 1 some inputs failed, 2 usage error, 130 interrupted.
    """
    options = run_options(device, precision, batch_size, workers, max_pixels, url_timeout, decode)
    if len(inputs) == 1 and is_store(inputs[0]):
        with usage_errors():
            if output:
                ResultWriter.check(output)
            store = EmbeddingStore.open(inputs[0], model=model)
            if labels_tree:
                encoder, tree_classifier = resolve_tree_classifier(labels_tree, descriptions, templates, store.model,
                                                                   pretrained or store.pretrained, options,
                                                                   not no_cache, cache_dir)
                store.check_encoder(encoder)
                rejector = make_rejector(tree_classifier.leaf_classifier, encoder, reject, reject_calibrate, tpr,
                                         reject_score, reject_label, options)
                rows = classify_tree_store(store, tree_classifier, mode=tree_mode, beam=beam, rejector=rejector)
        if labels_tree:
            _write_tree_rows(rows, len(store), tree_classifier, rejector, output)
            return
        with usage_errors():
            encoder, classifier = resolve_classifier(
                read_classes(labels, labels_file) if classifier_file is None or labels or labels_file else None,
                classifier=classifier_file, templates=templates, model=store.model,
                pretrained=pretrained or store.pretrained, options=options, cache=not no_cache, cache_dir=cache_dir,
                descriptions=descriptions)
            store.check_encoder(encoder)
            rejector = make_rejector(classifier, encoder, reject, reject_calibrate, tpr, reject_score, reject_label,
                                     options)
            total = len(store)
        settings = ray_settings(ray_address, ray_actors)
        if settings is not None:
            if rejector is not None:
                raise UsageFailure("--reject with --ray on a store is not available: run it without --ray")
            from ..cluster.tasks import classify_store_on_ray

            predictions = classify_store_on_ray(store, classifier, top_k=top_k, scale=scale, settings=settings)
        else:
            predictions = classify_store(store, classifier, top_k=top_k, scale=scale, rejector=rejector)
        _emit(predictions, total, output, top_k)
        return
    arguments = [sys.stdin if item == "-" else item for item in inputs]
    sources, duplicates = unique_sources(source for item in arguments for source in _expand(item))
    if not sources:
        raise UsageFailure("no inputs to classify: give image files, folders, glob patterns, URLs or -")
    for duplicate, kept in duplicates[:5]:
        click.echo(f"zsclip: note: {printable(duplicate.name)} is the same file as {printable(kept.name)}; "
                   "classified once", err=True)
    if len(duplicates) > 5:
        click.echo(f"zsclip: note: {len(duplicates) - 5} more files were given twice; each classified once", err=True)
    with usage_errors():
        if output:
            ResultWriter.check(output)
        if labels_tree:
            if labels or labels_file or classifier_file:
                raise InputError("--labels-tree holds the classes: leave out --labels, --labels-file and --classifier")
            encoder, tree_classifier = resolve_tree_classifier(labels_tree, descriptions, templates, model, pretrained,
                                                               options, not no_cache, cache_dir)
            classifier = tree_classifier.leaf_classifier
        else:
            encoder, classifier = resolve_classifier(
                read_classes(labels, labels_file) if classifier_file is None or labels or labels_file else None,
                classifier=classifier_file, templates=templates, model=model, pretrained=pretrained, options=options,
                cache=not no_cache, cache_dir=cache_dir, descriptions=descriptions)
        rejector = make_rejector(classifier, encoder, reject, reject_calibrate, tpr, reject_score, reject_label,
                                 options)
    if labels_tree:
        _classify_tree(sources, tree_classifier, encoder, tree_mode, beam, rejector, options, output)
        return
    features = None
    settings = ray_settings(ray_address, ray_actors)
    if settings is not None:
        from ..cluster.pipeline import ray_feature_batches

        def features(items):
            return ray_feature_batches(items, encoder, options, settings)

    _emit(classify_items(sources, classifier, encoder, top_k=top_k, scale=scale, options=options, rejector=rejector,
                         features=features), len(sources), output, top_k)


def _emit(predictions, total: int, output: str | None, top_k: int) -> None:
    """Write or print predictions as they stream; report failures; exit with the documented status."""
    with usage_errors():
        writer = ResultWriter(output, top_k) if output else None
    failures = 0
    bar = tqdm(total=total, unit="img", desc="classifying", file=sys.stderr,
               disable=not sys.stderr.isatty() or total < 2, dynamic_ncols=True)
    try:
        for prediction in predictions:
            if prediction.error:
                failures += 1
                tqdm.write(f"zsclip: skipped {printable(prediction.source)}: {printable(prediction.error)}",
                           file=sys.stderr)
            if writer:
                writer.write(prediction)
            else:
                print_table(prediction, sys.stdout)
            bar.update(1)
    except BaseException as error:
        if writer:
            why = "interrupted" if isinstance(error, KeyboardInterrupt) else "stopped by an error"
            click.echo(f"zsclip: {why}; results so far are in {printable(writer.abandon())}", err=True)
        raise
    finally:
        bar.close()
    if writer:
        writer.close()
    _finish(total, failures, output)


def _finish(total: int, failures: int, output: str | None) -> None:
    click.echo(f"zsclip: classified {total - failures} of {total} images"
               + (f"; {failures} failed" if failures else "")
               + (f"; results in {printable(output)}" if output else ""), err=True)
    sys.exit(1 if failures else 0)


def _classify_tree(sources, tree_classifier, encoder, mode, beam, rejector, options, output) -> None:
    """--labels-tree: one label and probability per level, streamed like flat results."""
    rows = classify_tree(sources, tree_classifier, encoder, mode=mode, beam=beam, rejector=rejector, options=options)
    _write_tree_rows(rows, len(sources), tree_classifier, rejector, output)


def _write_tree_rows(rows, total: int, tree_classifier, rejector, output) -> None:
    """Write or print per-level rows as they stream; report failures; exit with the documented status."""
    columns = [column for name in tree_classifier.tree.level_names() for column in (name, f"{name}_probability")]
    columns += ["openset_score"] if rejector is not None else []
    with usage_errors():
        writer = RecordWriter(output, columns) if output else None
    failures = 0
    try:
        for row in rows:
            if row.error:
                failures += 1
                click.echo(f"zsclip: skipped {printable(row.source)}: {printable(row.error)}", err=True)
            if writer:
                writer.write(row.source, row.record, row.error)
            else:
                print_record(row.source, row.record, row.error, sys.stdout)
    except BaseException as error:
        if writer:
            why = "interrupted" if isinstance(error, KeyboardInterrupt) else "stopped by an error"
            click.echo(f"zsclip: {why}; results so far are in {printable(writer.abandon())}", err=True)
        raise
    if writer:
        writer.close()
    _finish(total, failures, output)


def _expand(item):
    """Sources for one argument; ``sys.stdin`` stands for '-' (one path or URL per line)."""
    if item is sys.stdin:
        return [source for line in item if line.strip() for source in expand_sources(line.strip())]
    return list(expand_sources(item))
