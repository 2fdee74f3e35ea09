"""Classifier build speed on a transformers CLIP: zsclip vs the plain transformers way, same run.

    python benchmarks/hf_build_speed.py                 # 25 ImageNet classes x 80 templates
    python benchmarks/hf_build_speed.py --classes 50

The model is a transformers CLIPModel with the ViT-B/32 text tower's shape (CLIPConfig defaults:
512 wide, 12 layers, 77 positions) and random weights: speed does not depend on the weights, and
the hub is not needed. The tokenizer is OpenAI's CLIP BPE, built offline from open_clip's
vocabulary (tests/tiny_hf.py).

Reference: what a transformers user writes (and what the zero-shot pipeline does per call):
per class, tokenize its 80 prompts with padding=True (to the longest of them), get_text_features,
normalise, average, normalise. zsclip runs once with shared template prefixes and once with them
switched off (padding cut only), to show each trick's share.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from transformers import CLIPImageProcessor

import zsclip
from zsclip.testing.tiny_hf import vit_b32_shaped_clip


def features(output) -> torch.Tensor:
    """get_text_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def reference_build(model, tokenizer, classes) -> torch.Tensor:
    columns = []
    with torch.inference_mode():
        for name in classes:
            inputs = tokenizer([t(name) for t in OPENAI_IMAGENET_TEMPLATES], padding=True, return_tensors="pt")
            embeddings = F.normalize(features(model.get_text_features(**inputs)), dim=-1)
            columns.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    return torch.stack(columns, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=25, help="ImageNet classes, evenly spaced")
    args = parser.parse_args()

    model, tokenizer = vit_b32_shaped_clip()
    encoder = zsclip.wrap(model, tokenizer, CLIPImageProcessor(), name="clip-vit-b-32-shaped (random)")
    step = max(1, len(IMAGENET_CLASSNAMES) // args.classes)
    classes = list(IMAGENET_CLASSNAMES[::step][: args.classes])
    prompts = len(classes) * len(OPENAI_IMAGENET_TEMPLATES)
    print(f"transformers CLIPModel (text 512x12), {len(classes)} classes x {len(OPENAI_IMAGENET_TEMPLATES)} "
          f"templates = {prompts} prompts, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    reference = reference_build(model, tokenizer, classes)
    reference_seconds = time.perf_counter() - start
    print(f"transformers, per class, padding=True   {reference_seconds:7.1f} s  ({prompts / reference_seconds:6.1f} "
          "prompts/s)")

    for label, shares in (("zsclip (padding cut only)", False), ("zsclip (+ shared template prefixes)", True)):
        encoder.shares_prefixes = shares
        start = time.perf_counter()
        clf = zsclip.ZeroShotClassifier.build(encoder, classes, "openai-imagenet", precision="fp32", cache=False)
        seconds = time.perf_counter() - start
        diff = (clf.weights - reference).abs().max().item()
        print(f"{label:38s} {seconds:7.1f} s  ({prompts / seconds:6.1f} prompts/s)  "
              f"{reference_seconds / seconds:5.2f}x  max |diff| {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
