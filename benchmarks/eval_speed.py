"""Eval throughput: zsclip eval vs open_clip's zero-shot loop on the same ImageFolder, same run;
and the time template comparison saves over one eval per template set.

    python benchmarks/eval_speed.py                        # 10 classes x 20 generated 640x480 JPEGs, ViT-B-32

open_clip's loop: torchvision-style ImageFolder + DataLoader (2 workers), encode_image, 100 * f @ W,
accuracy as open_clip_train.zero_shot computes it. Random weights by default: speed and metric
equality do not depend on them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import zsclip
from zsclip import RunOptions, evaluate
from zsclip.data.collections import image_folder

CLASSES = ["dog", "cat", "car", "airplane", "tree", "house", "person", "bicycle", "boat", "flower"]
TEMPLATE_SETS = ["photo", "openai-imagenet-7", "openai-imagenet"]


class _Folder(Dataset):
    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        return self.transform(Image.open(item.name).convert("RGB")), item.target


def open_clip_loop(collection, encoder, classifier, batch_size: int, workers: int = 2) -> tuple[float, float]:
    """open_clip_train.zero_shot.run, as written there (minus its logging), on ``encoder.device``."""
    loader = DataLoader(_Folder(collection.items, encoder.image_transform()), batch_size=batch_size,
                        num_workers=workers)
    weights = classifier.weights.to(encoder.device)
    top1 = top5 = n = 0.0
    with torch.inference_mode():
        for images, target in loader:
            images, target = images.to(encoder.device), target.to(encoder.device)
            features = encoder.model.encode_image(images, normalize=True).float()
            logits = 100.0 * features @ weights
            pred = logits.topk(5, 1, True, True)[1].t()
            correct = pred.eq(target.view(1, -1).expand_as(pred))
            top1 += correct[:1].reshape(-1).float().sum().item()
            top5 += correct[:5].reshape(-1).float().sum().item()
            n += images.size(0)
    return top1 / n, top5 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--workers", type=int, default=2, help="decode workers for both loops")
    parser.add_argument("--precision", default="fp32",
                        help="zsclip's precision (fp32 = the reference's, so metrics must be equal)")
    args = parser.parse_args()
    run = RunOptions(device=args.device, batch_size=args.batch_size, workers=args.workers, precision=args.precision)
    encoder = zsclip.load_model(args.model, pretrained=args.pretrained, device=args.device)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        for name in CLASSES:
            (Path(root) / name).mkdir()
            for i in range(args.per_class):
                low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
                Image.fromarray(low).resize((640, 480), Image.BICUBIC).save(Path(root) / name / f"{i}.jpg")
        collection = image_folder(root)
        print(f"{len(collection.items)} JPEGs 640x480 in {len(CLASSES)} classes, {args.model} ({args.pretrained})")
        cache = Path(root) / "cache"  # classifiers are built (and cached) before any image is timed
        for name in TEMPLATE_SETS:
            zsclip.ZeroShotClassifier.build(encoder, collection.classnames, name, cache_dir=cache)

        classifier = zsclip.ZeroShotClassifier.build(encoder, collection.classnames, "photo", cache_dir=cache)
        start = time.perf_counter()
        ref_acc1, ref_acc5 = open_clip_loop(collection, encoder, classifier, args.batch_size, args.workers)
        reference = time.perf_counter() - start
        start = time.perf_counter()
        result = evaluate(collection, encoder, ["photo"], options=run, cache_dir=cache)
        ours = time.perf_counter() - start
        m = result.metrics["photo"]
        print(f"open_clip zero-shot loop   {reference:6.1f} s  acc1 {ref_acc1:.4f}  acc5 {ref_acc5:.4f}")
        print(f"zsclip eval                {ours:6.1f} s  acc1 {m['acc1']:.4f}  acc5 {m['acc5']:.4f}  "
              f"ratio {reference / ours:.2f}x  equal metrics: {ref_acc1 == m['acc1'] and ref_acc5 == m['acc5']}")

        start = time.perf_counter()
        evaluate(collection, encoder, TEMPLATE_SETS, options=run, cache_dir=cache)
        together = time.perf_counter() - start
        separate = 0.0
        for name in TEMPLATE_SETS:
            start = time.perf_counter()
            evaluate(collection, encoder, [name], options=run, cache_dir=cache)
            separate += time.perf_counter() - start
        print(f"{len(TEMPLATE_SETS)} template sets: one pass {together:6.1f} s vs one eval each {separate:6.1f} s "
              f"({separate / together:.2f}x)")


if __name__ == "__main__":
    main()
