"""``zsclip explain``: where the model saw each label: an overlay PNG and raw values per explained label.

The command parses options into the explain task (zsclip.tasks.explain) and prints one line per image;
``zsclip classify --explain DIR`` reuses ``explain_options`` and the same task."""

from __future__ import annotations

import sys

import click

from ..data.images import MAX_PIXELS
from ..data.urls import URL_TIMEOUT_S
from ..outputs.text import printable
from .common import (
    classifier_option,
    label_options,
    model_options,
    multilabel_options,
    ray_options,
    ray_settings,
    read_classes,
    run_options,
    usage_errors,
)
from .trees import tree_options

METHOD_HELP = ("Heatmap method: patch (training-free patch similarity, the default: it pointed at the asked shape "
               "most often in the demo-world pointing game) or gradcam (Grad-CAM on the image tower's last block).")


def explain_options(function):
    """--method and --upscale: what every command that explains takes."""
    function = click.option("--upscale", type=click.IntRange(min=1, max=8), default=None,
                            help="Run the image tower on pixels enlarged this much for a finer map "
                                 "(default: enough for an 8x8 grid; 1: the model's own size).")(function)
    return click.option("--method", type=click.Choice(["patch", "gradcam"]), default=None, help=METHOD_HELP)(function)


@click.command("explain")
@click.argument("inputs", nargs=-1, required=True)
@label_options
@classifier_option("A classifier file instead of --labels (built, linear probe, Tip-Adapter, multi-label, tree): "
                   "its own columns are explained.")
@click.option("--top-k", "-k", default=1, show_default=True, type=click.IntRange(min=1),
              help="Explain this many top labels per image (flat heads).")
@click.option("--text", "texts", multiple=True, metavar="TEXT",
              help="Explain this class or any text on every image instead of the top labels (repeatable).")
@click.option("--output-dir", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for NNNNN-IMAGE-LABEL.png overlays, .npy values (float32, the image's size) and "
                   "explained.jsonl.")
@explain_options
@tree_options
@multilabel_options
@model_options
@click.option("--max-pixels", default=MAX_PIXELS, show_default=True, type=click.IntRange(min=1),
              help="Refuse images with more pixels than this.")
@click.option("--url-timeout", default=URL_TIMEOUT_S, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds to wait for each URL.")
@ray_options
def explain_command(inputs, labels, labels_file, templates, classifier_file, top_k, texts, output_dir, method,
                    upscale, labels_tree, tree_mode, beam, descriptions, reject, reject_calibrate, tpr, reject_score,
                    reject_label, multi_label, multi_score, threshold, calibrate, target_precision, model, pretrained,
                    device, precision, cache_dir, no_cache, max_pixels, url_timeout, ray_address, ray_actors,
                    ray_stall_timeout) -> None:
    """Show where the model saw each label: a heatmap per label over each image.

    INPUTS are image files, folders, quoted globs or URLs (an embedding store has no pixels: explain the
    images it was made from). Each image is classified as `zsclip classify` does; its top label (--top-k
    labels; a label tree's chosen path; with --multi-label every label over its threshold), or each
    --text, is explained through the head's own weights.

    \b
    Examples:
      zsclip explain photo.jpg --labels "dog,cat,forklift" -o explained/
      zsclip explain photos/ --classifier adapted.zsc -k 2 -o explained/
      zsclip explain scene.png --labels-file labels.txt --text "red star" --model demo -o explained/
      zsclip explain photos/ --labels-file labels.txt -o explained/ --ray auto   # actors on a Ray cluster

    Writes OUTPUT_DIR/NNNNN-IMAGE-LABEL.png (the heatmap over the image), NNNNN-IMAGE-LABEL.npy (the raw
    values, float32, the image's own height x width) and OUTPUT_DIR/explained.jsonl (one row per heatmap).
    Exit status: 0 all explained, 1 some inputs failed, 2 usage error.
    """
    from ..tasks.explain import explain

    options = run_options(device, precision, max_pixels=max_pixels, url_timeout=url_timeout)
    with usage_errors():
        results = explain(list(inputs), read_classes(labels, labels_file), classifier=classifier_file,
                          templates=templates, descriptions=descriptions, labels_tree=labels_tree,
                          tree_mode=tree_mode, beam=beam, reject=reject, reject_calibrate=reject_calibrate, tpr=tpr,
                          reject_score=reject_score, reject_label=reject_label, multi_label=multi_label,
                          multi_score=multi_score, threshold=threshold, calibrate=calibrate,
                          target_precision=target_precision, top_k=top_k,
                          texts=list(texts) or None, method=method, upscale=upscale, output_dir=output_dir,
                          model=model, pretrained=pretrained, options=options, cache=not no_cache,
                          cache_dir=cache_dir, ray=ray_settings(ray_address, ray_actors, ray_stall_timeout))
    report(results, output_dir)


def report(results, output_dir: str) -> None:
    """One line per image on stdout (label, score, overlay file), failures on stderr, documented exit status."""
    count = failures = maps = 0
    for explanation in results:
        count += 1
        if explanation.error:
            failures += 1
            click.echo(f"zsclip: skipped {printable(explanation.source)}: {printable(explanation.error)}", err=True)
            continue
        parts = [f"{printable(row['label'])} {_score(row['score'])}-> {printable(row['png'])}"
                 for row in explanation.files]
        maps += len(explanation.files)
        click.echo(f"{printable(explanation.source)}: " + ("; ".join(parts) or "nothing to explain"))
    click.echo(f"zsclip: explained {count - failures} of {count} images ({maps} heatmaps) in {printable(output_dir)}"
               + (f"; {failures} failed" if failures else ""), err=True)
    sys.exit(1 if failures else 0)


def _score(score) -> str:
    return "" if score is None else f"{score:.3f} "
