"""Multi-label and retrieval metrics, as the field defines them.

Multi-label: average precision per label equal to scikit-learn's ``average_precision_score``
(the precision at each distinct score, weighted by the recall it adds: no interpolation), mAP the
mean over labels with at least one positive image; micro and macro F1, precision and recall at the
head's thresholds (macro F1 as scikit-learn's ``f1_score(average="macro", zero_division=0)``).
AP needs every score of a label, so scores are kept: [N, C] floats (a million images x 100 labels is
400 MB); F1 counts are sums and combine across machines.

Retrieval: CLIP_benchmark's ``zeroshot_retrieval`` (1.6.2): ``image_retrieval_recall@k`` is the share
of captions whose image is among the k images scored highest against the caption,
``text_retrieval_recall@k`` the share of images with at least one of their captions among the k
captions scored highest against the image; ranking by ``torch.topk`` as the reference does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def average_precision(scores: torch.Tensor, truth: torch.Tensor) -> float | None:
    """scikit-learn's ``average_precision_score`` for one label; None when it has no positive."""
    truth = truth.bool()
    positives = int(truth.sum())
    if positives == 0:
        return None
    order = torch.argsort(scores.double(), descending=True, stable=True)
    ranked, hits = scores.double()[order], truth[order].double()
    true_pos = torch.cumsum(hits, 0)
    predicted = torch.arange(1, len(ranked) + 1, dtype=torch.float64)
    last = torch.ones(len(ranked), dtype=torch.bool)
    last[:-1] = ranked[1:] != ranked[:-1]  # one point per distinct score (ties together)
    precision = (true_pos / predicted)[last]
    recall = (true_pos / positives)[last]
    gained = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((gained * precision).sum())


class MultiLabelMetrics:
    """Scores and truth batch by batch; ``result(thresholds)`` gives AP, mAP, F1, precision, recall."""

    def __init__(self, classnames: Sequence[str]) -> None:
        self.classnames = list(classnames)
        self._scores: list[torch.Tensor] = []
        self._truth: list[torch.Tensor] = []

    def update(self, scores: torch.Tensor, label_sets: Sequence[Sequence[int]]) -> None:
        truth = torch.zeros(len(label_sets), len(self.classnames), dtype=torch.bool)
        for row, labels in enumerate(label_sets):
            truth[row, list(labels)] = True
        self._scores.append(scores.detach().float().cpu())
        self._truth.append(truth)

    @property
    def count(self) -> int:
        return sum(len(s) for s in self._scores)

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        width = len(self.classnames)
        if not self._scores:
            return torch.zeros(0, width), torch.zeros(0, width, dtype=torch.bool)
        return torch.cat(self._scores), torch.cat(self._truth)

    def result(self, thresholds: torch.Tensor | None = None) -> dict:
        scores, truth = self.arrays()
        per_label_ap = [average_precision(scores[:, c], truth[:, c]) for c in range(len(self.classnames))]
        present = [ap for ap in per_label_ap if ap is not None]
        result: dict = {"mAP": sum(present) / len(present) if present else None,
                        "per_label_ap": dict(zip(self.classnames, per_label_ap, strict=True)),
                        "num_images": len(scores), "num_labels_with_positives": len(present),
                        "label_counts": dict(zip(self.classnames, truth.sum(dim=0).tolist(), strict=True))}
        if thresholds is not None:
            result.update(threshold_metrics(scores >= thresholds, truth, self.classnames))
        return result


def threshold_metrics(predicted: torch.Tensor, truth: torch.Tensor, classnames: Sequence[str]) -> dict:
    """Micro / macro F1, precision and recall of boolean predictions [N, C] against truth [N, C]
    (scikit-learn's ``precision_recall_fscore_support`` with ``zero_division=0``)."""
    tp = (predicted & truth).sum(dim=0).double()
    fp = (predicted & ~truth).sum(dim=0).double()
    fn = (~predicted & truth).sum(dim=0).double()

    def ratio(a, b):
        return torch.where(b > 0, a / b.clamp_min(1), torch.zeros_like(a))

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    TP, FP, FN = float(tp.sum()), float(fp.sum()), float(fn.sum())  # noqa: N806 (the usual names)
    return {
        "micro_f1": 2 * TP / (2 * TP + FP + FN) if TP + FP + FN else 0.0,
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "micro_precision": TP / (TP + FP) if TP + FP else 0.0,
        "micro_recall": TP / (TP + FN) if TP + FN else 0.0,
        "macro_precision": float(precision.mean()) if len(f1) else 0.0,
        "macro_recall": float(recall.mean()) if len(f1) else 0.0,
        "per_label": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(t + n)}
                      for name, p, r, f, t, n in zip(classnames, precision, recall, f1, tp, fn, strict=True)},
    }


RECALL_K = (1, 5, 10)


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, text_image: Sequence[int],
                     ks: Sequence[int] = RECALL_K, block: int = 1024) -> dict:
    """CLIP_benchmark's retrieval metrics from normalised features: images [I, D], captions [T, D],
    ``text_image[t]`` the image of caption t. Scores in blocks of rows (memory ~ block x max(I, T))."""
    images, texts = image_features.float(), text_features.float()
    owner = torch.as_tensor(list(text_image), dtype=torch.long)
    metrics = {}
    for k in ks:
        # image retrieval: per caption, is its image among the k best images
        hits = []
        for start in range(0, len(texts), block):
            scores = texts[start:start + block] @ images.T
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
            hits.append((top == owner[start:start + block, None]).any(dim=1))
        image_recall = torch.cat(hits).float().mean().item() if hits else 0.0
        # text retrieval: per image, is any of its captions among the k best captions
        found = []
        for start in range(0, len(images), block):
            scores = images[start:start + block] @ texts.T
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
            found.append((owner[top] == torch.arange(start, start + len(scores))[:, None]).any(dim=1))
        text_recall = torch.cat(found).float().mean().item() if found else 0.0
        metrics[f"image_retrieval_recall@{k}"] = image_recall
        metrics[f"text_retrieval_recall@{k}"] = text_recall
    return metrics


__all__ = ["MultiLabelMetrics", "average_precision", "threshold_metrics", "retrieval_recall", "RECALL_K"]
