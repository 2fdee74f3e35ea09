"""Classify throughput: zsclip vs transformers' zero-shot-image-classification pipeline, same run.

    python benchmarks/vs_transformers_pipeline.py                  # 64 JPEGs, 10 and 100 labels
    python benchmarks/vs_transformers_pipeline.py --images 128 --labels 10,1000

Same model for both: a transformers CLIPModel shaped like ViT-B/32 (CLIPConfig defaults), random
weights (speed does not depend on them; no hub needed), OpenAI's CLIP tokenizer built offline.
Same prompt: the pipeline's hypothesis template "This is a photo of {}.". The pipeline runs the
text tower on every label for every image; zsclip builds the classifier once (exactly the same
vectors) and runs only the image tower per image. Prints images/s, the ratio and top-1 agreement.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from classify_speed import make_photos  # benchmarks/ is on sys.path when a benchmark runs
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from transformers import CLIPImageProcessor, pipeline

import zsclip
from zsclip.data.sources import expand_inputs
from zsclip.tasks.classify import classify_items
from zsclip.testing.tiny_hf import vit_b32_shaped_clip

TEMPLATE = "This is a photo of {}."  # the pipeline's default hypothesis_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--labels", default="10,100", help="label counts to run, comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]: both run there")
    args = parser.parse_args()

    model, tokenizer = vit_b32_shaped_clip()
    model = model.to(args.device)
    processor = CLIPImageProcessor()
    encoder = zsclip.wrap(model, tokenizer, processor, name="clip-vit-b-32-shaped (random)")
    classify = pipeline("zero-shot-image-classification", model=model, tokenizer=tokenizer,
                        image_processor=processor, device=args.device)
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(p) for p in make_photos(Path(folder), args.images, (640, 480))]
        print(f"{len(paths)} JPEGs 640x480, transformers CLIPModel (ViT-B/32 shape), {torch.get_num_threads()} threads")
        for count in map(int, args.labels.split(",")):
            step = max(1, len(IMAGENET_CLASSNAMES) // count)
            labels = list(IMAGENET_CLASSNAMES[::step][:count])

            start = time.perf_counter()
            theirs = [result[0]["label"] for result in classify(paths, candidate_labels=labels)]
            pipeline_rate = len(paths) / (time.perf_counter() - start)

            start = time.perf_counter()  # zsclip's time includes building its classifier
            classifier = zsclip.ZeroShotClassifier.build(encoder, labels, [TEMPLATE], cache=False)
            ours = [p.labels[0] for p in classify_items(list(expand_inputs([folder])), classifier, encoder, top_k=1)]
            rate = len(paths) / (time.perf_counter() - start)
            agreement = np.mean(np.array(ours) == np.array(theirs))
            print(f"{count:5d} labels: pipeline {pipeline_rate:6.2f} img/s, zsclip {rate:6.2f} img/s "
                  f"({rate / pipeline_rate:5.1f}x), top-1 agreement {agreement:.1%}", flush=True)


if __name__ == "__main__":
    main()
