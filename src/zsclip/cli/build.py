"""``zsclip build``: a classifier built once and saved, to reuse with ``classify --classifier``."""

from __future__ import annotations

import warnings

import click

from ..outputs.atomic import check_writable
from ..outputs.text import printable
from .common import label_options, model_options, multilabel_options, read_classes, run_options, usage_errors


@click.command()
@label_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True,
              help="Where to write the classifier (e.g. pets.zsc; with --multi-label, tags.zsml).")
@multilabel_options
@model_options
def build(labels, labels_file, templates, output, multi_label, multi_score, threshold, calibrate, target_precision,
          model, pretrained, device, precision, cache_dir, no_cache) -> None:
    """Build a classifier once and save it, to reuse with `zsclip classify --classifier FILE`.

    \b
    Examples:
      zsclip build --labels-file labels.txt --templates openai-imagenet --output pets.zsc
      zsclip build --labels-file tags.txt --multi-label --calibrate tagged.csv --output tags.zsml

    With --multi-label the file is a zsclip-multilabel/1 classifier: the label weights, the per-label
    score (negative prompts, statistics) and a threshold per label, fixed (--threshold) or calibrated
    on --calibrate (a multi-label manifest, or a store embedded from one); `classify --classifier
    tags.zsml` then gives every label over its threshold, and `eval --multi-label --classifier` scores it.

    The output is checked writable before the model loads and written atomically (a failed write
    leaves the previous file as it was). Templates hold {} (or {0}) where the class name goes and
    nothing else: format specs such as {:>9} are refused.
    """
    from ..tasks.models import resolve_classifier

    options = run_options(device, precision)
    multi = (multi_score, threshold, calibrate, target_precision)
    if multi_label or any(value is not None for value in multi):
        _build_multilabel(labels, labels_file, templates, output, multi_label, *multi, model, pretrained, options,
                          cache_dir, no_cache)
        return
    with usage_errors():
        check_writable(output, "output")
        _, classifier = resolve_classifier(read_classes(labels, labels_file), templates=templates, model=model,
                                           pretrained=pretrained, options=options, cache=not no_cache,
                                           cache_dir=cache_dir)
        path = classifier.save(output)
    click.echo(f"zsclip: wrote {printable(path)}: {len(classifier.classnames)} classes x "
               f"{len(classifier.provenance['templates'])} templates, model {classifier.provenance['model']}",
               err=True)


def _build_multilabel(labels, labels_file, templates, output, multi_label, multi_score, threshold, calibrate,
                      target_precision, model, pretrained, options, cache_dir, no_cache) -> None:
    """build --multi-label: the head classify --multi-label would build, saved as a multi-label file."""
    from ..job import HeadOptions
    from ..job.heads import build_head
    from ..job.plan import calibration_for
    from ..tasks.models import resolve_model

    with usage_errors():
        head_options = HeadOptions(read_classes(labels, labels_file), templates=templates, multi_label=multi_label,
                                   multi_score=multi_score, threshold=threshold, calibrate=calibrate,
                                   target_precision=target_precision)
        head_options.check()
        check_writable(output, "output")
        encoder = resolve_model(model, pretrained, options)
    with usage_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        head = build_head(head_options, encoder, options, cache=not no_cache, cache_dir=cache_dir,
                          calibration=calibration_for(encoder, options))
        multilabel = head.multilabel
        path = multilabel.save(output)
    for warning in caught:
        click.echo(f"zsclip: warning: {printable(str(warning.message))}", err=True)
    values = multilabel.thresholds
    how = (f"thresholds calibrated ({multilabel.calibration['thresholds']}) on "
           f"{multilabel.calibration['num_images']} images, {float(values.min()):.4g} to {float(values.max()):.4g}"
           if multilabel.calibration.get("num_images") else f"threshold {float(values[0]):.4g} for every label")
    click.echo(f"zsclip: wrote {printable(path)}: {len(multilabel.classnames)} labels, {multilabel.score} score, "
               f"{how}, model {multilabel.positive.provenance['model']}", err=True)
