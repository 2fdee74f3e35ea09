"""Options shared by classify and eval for label trees, descriptions and open-set rejection."""

from __future__ import annotations

import click

from ..errors import InputError
from ..hierarchy import MODES, SCORES, Rejector, TreeClassifier, read_tree
from ..options import RunOptions
from ..tasks.hierarchy import calibrate_rejector
from ..tasks.models import resolve_model
from .common import _apply


def tree_options(function):
    """--labels-tree, --tree-mode, --beam, --descriptions, --reject, --reject-calibrate, --tpr, ..."""
    return _apply(function, [
        click.option("--labels-tree", type=click.Path(dir_okay=False), default=None,
                     help="A label tree (YAML/JSON nested names, or an indented text file): one label and "
                          "probability per level, e.g. vehicle > truck > forklift."),
        click.option("--tree-mode", type=click.Choice(MODES), default="flat", show_default=True,
                     help="flat: leaves, probabilities summed up the tree; top-down: children of the chosen "
                          "node, level by level (--beam); chils: leaves reweighted by their parent (CHiLS)."),
        click.option("--beam", default=1, show_default=True, type=click.IntRange(min=1, max=1000),
                     help="top-down: how many nodes to keep per level."),
        click.option("--descriptions", type=click.Path(dir_okay=False), default=None,
                     help="A JSON of class -> sentences (CuPL / CLIP_benchmark format) added to each class's "
                          "prompt ensemble."),
        click.option("--reject", type=float, default=None,
                     help="Open set: label an image 'none' when its score (--reject-score) is below this."),
        click.option("--reject-calibrate", default=None,
                     help="Open set: images of the named classes (folder, glob); the threshold keeps --tpr of them."),
        click.option("--tpr", default=0.95, show_default=True, type=click.FloatRange(0, 1, min_open=True,
                                                                                     max_open=True),
                     help="True-positive rate the calibrated threshold keeps."),
        click.option("--reject-score", type=click.Choice(SCORES), default="mcm", show_default=True,
                     help="mcm: max softmax of cosine similarities at temperature 1 (MCM); max-prob: the "
                          "classifier's top probability."),
        click.option("--reject-label", default="none", show_default=True, help="The label rejected images get."),
    ])


def resolve_tree_classifier(path: str, descriptions: str | None, templates, model, pretrained,
                            options: RunOptions, cache: bool, cache_dir):
    """(encoder, TreeClassifier): a tree file (or a saved tree classifier .zsct) and its model."""
    tree = read_tree(path)
    encoder = resolve_model(model, pretrained, options)
    return encoder, TreeClassifier.build(encoder, tree, templates, descriptions=descriptions,
                                         precision=options.precision, cache=cache, cache_dir=cache_dir)


def make_rejector(classifier, encoder, threshold: float | None, calibrate: str | None, tpr: float, score: str,
                  label: str, options: RunOptions) -> Rejector | None:
    """The open-set rejector the options ask for, or None."""
    if threshold is not None and calibrate is not None:
        raise InputError("give --reject THRESHOLD or --reject-calibrate IMAGES, not both")
    if threshold is not None:
        return Rejector(threshold, score, label)
    if calibrate is not None:
        return calibrate_rejector(classifier, encoder, calibrate, tpr=tpr, score=score, label=label, options=options)
    return None
