"""Classifier build speed: zsclip vs open_clip.build_zero_shot_classifier, same model, same run.

    python benchmarks/build_speed.py                       # ViT-B-32, 100 ImageNet classes x 80 templates
    python benchmarks/build_speed.py --classes 1000        # the full ImageNet classifier (slow reference)
    python benchmarks/build_speed.py --precisions fp32,auto,bf16
    python benchmarks/build_speed.py --classes 1000 --reference-classes 50   # reference timed on 50
    python benchmarks/build_speed.py --classes 1000 --device cuda --precisions fp32,auto

open_clip runs every prompt through all 77 positions in batches of 800, so its cost per prompt
does not depend on the class count: ``--reference-classes`` times it on the first N classes and
scales that to the full set (the line says so); weights are compared on those N classes.

Random weights are the default (pretrained=random): speed does not depend on the weights, and
no download is needed. Prints each time, the speed ratio, max |diff| and min cosine against the
reference, and top-1 agreement of class retrieval between the reference and zsclip weights.
"""

from __future__ import annotations

import argparse
import time

import open_clip
import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

import zsclip
from zsclip.precision import resolve_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--classes", type=int, default=100, help="ImageNet classes, evenly spaced (default 100)")
    parser.add_argument("--precisions", default="fp32,auto", help="zsclip precisions to time (comma-separated)")
    parser.add_argument("--reference-classes", type=int, default=None,
                        help="time open_clip on only the first N classes and scale its time per prompt")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    step = max(1, len(IMAGENET_CLASSNAMES) // args.classes)
    classes = list(IMAGENET_CLASSNAMES[::step][: args.classes])
    encoder = zsclip.load_model(args.model, pretrained=args.pretrained, device=args.device)
    prompts = len(classes) * len(OPENAI_IMAGENET_TEMPLATES)
    print(f"model {args.model} ({args.pretrained}), {len(classes)} classes x {len(OPENAI_IMAGENET_TEMPLATES)} "
          f"templates = {prompts} prompts, {torch.get_num_threads()} threads, torch {torch.__version__}")

    reference_classes = classes[: args.reference_classes or len(classes)]
    start = time.perf_counter()
    with torch.no_grad():
        reference = open_clip.build_zero_shot_classifier(
            encoder.model, encoder.tokenizer, reference_classes, OPENAI_IMAGENET_TEMPLATES,
            num_classes_per_batch=10, device=args.device).float().cpu()
    reference_seconds = (time.perf_counter() - start) * len(classes) / len(reference_classes)
    note = "" if len(reference_classes) == len(classes) else f", scaled from {len(reference_classes)} classes"
    print(f"open_clip build_zero_shot_classifier: {reference_seconds:8.2f} s  ({prompts / reference_seconds:7.1f} "
          f"prompts/s{note})")

    queries = encoder.encode_text([f"a photo of a {name}." for name in reference_classes])
    reference_top1 = (queries @ reference).argmax(dim=1)
    for precision in args.precisions.split(","):
        start = time.perf_counter()
        # the full list repeats two names for distinct synsets, which only the named list may do
        class_list = "imagenet1k" if len(classes) == len(IMAGENET_CLASSNAMES) else classes
        clf = zsclip.ZeroShotClassifier.build(encoder, class_list, "openai-imagenet", precision=precision,
                                              cache=False)
        seconds = time.perf_counter() - start
        weights = clf.weights[:, : len(reference_classes)]
        cosine = (weights * reference).sum(dim=0)
        agreement = ((queries @ weights).argmax(dim=1) == reference_top1).float().mean()
        label = f"zsclip {precision} (= {resolve_precision(precision, args.device)})"
        print(f"{label:37s} {seconds:8.2f} s  ({prompts / seconds:7.1f} prompts/s)  "
              f"ratio {reference_seconds / seconds:5.1f}x  max|diff| {(weights - reference).abs().max():.2e}  "
              f"min cos {cosine.min():.6f}  top-1 agreement {agreement:.2%}")


if __name__ == "__main__":
    main()
