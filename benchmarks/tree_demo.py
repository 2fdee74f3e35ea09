"""Label trees and open-set rejection on the demo world: the three modes, and MCM vs max-probability.

    python benchmarks/tree_demo.py                   # ~1 minute on 2 CPU cores
    python benchmarks/tree_demo.py --style outline+tiny --per-class 10

(1) Tree shape > colour-shape (6 shapes x 8 colours = 48 leaves), images drawn in a hard style
    (default "outline": hollow shapes, where the demo model is ~50% right on 48 classes): accuracy per level and mistake
    severity (mean tree distance of wrong answers, Bertinetto et al. 2020) for flat, top-down, chils.
(2) Open set: the tree names 4 of the 6 shapes; images of the other 2 shapes are the unknowns
    (and, separately, shapes in colours outside the palette): AUROC and FPR at 95% TPR for the MCM
    score and the max-probability score of the leaf classifier.
Same images for every mode and score (features are encoded once per image set).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import zsclip
from zsclip import shapes
from zsclip.data.collections import image_folder
from zsclip.hierarchy import TreeClassifier, from_data
from zsclip.tasks.hierarchy import evaluate_tree_collection

KNOWN_SHAPES = ("circle", "square", "triangle", "star")


def draw(folder: Path, pairs, per_class: int, style: str, seed: int) -> None:
    rng = random.Random(seed)
    for colour, shape in pairs:
        target = folder / f"{colour} {shape}"
        target.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            spec = shapes.sample_spec(rng, [(colour, shape)])
            shapes.render(spec, style=style).save(target / f"{index}.png")


def draw_unnamed_colours(folder: Path, per_class: int, style: str, seed: int) -> None:
    rng = random.Random(seed)
    for shape in KNOWN_SHAPES:
        target = folder / f"unnamed {shape}"
        target.mkdir(parents=True, exist_ok=True)
        for index in range(per_class * 2):
            base = shapes.sample_spec(rng, [("red", shape)])
            spec = shapes.ShapeSpec(shapes.unnamed_colour(rng), shape, base.background, base.radius, base.centre,
                                    base.rotation)
            shapes.render(spec, style=style).save(target / f"{index}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", default="outline")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--templates", default="openai-imagenet-7")
    args = parser.parse_args()
    start = time.perf_counter()
    encoder = zsclip.load_model("demo", device="cpu")
    options = zsclip.RunOptions(workers=2, precision="fp32")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        draw(root / "all", shapes.combinations("all"), args.per_class, args.style, seed=1)
        full = from_data({shape: [f"{c} {shape}" for c in shapes.COLOURS] for shape in shapes.SHAPES})
        classifier = TreeClassifier.build(encoder, full, args.templates, precision="fp32", cache=False)
        result, _ = evaluate_tree_collection(image_folder(root / "all"), classifier, encoder, options=options)
        count = result["modes"]["flat"]["num_images"]
        print(f"(1) tree shape > colour-shape, 48 leaves, style {args.style!r}, {count} images, "
              f"templates {args.templates}")
        print("mode       shape acc  colour-shape acc  mistake severity (leaf level)")
        for mode, metrics in result["modes"].items():
            levels = metrics["accuracy"]
            severity = metrics["mistake_severity"]
            shown = "no mistakes" if severity is None else f"{severity:.3f}"
            print(f"{mode:9s}  {levels['level1']:8.1%}  {levels['level2']:16.1%}  {shown}")

        known = [(c, s) for c, s in shapes.combinations("all") if s in KNOWN_SHAPES]
        unknown = [(c, s) for c, s in shapes.combinations("all") if s not in KNOWN_SHAPES]
        draw(root / "known", known, args.per_class, args.style, seed=2)
        draw(root / "unknown-shapes", unknown, args.per_class, args.style, seed=3)
        draw_unnamed_colours(root / "unknown-colours", args.per_class, args.style, seed=4)
        partial = from_data({shape: [f"{c} {shape}" for c in shapes.COLOURS] for shape in KNOWN_SHAPES})
        classifier = TreeClassifier.build(encoder, partial, args.templates, precision="fp32", cache=False)
        print("\n(2) open set: 4 of 6 shapes named (32 leaves)")
        print("unknowns            score     AUROC   FPR@95%TPR")
        for name in ("unknown-shapes", "unknown-colours"):
            result, _ = evaluate_tree_collection(image_folder(root / "known"), classifier, encoder, modes=("flat",),
                                                 unknown=str(root / name), options=options)
            for score, entry in result["openset"].items():
                print(f"{name:18s}  {score:8s}  {entry['auroc']:.3f}   {entry['fpr95']:.3f}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
