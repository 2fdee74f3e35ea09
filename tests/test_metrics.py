"""Streaming metrics equal the references: open_clip's zero-shot accuracy, scikit-learn's
balanced accuracy and confusion matrix, computed here batch by batch."""

from __future__ import annotations

import pytest
import torch

from zsclip.tasks.metrics import StreamingMetrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _open_clip_accuracy(logits, targets, topk=(1, 5)) -> list[float]:
    """open_clip_train.zero_shot.accuracy; its last step, float() of a 1-element array, fails on
    NumPy >= 2.4, so on that error the same computation runs here with .item() instead."""
    try:
        from open_clip_train.zero_shot import accuracy

        return accuracy(logits, targets, topk=topk)
    except (ImportError, TypeError):
        pred = logits.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(targets.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum().item() for k in topk]


def _data(n: int, classes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n,), generator=generator)
    logits = torch.randn(n, classes, generator=generator)
    logits[torch.arange(n), targets] += 1.5  # better than chance, not perfect
    return logits, targets


@pytest.mark.parametrize("classes", [7, 30])
def test_streaming_metrics_equal_the_references(classes):
    logits, targets = _data(1000, classes, seed=classes)
    metrics = StreamingMetrics(classes)
    for start in range(0, len(targets), 64):  # batch by batch, as eval streams them
        metrics.update(logits[start : start + 64], targets[start : start + 64])
    result = metrics.result()
    top1, top5 = _open_clip_accuracy(logits, targets)
    assert result["acc1"] == pytest.approx(top1 / len(targets))
    assert result["acc5"] == pytest.approx(top5 / len(targets))
    predictions = logits.argmax(dim=1).numpy()
    balanced = sklearn_metrics.balanced_accuracy_score(targets.numpy(), predictions)
    assert result["mean_per_class_recall"] == pytest.approx(balanced)
    expected = sklearn_metrics.confusion_matrix(targets.numpy(), predictions, labels=list(range(classes)))
    assert result["confusion_matrix"] == expected.tolist()
    assert result["per_class_recall"] == pytest.approx(
        sklearn_metrics.recall_score(targets.numpy(), predictions, average=None).tolist())
    assert result["num_images"] == 1000 and 0 < result["acc1"] < result["acc5"] < 1


def test_fewer_than_five_classes_gives_null_acc5_and_absent_classes_are_skipped():
    metrics = StreamingMetrics(4)
    # class 3 never occurs as a target and is never predicted
    metrics.update(torch.tensor([[3.0, 1, 0, 0], [0, 3, 1, 0], [3, 0, 1, 0]]), torch.tensor([0, 1, 2]))
    result = metrics.result()
    assert result["acc5"] is None and result["acc1"] == pytest.approx(2 / 3)
    assert result["mean_per_class_recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert result["per_class_recall"][3] is None and result["per_class_precision"][3] is None
    assert result["per_class_precision"][0] == pytest.approx(1 / 2)
