"""Classify throughput: zsclip's pipeline vs the straightforward open_clip loop, same run.

    python benchmarks/classify_speed.py                     # 200 generated 1600x1200 JPEGs, ViT-B-32
    python benchmarks/classify_speed.py --images 400 --workers 2
    python benchmarks/classify_speed.py --device cuda --images 2000 --batch-size 256 --precisions auto

(a) the seed example's loop: PIL open, preprocess, batches of 64, encode, matmul, softmax;
(b) zsclip's classify pipeline (what `zsclip classify` runs): JPEG draft decoding in DataLoader
    workers, overlapped with the model; once per --precisions entry (auto = exact fp32 on CPUs
    without native bf16; int8 = dynamically quantized image tower, CPU only).
Same model (random weights by default: speed does not depend on them), same classifier.
Prints images/s of each, the ratio, and top-1 agreement between them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import zsclip
from zsclip.data.sources import expand_inputs
from zsclip.tasks.classify import classify_items

LABELS = ["dog", "cat", "car", "airplane", "tree", "house", "person", "bicycle", "boat", "flower"]


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Photo-like JPEGs: smooth colour fields plus noise, so they compress and decode like photos."""
    rng = np.random.default_rng(0)
    width, height = size
    paths = []
    for i in range(count):
        low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:04d}.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(path)
    return paths


def reference_loop(paths, encoder, classifier, batch_size=64, precision="fp32") -> list[int]:
    """The seed example, batched: what a user writes with open_clip alone (PIL in the main process,
    then the model on ``encoder.device``, under autocast for bf16/fp16 as open_clip's own eval does)."""
    from zsclip.precision import autocast

    model, preprocess, device = encoder.model, encoder.image_transform(), encoder.device
    weights = classifier.weights.to(device)
    top1 = []
    with torch.no_grad(), autocast(precision, device):
        for start in range(0, len(paths), batch_size):
            images = torch.stack([preprocess(Image.open(p)) for p in paths[start : start + batch_size]]).to(device)
            features = model.encode_image(images).float()
            features = features / features.norm(dim=-1, keepdim=True)
            probs = (100.0 * features @ weights).softmax(dim=-1)
            top1.extend(probs.argmax(dim=-1).tolist())
    return top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None, help="zsclip decode workers (default: one per core)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precisions", default=None,
                        help="zsclip precisions to run, comma-separated (default: auto,int8 on CPU, auto on CUDA).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--reference-precision", default="fp32", help="the open_clip loop's autocast: fp32, bf16, fp16")
    parser.add_argument("--decode", default="auto", help="zsclip's --decode: auto, cpu or device")
    args = parser.parse_args()
    if args.precisions is None:
        args.precisions = "auto,int8" if args.device == "cpu" else "auto"

    encoder = zsclip.load_model(args.model, pretrained=args.pretrained, device=args.device)
    classifier = zsclip.ZeroShotClassifier.build(encoder, LABELS, "photo", precision="fp32", cache=False)
    with tempfile.TemporaryDirectory() as folder:
        paths = make_photos(Path(folder), args.images, (1600, 1200))
        print(f"{len(paths)} JPEGs 1600x1200, model {args.model} ({args.pretrained}), {len(LABELS)} labels, "
              f"{torch.get_num_threads()} torch threads, device {encoder.device}")

        start = time.perf_counter()
        reference = reference_loop([str(p) for p in paths], encoder, classifier, args.batch_size,
                                   args.reference_precision)
        reference_rate = len(paths) / (time.perf_counter() - start)
        print(f"open_clip loop (seed example), {args.reference_precision}  {reference_rate:7.2f} images/s")

        pixels = torch.stack([encoder.preprocess(Image.open(p).convert("RGB")) for p in paths[: args.batch_size]])
        sources = list(expand_inputs([folder]))
        for precision in args.precisions.split(","):
            encoder.encode_images(pixels[:2], precision=precision)  # int8: quantize before timing
            start = time.perf_counter()
            for _ in range(3):
                encoder.encode_images(pixels, precision=precision)
            model_rate = 3 * len(pixels) / (time.perf_counter() - start)
            print(f"model alone, {precision:5s}             {model_rate:7.2f} images/s   "
                  f"ratio {model_rate / reference_rate:4.2f}x   (image tower on decoded pixels: the ceiling)")

            start = time.perf_counter()
            options = zsclip.RunOptions(device=args.device, precision=precision, batch_size=args.batch_size,
                                        workers=args.workers, decode=args.decode)
            predictions = list(classify_items(sources, classifier, encoder, top_k=1, scale=100.0, options=options))
            rate = len(paths) / (time.perf_counter() - start)
            ours = [LABELS.index(p.labels[0]) for p in predictions]
            agreement = np.mean(np.array(ours) == np.array(reference))
            print(f"zsclip classify, {precision:5s} ({args.decode} decode) {rate:7.2f} images/s   "
                  f"ratio {rate / reference_rate:4.2f}x   "
                  f"top-1 agreement {agreement:.2%}", flush=True)


if __name__ == "__main__":
    main()
