"""Zero-shot evaluation metrics, computed streaming: per batch, only top-k hits and a C x C
confusion count are kept, never an N x C logits matrix, so ImageNet-scale runs use flat memory.

Definitions follow the references: ``acc1``/``acc5`` as open_clip's zero-shot ``accuracy`` (target
among the k highest logits), ``mean_per_class_recall`` as CLIP_benchmark's (scikit-learn's
``balanced_accuracy_score``: the mean recall over classes that occur in the targets).
"""

from __future__ import annotations

import torch


class StreamingMetrics:
    """Accumulate predictions batch by batch; ``result()`` gives the metrics at any point."""

    def __init__(self, num_classes: int, top_k: tuple[int, ...] = (1, 5)) -> None:
        self.num_classes = num_classes
        self.top_k = top_k
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)  # [true, predicted]
        self.hits = dict.fromkeys(top_k, 0)
        self.count = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``logits`` [B, C] (or probabilities: only their order matters), ``targets`` [B]."""
        logits, targets = logits.detach().cpu(), targets.detach().cpu().long()
        ranked = logits.topk(min(max(self.top_k), self.num_classes), dim=1).indices
        for k in self.top_k:
            self.hits[k] += int((ranked[:, :k] == targets[:, None]).any(dim=1).sum())
        flat = targets * self.num_classes + ranked[:, 0]
        self.confusion += torch.bincount(flat, minlength=self.num_classes**2).view(self.num_classes, -1)
        self.count += len(targets)

    def state(self) -> dict:
        """The counts as plain data (for workers that score batches elsewhere, e.g. Ray tasks)."""
        return {"confusion": self.confusion.numpy(), "hits": dict(self.hits), "count": self.count}

    def absorb(self, state: dict) -> None:
        """Add counts another ``StreamingMetrics`` gathered (``state()``): metrics of disjoint
        batches combine exactly by addition."""
        self.confusion += torch.as_tensor(state["confusion"], dtype=torch.long)
        for k in self.top_k:
            self.hits[k] += int(state["hits"][k])
        self.count += int(state["count"])

    def result(self) -> dict:
        """``acc1``, ``acc5`` (None with fewer than 5 classes), ``mean_per_class_recall``, per-class
        recall and precision (None where undefined), the confusion matrix and the image count."""
        support = self.confusion.sum(dim=1)
        predicted = self.confusion.sum(dim=0)
        correct = self.confusion.diagonal()
        recall = [float(c) / float(s) if s else None for c, s in zip(correct, support, strict=True)]
        precision = [float(c) / float(p) if p else None for c, p in zip(correct, predicted, strict=True)]
        present = [r for r in recall if r is not None]
        metrics = {
            f"acc{k}": (self.hits[k] / self.count if self.count and k <= self.num_classes else None)
            for k in self.top_k
        }
        metrics.update({
            "mean_per_class_recall": sum(present) / len(present) if present else None,
            "per_class_recall": recall,
            "per_class_precision": precision,
            "confusion_matrix": self.confusion.tolist(),
            "num_images": self.count,
        })
        return metrics
