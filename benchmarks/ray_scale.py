"""Ray Data vs the local pipeline on the same images: throughput, overhead, equality of results.

    python benchmarks/ray_scale.py                                   # demo model, 2,000 images
    python benchmarks/ray_scale.py --model ViT-B-32 --images 400     # seeded random weights, saved once

Runs `embed`'s feature stream over the same images (a) in this process (the local pipeline with
its decoding workers) and (b) on a local Ray instance limited to --ray-cpus CPUs (decode tasks +
one encoding actor), and prints images/s, the ratio, and the largest embedding difference.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import zsclip
from zsclip import shapes
from zsclip.cluster import RaySettings, connect
from zsclip.cluster.pipeline import ray_feature_batches
from zsclip.data.sources import expand_inputs
from zsclip.pipeline import feature_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    options = zsclip.RunOptions(precision="fp32", batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as weights:
        model = args.model
        if model != "demo" and args.pretrained is None:  # random weights every actor can load identically
            import open_clip

            from zsclip.testing.tiny_open_clip import save_local_dir

            model = save_local_dir(Path(weights), open_clip.get_model_config(args.model), seed=0)
        encoder = zsclip.load_model(model, pretrained=args.pretrained, device="cpu")
        size = 64 if args.model == "demo" else 256
        for index, spec in enumerate(shapes.sample_specs(args.images, seed=0)):
            shapes.render(spec, size=size).save(Path(folder) / f"{index:05d}.png")
        sources = list(expand_inputs([folder]))
        print(f"{len(sources)} PNGs {size}x{size}, model {args.model}, fp32")

        start = time.perf_counter()
        local = torch.cat([f for *_, f in feature_batches(sources, encoder, options)])
        local_rate = len(sources) / (time.perf_counter() - start)
        print(f"local pipeline ({options.decode_workers} decode workers)      {local_rate:8.1f} images/s")

        start = time.perf_counter()
        connect(RaySettings(num_cpus=args.ray_cpus))
        started = time.perf_counter() - start
        start = time.perf_counter()
        remote = torch.cat([f for *_, f in ray_feature_batches(sources, encoder, options, RaySettings())])
        seconds = time.perf_counter() - start
        rate = len(sources) / seconds
        print(f"Ray Data, local instance, {args.ray_cpus} CPUs        {rate:8.1f} images/s   "
              f"ratio {rate / local_rate:.2f}x (+ {started:.1f} s to start Ray, {seconds:.1f} s job incl. actor "
              "start-up)")
        print(f"max |embedding difference| {float((local - remote).abs().max()):.2e} over {len(local)} images")


if __name__ == "__main__":
    main()
