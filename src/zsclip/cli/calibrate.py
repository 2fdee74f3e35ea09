"""``zsclip calibrate``: a classifier file whose probabilities mean what they say, and its accept thresholds."""

from __future__ import annotations

import sys

import click

from ..errors import InputError
from ..outputs.atomic import check_writable
from ..outputs.text import printable
from ..prompts import read_labels, resolve_templates
from .common import (
    classifier_option,
    image_options,
    model_options,
    ray_options,
    ray_settings,
    run_options,
    usage_errors,
)


@click.command(name="calibrate")
@click.option("--data", "-d", required=True,
              help="Labelled images, as eval takes them: a class-per-folder tree, a .csv/.jsonl manifest of "
                   "path,label, WebDataset shards (with --labels-file), a labelled store or a Hugging Face dataset.")
@classifier_option("The flat classifier file to calibrate (from `zsclip build` or `zsclip adapt`: built, linear "
                   "probe, Tip-Adapter); without it, one is built from --labels-file / the data's classes.")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
              help="Without --classifier: class names, one per line in the folders' sorted order.")
@click.option("--templates", "-t", default=None, help="Without --classifier: one template set or file "
              "(default openai-imagenet).")
@click.option("--dataset", default=None, help="Name recorded with the calibration (and imagenet1k's class names).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The calibrated classifier file to write (it may be the --classifier file itself).")
@click.option("--bias", is_flag=True, default=False,
              help="Fit a bias per class too (bias-corrected temperature scaling): it pulls back the classes the "
                   "prompts favour for every image, so it can change answers (flat classifiers only).")
@model_options
@image_options
@ray_options
def calibrate_command(data, classifier_file, labels_file, templates, dataset, output, bias, model, pretrained, device,
                      precision, cache_dir, no_cache, batch_size, workers, max_pixels, decode, url_timeout,
                      ray_address, ray_actors, ray_stall_timeout) -> None:
    """Fit a classifier's temperature on labelled images (a tree: one per level), and its accept table.

    The temperature (one number dividing every logit, fitted by NLL: Guo et al. 2017) is stored in the
    classifier file with what it was fitted on; classify, eval, the service and --ray then give
    calibrated probabilities. The same images give the accept table behind
    `zsclip classify -c FILE --accept-precision 0.95`.

    \b
    Examples:
      zsclip calibrate --data labelled/ --classifier animals.zsc -o animals.zsc
      zsclip calibrate --data labelled.csv --labels-file classes.txt --model demo -o calibrated.zsc
      zsclip eval --data test/ --classifier animals.zsc --report report/      # ECE, reliability diagram
      zsclip calibrate --data labelled/ --classifier taxonomy.zsct -o taxonomy.zsct   # per level
      zsclip calibrate --data labelled/ --classifier animals.zsc --bias -o animals.zsc   # and a bias per class

    A tree classifier file (.zsct, from `zsclip build --labels-tree`) gets a temperature per level for each
    tree mode: each level's reported probability is then calibrated on its own (written to a .zsct).

    Calibrate on images like those you will classify, and not on the ones you measure with.
    """
    from ..tasks.calibrate import TreeCalibrationResult, calibrate

    options = run_options(device, precision, batch_size, workers, max_pixels, url_timeout, decode)
    with usage_errors():
        if classifier_file and (labels_file or templates):
            raise InputError("a classifier file holds its classes and prompts: leave out --labels-file and "
                             "--templates")
        if templates is not None:
            if "," in templates:
                raise InputError(f"--templates {templates!r}: calibrate one classifier, with one template set")
            resolve_templates(templates)
        loaded = None
        if classifier_file:
            from ..heads.files import load_head_file

            loaded = load_head_file(classifier_file)  # its kind names the file written (a bad file: one line now)
        suffixes = (".zsct", ".zsc") if type(loaded).__name__ == "TreeClassifier" else (".zsc",)
        if not output.lower().endswith(suffixes):
            raise InputError(f"--output {printable(output)}: a classifier file is written; name it {suffixes[0]}")
        check_writable(output, "--output")
        classes = read_labels(labels_file) if labels_file else None
        settings = ray_settings(ray_address, ray_actors, ray_stall_timeout)
        result = calibrate(data, classifier=loaded, classes=classes, templates=templates, dataset=dataset,
                           model=model, pretrained=pretrained, options=options, cache=not no_cache,
                           cache_dir=cache_dir, progress=sys.stderr.isatty(), ray=settings, bias=bias)
    for failure in result.failures[:20]:
        click.echo(f"zsclip: skipped {printable(failure['path'])}: {printable(failure['error'])}", err=True)
    if isinstance(result, TreeCalibrationResult):
        _report_tree(result)
    else:
        _report_flat(result)
    with usage_errors():
        written = result.classifier.save(output)
    click.echo(f"zsclip: calibrated classifier written to {printable(written)}", err=True)
    sys.exit(1 if result.failures else 0)


def _report_tree(result) -> None:
    """One line per mode and level: its temperature and ECE before -> after."""
    levels = result.classifier.tree.level_names()
    for mode, fits in result.fits.items():
        for level, fit, before, after in zip(levels, fits, result.ece_before[mode], result.ece_after[mode],
                                             strict=True):
            click.echo(f"{mode:9s} {level}: temperature {fit.temperature:.4f} fitted on {fit.num_images} images: "
                       f"NLL {fit.nll_before:.4f} -> {fit.nll_after:.4f}, ECE {before:.4f} -> {after:.4f}")


def _report_flat(result) -> None:
    """The temperature, the measures before and after, and the accept thresholds at the reported precisions."""
    from ..tasks.calibrate import REPORTED_PRECISIONS

    fit = result.fit
    biases = getattr(fit, "bias", None)
    if biases:
        click.echo(f"class bias fitted with it: from {min(biases):+.4f} to {max(biases):+.4f}")
    click.echo(f"temperature {fit.temperature:.4f} fitted on {fit.num_images} images: NLL {fit.nll_before:.4f} -> "
               f"{fit.nll_after:.4f}, ECE {result.before['ece']:.4f} -> {result.after['ece']:.4f}")
    for target in REPORTED_PRECISIONS:
        choice = result.table.threshold_for_precision(target)
        if choice.precision is None:
            click.echo(f"accept at precision {target:g}: no threshold reaches it on these images")
        else:
            click.echo(f"accept at precision {target:g}: confidence >= {choice.threshold:.4g} accepts "
                       f"{choice.accepted_share:.1%} of the calibration images ({choice.accepted} of "
                       f"{choice.num_images})")
        if choice.warning:
            click.echo(f"zsclip: warning: {printable(choice.warning)}", err=True)
