"""Options shared by classify and eval for label trees, descriptions and open-set rejection."""

from __future__ import annotations

import click

from ..hierarchy.names import MODES, SCORES
from .common import _apply


def tree_options(function):
    """--labels-tree, --tree-mode, --beam, --descriptions, --reject, --reject-calibrate, --tpr, ...

    Options default to None (unset): an option given where it cannot apply is refused, never ignored."""
    return _apply(function, [
        click.option("--labels-tree", type=click.Path(dir_okay=False), default=None,
                     help="A label tree (YAML/JSON nested names, or an indented text file): one label and "
                          "probability per level, e.g. vehicle > truck > forklift."),
        click.option("--tree-mode", type=click.Choice(MODES), default=None,
                     help="With a tree. flat (default): leaves, probabilities summed up the tree; top-down: "
                          "children of the chosen node, level by level (--beam); chils: leaves reweighted by "
                          "their parent (CHiLS)."),
        click.option("--beam", default=None, type=click.IntRange(min=1, max=1000),
                     help="--tree-mode top-down: how many nodes to keep per level (default 1)."),
        click.option("--descriptions", type=click.Path(dir_okay=False), default=None,
                     help="A JSON of class -> sentences (CuPL / CLIP_benchmark format) added to each class's "
                          "prompt ensemble."),
        click.option("--reject", type=float, default=None,
                     help="Open set: label an image 'none' when its score (--reject-score) is below this. MCM "
                          "scores lie in [1/classes, 1]: prefer --reject-calibrate."),
        click.option("--reject-calibrate", default=None,
                     help="Open set: images of the named classes (folder, glob); the threshold keeps --tpr of them "
                          "(computed at the precision of the features it judges; printed)."),
        click.option("--tpr", default=None, type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="With --reject-calibrate: the true-positive rate the threshold keeps (default 0.95)."),
        click.option("--reject-score", type=click.Choice(SCORES), default=None,
                     help="mcm (default): max softmax of cosine similarities at temperature 1 (MCM); max-prob: the "
                          "classifier's top probability."),
        click.option("--reject-label", default=None, help="The label rejected images get (default none)."),
    ])
