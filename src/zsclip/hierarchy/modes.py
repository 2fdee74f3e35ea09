"""Hierarchical zero-shot classification over a label tree: flat, top-down and CHiLS.

Every node of the tree gets one text vector (its synonyms x templates, plus its description
sentences), built in one pass of the text tower; each mode is then arithmetic on one matrix
product of image features with those vectors:

- ``flat``: softmax over the leaves; a node's probability is the sum of its leaves' (so every
  parent equals the sum of its children). Labels descend greedily: the most probable level-1
  node, then its most probable child, ..., so the labels always form a path and the top
  level's answer is the Bayes choice under the leaf distribution.
- ``top-down``: the classic two-stage method: at each node, softmax among its children; a path's
  probability is the product of those conditional probabilities; a beam of the ``beam`` best
  partial paths is kept per level (beam 1: pure greedy descent; beam >= nodes per level: the
  most probable root-to-leaf path). Parents again equal the sum of their children.
- ``chils``: CHiLS (Novack et al., ICML 2023): each leaf's zero-shot probability (softmax over
  all leaves) is multiplied by its parent's zero-shot probability (softmax over the parent's
  level); the best reweighted leaf decides every level ("argmax mapped to the parent"). For
  deeper trees the leaf is reweighted by its ancestor at every level above it. Reported
  probabilities are the normalised reweighted scores summed up the tree.

Distributions are softmaxes of the classifier's logits even for sigmoid (SigLIP-style) models:
the modes need probabilities that sum to one at each choice.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..classifier import formats
from ..classifier.zeroshot import ZeroShotClassifier
from ..encoders.base import Encoder
from ..errors import ClassifierFileError, InputError
from ..outputs.atomic import atomic_path
from .descriptions import Descriptions, build_classifier, match_descriptions
from .names import MODES
from .tree import LabelTree, from_data

MAX_BEAM = 1_000
_FILE_FORMAT = formats.TREE
#: The smallest level probability a temperature sees (log 0 would be -inf).
LEVEL_FLOOR = 1e-12


@dataclass
class TreePrediction:
    """A batch's answers: node indices [B, L] and probabilities [B, L] per level, and every
    node's probability under the mode [B, N] (what the per-level probabilities are read from)."""

    nodes: torch.Tensor
    probabilities: torch.Tensor
    node_probabilities: torch.Tensor


class TreeClassifier:
    """A label tree plus one zero-shot class vector per node.

    ``node_classifier`` is an ordinary ZeroShotClassifier whose column ``i`` is ``tree.nodes[i]``;
    the classifier among a node's children, over a level, or over the leaves are column views of
    it (``classifier_for``), so nothing is encoded twice.
    """

    def __init__(self, tree: LabelTree, node_classifier: ZeroShotClassifier, calibration: dict | None = None) -> None:
        if node_classifier.weights.shape[1] != len(tree.nodes):
            raise ClassifierFileError(f"{node_classifier.weights.shape[1]} class vectors for a tree of "
                                      f"{len(tree.nodes)} nodes: rebuild the tree classifier")
        self.tree = tree
        self.node_classifier = node_classifier
        #: per-level temperatures (``zsclip calibrate`` on a tree file): {"method", "modes": {mode: [T per level]},
        #: what they were fitted on}; a level's reported probability is its cut's distribution tempered by T
        self.calibration = calibration
        n = len(tree.nodes)
        self._parent = torch.tensor([node.parent.index for node in tree.nodes])  # -1: the root
        self._leaves = torch.tensor([node.index for node in tree.leaves])
        self._by_depth = [torch.tensor([node.index for node in tree.nodes if node.depth == d])
                          for d in range(1, tree.depth + 1)]
        self._cuts = [torch.tensor([node.index for node in tree.level(d)]) for d in range(1, tree.depth + 1)]
        # _ancestor[d - 1][i]: node i's node on level d of the carried-down tree
        self._ancestor = [torch.tensor([tree.at_level(node, d).index for node in tree.nodes])
                          for d in range(1, tree.depth + 1)]
        self._groups = torch.where(self._parent < 0, torch.full_like(self._parent, n), self._parent)
        # _position[d - 1][i]: node i's column in the cut at level d (-1: not in that cut)
        self._position = []
        for cut in self._cuts:
            position = torch.full((n,), -1, dtype=torch.long)
            position[cut] = torch.arange(len(cut))
            self._position.append(position)

    # --- building and files ----------------------------------------------------------------
    @classmethod
    def build(
        cls,
        encoder: Encoder,
        tree: LabelTree,
        templates=None,
        descriptions: Descriptions | str | os.PathLike | None = None,
        **build_options,
    ) -> TreeClassifier:
        """Encode every node (synonyms x templates + the tree's and ``descriptions``' sentences) once.

        ``build_options`` go to ``build_classifier`` / ``ZeroShotClassifier.build`` (precision,
        cache, cache_dir, batch_size, progress, logit_scale).
        """
        classes = [node.synonyms for node in tree.nodes]
        if isinstance(descriptions, (str, os.PathLike)):
            from .descriptions import read_descriptions

            descriptions = read_descriptions(descriptions)
        extra = match_descriptions(classes, descriptions)
        sentences = [node.descriptions + more for node, more in zip(tree.nodes, extra, strict=True)]
        node_classifier = build_classifier(encoder, classes, templates, sentences, **build_options)
        return cls(tree, node_classifier)

    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file: the node vectors, and the tree + provenance as JSON metadata."""
        path = Path(path)
        clf = self.node_classifier
        metadata = {"format": _FILE_FORMAT, "tree": self.tree.to_data(), "logit_scale": clf.logit_scale,
                    "logit_bias": clf.logit_bias, "provenance": clf.provenance}
        if self.calibration is not None:
            metadata["calibration"] = self.calibration
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            save_file({"weights": clf.weights.contiguous()}, temporary,
                      metadata={"zsclip": json.dumps(metadata, ensure_ascii=False)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TreeClassifier:
        """Read ``save``'s file (safetensors: loading runs no code); the tree is re-validated."""
        path = Path(path)
        if not path.is_file():
            raise ClassifierFileError(f"tree classifier file {path} not found")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = json.loads((handle.metadata() or {})["zsclip"])
            weights = load_file(str(path))["weights"]
        except (SafetensorError, OSError, KeyError, ValueError, TypeError, RecursionError) as error:
            reason = " ".join(str(error).split())[:160]
            raise ClassifierFileError(f"{path} is not a zsclip tree classifier file ({reason}): rebuild it") from None
        if not isinstance(metadata, dict) or metadata.get("format") != _FILE_FORMAT:
            found = metadata.get("format") if isinstance(metadata, dict) else None
            hint = " (a flat classifier: use it with --classifier)" if found == "zsclip-classifier/1" else ""
            raise ClassifierFileError(f"{path}: not a tree classifier (format {found!r}){hint}")
        try:
            tree = from_data(metadata["tree"], source=str(path))
        except InputError as error:
            raise ClassifierFileError(str(error)) from None
        if weights.dim() != 2 or weights.shape[1] != len(tree.nodes) or not weights.is_floating_point():
            raise ClassifierFileError(f"{path}: weights {tuple(weights.shape)} do not match the tree's "
                                      f"{len(tree.nodes)} nodes: rebuild it")
        problem = _scalars_problem(metadata) or _calibration_problem(metadata.get("calibration"), tree.depth) or (
            None if torch.isfinite(weights).all() else "weights hold NaN or infinite values")
        if problem:
            raise ClassifierFileError(f"{path} is damaged ({problem}): rebuild it")
        synonyms = [node.synonyms for node in tree.nodes]
        clf = ZeroShotClassifier(weights.float(), [s[0] for s in synonyms], synonyms, float(metadata["logit_scale"]),
                                 metadata["logit_bias"], metadata.get("provenance") or {})
        return cls(tree, clf, metadata.get("calibration"))

    # --- views -----------------------------------------------------------------------------
    def classifier_for(self, nodes: Sequence[int] | torch.Tensor) -> ZeroShotClassifier:
        """A flat ZeroShotClassifier over some nodes (e.g. the leaves: ``self.leaf_classifier``)."""
        index = torch.as_tensor(nodes, dtype=torch.long)
        clf = self.node_classifier
        names = [self.tree.nodes[i].synonyms for i in index.tolist()]
        return ZeroShotClassifier(clf.weights[:, index].contiguous(), [n[0] for n in names], names, clf.logit_scale,
                                  clf.logit_bias, dict(clf.provenance), clf.encoder)

    @property
    def leaf_classifier(self) -> ZeroShotClassifier:
        return self.classifier_for(self._leaves)

    def children_classifier(self, name: str | None = None) -> ZeroShotClassifier:
        """The classifier among a node's children (the root's, i.e. level 1, for None)."""
        node = self.tree.root if name is None else self.tree.find(name)
        if node.is_leaf:
            raise InputError(f"{node.name!r} is a leaf: it has no children to classify among")
        return self.classifier_for([child.index for child in node.children])

    # --- predicting ------------------------------------------------------------------------
    def predict(self, features: torch.Tensor, mode: str = "flat", beam: int = 1,
                scale: float | None = None) -> TreePrediction:
        """Labels and probabilities at every level for normalised image features [B, D]."""
        if mode not in MODES:
            raise InputError(f"unknown tree mode {mode!r}: use {', '.join(MODES)}")
        if not 1 <= int(beam) <= MAX_BEAM:
            raise InputError(f"beam width {beam} is out of range: use 1 to {MAX_BEAM}")
        clf = self.node_classifier
        scale = clf.logit_scale if scale is None else scale
        logits = scale * features.float() @ clf.weights  # [B, N]; a sigmoid bias cancels in every softmax
        if mode == "flat":
            prediction = self._flat(logits)
        elif mode == "top-down":
            prediction = self._top_down(logits, int(beam))
        else:
            prediction = self._chils(logits)
        temperatures = (self.calibration or {}).get("modes", {}).get(mode)
        return self._tempered(prediction, temperatures) if temperatures else prediction

    def level_distributions(self, prediction: TreePrediction) -> list[torch.Tensor]:
        """Each level's distribution over its cut [B, |cut|] (it sums to 1 in every mode), untempered: what a
        per-level temperature is fitted on and applied to."""
        return [prediction.node_probabilities[:, cut] for cut in self._cuts]

    def level_targets(self, nodes: torch.Tensor) -> list[torch.Tensor]:
        """For true nodes [B], each level's target column in its cut, -1 where the level is below a true
        internal node (a coarse label says nothing about the finer levels)."""
        depth = torch.tensor([node.depth for node in self.tree.nodes])
        leaf = torch.tensor([node.is_leaf for node in self.tree.nodes])
        out = []
        for level, (ancestor, position) in enumerate(zip(self._ancestor, self._position, strict=True), start=1):
            known = (depth[nodes] >= level) | leaf[nodes]
            out.append(torch.where(known, position[ancestor[nodes]], torch.full_like(nodes, -1)))
        return out

    def _tempered(self, prediction: TreePrediction, temperatures: Sequence[float]) -> TreePrediction:
        """``prediction`` with each level's reported probability read from its cut's distribution tempered by
        that level's temperature (softmax(log p / T)); the chosen nodes and node probabilities stay."""
        probabilities = prediction.probabilities.clone()
        for level, (distribution, temperature) in enumerate(
                zip(self.level_distributions(prediction), temperatures, strict=True)):
            tempered = (distribution.clamp_min(LEVEL_FLOOR).log() / float(temperature)).softmax(dim=-1)
            column = self._position[level][prediction.nodes[:, level]]
            probabilities[:, level] = tempered.gather(1, column[:, None])[:, 0]
        return TreePrediction(prediction.nodes, probabilities, prediction.node_probabilities)

    def _sum_up(self, leaf_probabilities: torch.Tensor) -> torch.Tensor:
        """Leaf probabilities [B, leaves] -> every node's (sum over its leaves), deepest level first."""
        marginals = torch.zeros(leaf_probabilities.shape[0], len(self.tree.nodes))
        marginals[:, self._leaves] = leaf_probabilities
        for nodes in reversed(self._by_depth[1:]):  # a level's internal nodes already hold their sums
            marginals.index_add_(1, self._parent[nodes], marginals[:, nodes])
        return marginals

    def _flat(self, logits: torch.Tensor) -> TreePrediction:
        marginals = self._sum_up(logits[:, self._leaves].softmax(dim=-1))
        chosen = None
        picks = []
        for depth, cut in enumerate(self._cuts, start=1):
            scores = marginals[:, cut]
            if chosen is not None:  # only the previous level's choice's children (or itself, carried)
                allowed = self._ancestor[depth - 2][cut][None, :] == chosen[:, None]
                scores = scores.masked_fill(~allowed, -1.0)
            chosen = cut[scores.argmax(dim=1)]
            picks.append(chosen)
        nodes = torch.stack(picks, dim=1)
        return TreePrediction(nodes, marginals.gather(1, nodes), marginals)

    def _conditionals(self, logits: torch.Tensor) -> torch.Tensor:
        """log p(node | parent): a softmax among each node's siblings, all groups at once."""
        groups = self._groups.expand_as(logits)
        size = (logits.shape[0], len(self.tree.nodes) + 1)
        maxima = torch.full(size, float("-inf")).scatter_reduce(1, groups, logits, reduce="amax")
        shifted = logits - maxima.gather(1, groups)
        sums = torch.zeros(size).scatter_add(1, groups, shifted.exp())
        return shifted - sums.gather(1, groups).log()

    def _top_down(self, logits: torch.Tensor, beam: int) -> TreePrediction:
        log_path = self._conditionals(logits)
        for nodes in self._by_depth[1:]:  # parents first: add the parent's path log-probability
            log_path[:, nodes] += log_path[:, self._parent[nodes]]
        path = log_path.exp()
        kept = None
        for depth, cut in enumerate(self._cuts, start=1):
            scores = log_path[:, cut]
            if kept is not None:  # expand only the beam: children of kept nodes, or kept leaves carried down
                parents = self._ancestor[depth - 2][cut]
                allowed = (parents[None, :, None] == kept[:, None, :]).any(dim=2)
                scores = scores.masked_fill(~allowed, float("-inf"))
            top = scores.topk(min(beam, len(cut)), dim=1)
            kept = cut[top.indices].masked_fill(top.values == float("-inf"), -1)  # [B, k] best first; -1: empty
        best = kept[:, 0]
        nodes = torch.stack([ancestor[best] for ancestor in self._ancestor], dim=1)
        return TreePrediction(nodes, path.gather(1, nodes), path)

    def _chils(self, logits: torch.Tensor) -> TreePrediction:
        log_scores = logits[:, self._leaves].log_softmax(dim=-1)
        for depth, cut in enumerate(self._cuts[:-1], start=1):
            level = torch.zeros_like(logits)
            level[:, cut] = logits[:, cut].log_softmax(dim=-1)
            log_scores = log_scores + level[:, self._ancestor[depth - 1][self._leaves]]
        best = self._leaves[log_scores.argmax(dim=1)]
        marginals = self._sum_up(log_scores.softmax(dim=-1))
        nodes = torch.stack([ancestor[best] for ancestor in self._ancestor], dim=1)
        return TreePrediction(nodes, marginals.gather(1, nodes), marginals)

    def rows(self, prediction: TreePrediction, rejected: torch.Tensor | None = None,
             reject_label: str = "none", scores: torch.Tensor | None = None) -> list[dict]:
        """One dict per image: ``levelN`` (label) and ``levelN_probability`` for every level;
        rejected images get ``reject_label`` and no probability at every level, and ``openset_score``
        is added when ``scores`` is given."""
        names = self.tree.level_names()
        out = []
        for row, (nodes, probabilities) in enumerate(zip(prediction.nodes.tolist(),
                                                         prediction.probabilities.tolist(), strict=True)):
            record: dict = {}
            refused = rejected is not None and bool(rejected[row])
            for name, node, probability in zip(names, nodes, probabilities, strict=True):
                record[name] = reject_label if refused else self.tree.nodes[node].name
                record[f"{name}_probability"] = None if refused else probability
            if scores is not None:
                record["openset_score"] = float(scores[row])
            out.append(record)
        return out

    def __repr__(self) -> str:
        return f"TreeClassifier({self.tree!r}, model={self.node_classifier.provenance.get('model')!r})"


def _scalars_problem(metadata: dict) -> str | None:
    """What is wrong with a tree classifier file's scale, bias and provenance, or None."""
    scale, bias = metadata.get("logit_scale"), metadata.get("logit_bias")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        return f"logit_scale {str(scale)[:20]} is not a positive number"
    if bias is not None and (isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias)):
        return f"logit_bias {str(bias)[:20]} is not a number"
    if not isinstance(metadata.get("provenance", {}), dict):
        return "provenance is not an object"
    return None


def _calibration_problem(calibration: object, depth: int) -> str | None:
    """What is wrong with a tree file's per-level calibration, or None: a temperature per level for each
    mode it names, each a finite number in the range flat classifiers allow."""
    if calibration is None:
        return None
    from ..calibration.temperature import MAX_TEMPERATURE, MIN_TEMPERATURE

    modes = calibration.get("modes") if isinstance(calibration, dict) else None
    if not isinstance(modes, dict) or not modes:
        return "calibration holds no temperatures per mode"
    for mode, temperatures in modes.items():
        if mode not in MODES or not isinstance(temperatures, list) or len(temperatures) != depth:
            return f"calibration for mode {str(mode)[:20]} is not one temperature per level ({depth})"
        for value in temperatures:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
                return f"calibration temperature {str(value)[:20]} is not a number in [{MIN_TEMPERATURE}, " \
                       f"{MAX_TEMPERATURE:g}]"
    return None


def predict_tree(tree_classifier: TreeClassifier, features: torch.Tensor, mode: str = "flat", beam: int = 1,
                 rejector=None) -> list[dict]:
    """Rows for a batch of normalised image features [B, D]: what ``zsclip classify --labels-tree``
    writes (one label and one probability column per level; ``openset_score`` with a rejector)."""
    prediction = tree_classifier.predict(features, mode, beam)
    if rejector is None:
        return tree_classifier.rows(prediction)
    scores = rejector.scores(tree_classifier.leaf_classifier, features)
    return tree_classifier.rows(prediction, ~rejector.accepts(scores), rejector.label, scores)


__all__ = ["MODES", "TreeClassifier", "TreePrediction", "predict_tree"]
