"""Hierarchical zero-shot classification over label trees, and open-set rejection.

    from zsclip.hierarchy import read_tree, TreeClassifier, predict_tree, Rejector
    tree = read_tree("taxonomy.yaml")
    clf = TreeClassifier.build(encoder, tree, "openai-imagenet", descriptions="cupl.json")
    rows = predict_tree(clf, features, mode="chils")     # features: normalised [B, D]
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".descriptions": ["build_classifier", "read_descriptions"],
    ".metrics": ["TreeMetrics", "evaluate_tree", "plot_node_recall", "tree_targets"],
    ".modes": ["MODES", "TreeClassifier", "TreePrediction", "predict_tree"],
    ".openset": ["SCORES", "OpenSetMetrics", "Rejector", "auroc", "calibrate_threshold", "fpr_at_tpr", "mcm_score",
                 "openset_scores", "reject_labels"],
    ".tree": ["LabelTree", "Node", "from_data", "parse_tree", "read_tree"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .descriptions import build_classifier, read_descriptions
    from .metrics import TreeMetrics, evaluate_tree, plot_node_recall, tree_targets
    from .modes import MODES, TreeClassifier, TreePrediction, predict_tree
    from .openset import (
        SCORES,
        OpenSetMetrics,
        Rejector,
        auroc,
        calibrate_threshold,
        fpr_at_tpr,
        mcm_score,
        openset_scores,
        reject_labels,
    )
    from .tree import LabelTree, Node, from_data, parse_tree, read_tree

__all__ = [
    "LabelTree", "Node", "read_tree", "parse_tree", "from_data", "build_classifier", "read_descriptions",
    "MODES", "TreeClassifier", "TreePrediction", "predict_tree", "SCORES", "Rejector", "OpenSetMetrics",
    "mcm_score", "openset_scores", "calibrate_threshold", "auroc", "fpr_at_tpr", "reject_labels",
    "TreeMetrics", "evaluate_tree", "tree_targets", "plot_node_recall",
]
