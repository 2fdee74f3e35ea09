"""Metrics of hierarchical predictions, streamed: per-level accuracy, mistake severity, per-node recall.

Mistake severity (Bertinetto et al., "Making Better Mistakes", CVPR 2020): the mean tree distance
between a wrong prediction and the truth, where the distance is the height of their lowest common
ancestor (mistaking a labrador for a poodle costs 1 under "dog"; for a truck, the tree's height).
Only counts are kept per batch, so they add up exactly across batches and machines.

Truth may be any node: an image labelled "dog" is scored at levels down to "dog"'s, not below.
Images the open-set rejector refused count as wrong at every level and as no mistake distance.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from ..errors import InputError
from ..outputs.atomic import atomic_path
from .modes import TreeClassifier
from .openset import OpenSetMetrics, Rejector
from .tree import LabelTree

#: Beyond this many nodes the recall plot shows the lowest-recall nodes only.
MAX_PLOTTED_NODES = 80


def tree_targets(tree: LabelTree, classnames: Iterable[str]) -> list[int]:
    """Node index of each dataset class name (e.g. a folder name), found by any synonym."""
    targets = []
    missing = []
    for name in classnames:
        try:
            targets.append(tree.find(name).index)
        except InputError:
            missing.append(name)
    if missing:
        raise InputError(f"{len(missing)} dataset class(es) are not in {tree.source} "
                         f"(e.g. {', '.join(map(repr, missing[:3]))}): add them to the tree or fix their names")
    return targets


class TreeMetrics:
    """Accumulate (predicted nodes per level, true node) batch by batch; ``result()`` at any time."""

    def __init__(self, tree: LabelTree) -> None:
        self.tree = tree
        levels, n = tree.depth, len(tree.nodes)
        self.correct = [0] * levels
        self.scored = [0] * levels
        self.distance_sum = [0] * levels
        self.mistakes = [0] * levels
        self.node_support = torch.zeros(n, dtype=torch.long)
        self.node_hits = torch.zeros(n, dtype=torch.long)
        self.rejected = 0
        self.count = 0
        # the true node's node on each level, or -1 where the truth stops above that level
        self._truth_at = [torch.tensor([tree.at_level(node, d).index if (node.is_leaf or node.depth >= d) else -1
                                        for node in tree.nodes]) for d in range(1, levels + 1)]

    def update(self, predicted: torch.Tensor, targets: torch.Tensor | list[int],
               rejected: torch.Tensor | None = None) -> None:
        """``predicted``: node indices [B, levels] (TreePrediction.nodes); ``targets``: true node indices [B]."""
        targets = torch.as_tensor(targets, dtype=torch.long)
        predicted = predicted.cpu()
        refused = torch.zeros(len(targets), dtype=torch.bool) if rejected is None else rejected.cpu().bool()
        self.count += len(targets)
        self.rejected += int(refused.sum())
        for level in range(self.tree.depth):
            truth = self._truth_at[level][targets]
            scored = truth >= 0
            hit = scored & ~refused & (predicted[:, level] == truth)
            self.scored[level] += int(scored.sum())
            self.correct[level] += int(hit.sum())
            self.node_support.index_add_(0, truth[scored], torch.ones(int(scored.sum()), dtype=torch.long))
            self.node_hits.index_add_(0, truth[hit], torch.ones(int(hit.sum()), dtype=torch.long))
            wrong = (scored & ~refused & ~hit).nonzero().flatten().tolist()
            for row in wrong:
                a, b = self.tree.nodes[int(truth[row])], self.tree.nodes[int(predicted[row, level])]
                self.distance_sum[level] += self.tree.lca_height(a, b, level + 1)
            self.mistakes[level] += len(wrong)

    def result(self) -> dict:
        """Per-level accuracy and mistake severity, the bottom level's severity as the headline,
        per-node recall (None for nodes without images) and support."""
        names = self.tree.level_names()
        levels = []
        for i, name in enumerate(names):
            levels.append({
                "level": name,
                "accuracy": self.correct[i] / self.scored[i] if self.scored[i] else None,
                "num_images": self.scored[i],
                "num_mistakes": self.mistakes[i],
                "mistake_severity": self.distance_sum[i] / self.mistakes[i] if self.mistakes[i] else None,
            })
        recall = [int(h) / int(s) if s else None for h, s in zip(self.node_hits, self.node_support, strict=True)]
        return {
            "levels": levels,
            "accuracy": {entry["level"]: entry["accuracy"] for entry in levels},
            "mistake_severity": levels[-1]["mistake_severity"] if levels else None,
            "per_node_recall": {node.name: r for node, r in zip(self.tree.nodes, recall, strict=True)},
            "per_node_support": {node.name: int(s) for node, s in zip(self.tree.nodes, self.node_support,
                                                                       strict=True)},
            "num_images": self.count,
            "num_rejected": self.rejected,
        }


def evaluate_tree(
    tree_classifier: TreeClassifier,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | list[int]]],
    *,
    modes: Iterable[str] = ("flat",),
    beam: int = 1,
    rejector: Rejector | None = None,
    unknown: Iterable[torch.Tensor] | None = None,
    tpr: float = 0.95,
) -> dict:
    """Stream labelled feature batches ``(features [B, D], true node indices [B])`` through every
    mode; with ``unknown`` (feature batches of images of no class) also report each open-set
    score's AUROC and FPR at ``tpr`` over the leaf classifier. Returns ``{"modes": {mode: metrics},
    "openset": {...}}`` (openset only with ``unknown``)."""
    modes = list(modes)
    metrics = {mode: TreeMetrics(tree_classifier.tree) for mode in modes}
    openset = OpenSetMetrics(tpr=tpr) if unknown is not None else None
    leaves = tree_classifier.leaf_classifier
    for features, targets in batches:
        if not len(features):
            continue
        refused = None
        if rejector is not None:
            refused = ~rejector.accepts(rejector.scores(leaves, features))
        for mode in modes:
            metrics[mode].update(tree_classifier.predict(features, mode, beam).nodes, targets, refused)
        if openset is not None:
            openset.update(leaves, features, known=True)
    result: dict = {"modes": {mode: m.result() for mode, m in metrics.items()}, "beam": beam}
    if openset is not None:
        for features in unknown:
            openset.update(leaves, features, known=False)
        result["openset"] = openset.result()
    if rejector is not None:
        result["rejector"] = {"score": rejector.score, "threshold": rejector.threshold, "label": rejector.label,
                              **rejector.calibration}
    return result


def plot_node_recall(path: str | os.PathLike, metrics: dict, tree: LabelTree, title: str = "per-node recall") -> Path:
    """A bar per node in tree order (names indented by level, coloured by level); beyond
    ``MAX_PLOTTED_NODES`` nodes, the lowest-recall ones. Nodes without images are left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    recall = metrics["per_node_recall"]
    shown = [node for node in tree.nodes if recall.get(node.name) is not None]
    if len(shown) > MAX_PLOTTED_NODES:
        shown = sorted(sorted(shown, key=lambda n: recall[n.name])[:MAX_PLOTTED_NODES], key=lambda n: n.index)
        title += f" (the {MAX_PLOTTED_NODES} lowest of {len(tree.nodes)} nodes)"
    colours = ["#4477aa", "#66ccee", "#228833", "#ccbb44", "#ee6677", "#aa3377"]
    figure, axes = plt.subplots(figsize=(7.5, max(2.5, 0.22 * len(shown) + 1)))
    axes.barh(range(len(shown)), [recall[n.name] for n in shown],
              color=[colours[(n.depth - 1) % len(colours)] for n in shown])
    names = ["   " * (n.depth - 1) + n.name for n in shown]
    axes.set_yticks(range(len(shown)), names, fontsize=8, family="monospace")
    for label in axes.get_yticklabels():  # left-aligned, so the indentation shows the tree
        label.set_horizontalalignment("left")
    axes.tick_params(axis="y", pad=0.62 * 8 * max(map(len, names), default=0) + 4)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("recall")
    axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110, format="png")
    finally:
        plt.close(figure)
    return path


__all__ = ["TreeMetrics", "evaluate_tree", "tree_targets", "plot_node_recall", "MAX_PLOTTED_NODES"]
