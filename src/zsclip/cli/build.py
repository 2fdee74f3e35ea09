"""``zsclip build``: a classifier built once and saved, to reuse with ``classify --classifier``."""

from __future__ import annotations

import click

from ..outputs.atomic import check_writable
from ..outputs.text import printable
from .common import label_options, model_options, read_classes, run_options, usage_errors


@click.command()
@label_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True,
              help="Where to write the classifier (e.g. pets.zsc).")
@model_options
def build(labels, labels_file, templates, output, model, pretrained, device, precision, cache_dir,
          no_cache) -> None:
    """Build a classifier once and save it, to reuse with `zsclip classify --classifier FILE`.

    \b
    Example:
      zsclip build --labels-file labels.txt --templates openai-imagenet --output pets.zsc

    The output is checked writable before the model loads and written atomically (a failed write
    leaves the previous file as it was). Templates hold {} (or {0}) where the class name goes and
    nothing else: format specs such as {:>9} are refused.
    """
    from ..tasks.models import resolve_classifier

    options = run_options(device, precision)
    with usage_errors():
        check_writable(output, "output")
        _, classifier = resolve_classifier(read_classes(labels, labels_file), templates=templates, model=model,
                                           pretrained=pretrained, options=options, cache=not no_cache,
                                           cache_dir=cache_dir)
        path = classifier.save(output)
    click.echo(f"zsclip: wrote {printable(path)}: {len(classifier.classnames)} classes x "
               f"{len(classifier.provenance['templates'])} templates, model {classifier.provenance['model']}",
               err=True)
