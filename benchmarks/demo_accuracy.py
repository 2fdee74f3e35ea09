"""Accuracy of the bundled demo model, measured through zsclip's own eval path.

    python benchmarks/demo_accuracy.py                  # 50 images per pair, seed 7
    python benchmarks/demo_accuracy.py --model local-dir:/tmp/candidate --per-class 20

Fresh images (a seed the training stream never used) of the seen pairs and of the held-out pairs
(never drawn in training) are written as manifests by ``zsclip.shapes.write_dataset`` and scored
by ``zsclip.evaluate`` with the prompt ensembles named in --templates, against the full label
set of each labelling: all 48 colour-shape classes, the 8 colours, or the 6 shapes. Each row is
the same as running

    python -m zsclip.shapes DIR --split held-out --label shape --seed 7 --per-class 50
    zsclip eval --data DIR/manifest.csv --labels-file DIR/labels.txt --model demo
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from zsclip import RunOptions, evaluate, load_model, shapes
from zsclip.data.collections import manifest

CASES = [("seen", "both"), ("held-out", "both"), ("held-out", "shape"), ("held-out", "colour"),
         ("seen", "shape"), ("seen", "colour")]
TARGETS = {("seen", "both"): 0.95, ("held-out", "both"): 0.75, ("held-out", "shape"): 0.90,
           ("held-out", "colour"): 0.90}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--per-class", type=int, default=50, help="Images per colour-shape pair.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--templates", default="openai-imagenet,photo", help="Comma-separated template sets.")
    parser.add_argument("--size", type=int, default=64, help="Image side in pixels (the model resizes to 64).")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    encoder = load_model(args.model, device="cpu")
    template_sets = args.templates.split(",")
    print(f"model {args.model}, {args.per_class} images per pair, {args.size} px, seed {args.seed}; "
          "top-1 accuracy (acc1)\n")
    print(f"{'images':16s} {'labels':22s} " + " ".join(f"{name:>16s}" for name in template_sets) + "   target")
    with tempfile.TemporaryDirectory() as tmp:
        for split, label in CASES:
            folder = Path(tmp) / f"{split}-{label}"
            path = shapes.write_dataset(folder, args.per_class, args.seed, split, label, size=args.size)
            classes = shapes.classnames(label)
            result = evaluate(manifest(path, classes), encoder, template_sets, options=RunOptions(workers=args.workers),
                              cache=False)
            scores = " ".join(f"{result.metrics[name]['acc1'] * 100:15.1f}%" for name in template_sets)
            target = TARGETS.get((split, label))
            images = f"{split} ({result.num_images})"
            print(f"{images:16s} {label + f' ({len(classes)} classes)':22s} {scores}   "
                  + (f">= {target:.0%}" if target else ""), flush=True)


if __name__ == "__main__":
    main()
