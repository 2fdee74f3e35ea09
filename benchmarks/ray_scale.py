"""Ray Data vs the local pipeline on the same images: throughput, overhead, equality of results.

    python benchmarks/ray_scale.py                                   # demo model, 2,000 images
    python benchmarks/ray_scale.py --model ViT-B-32 --images 400     # seeded random weights, saved once

Runs `embed`'s feature stream over the same images (a) in this process (the local pipeline with
its decoding workers, its model loaded once) and (b) on a local Ray instance limited to --ray-cpus
CPUs (decode tasks + the encoding actor pool), alternately --repeats times (other work on a shared
machine moves both alike), and prints the median images/s of each, the ratio of the medians and the
largest embedding difference. The first Ray job starts the actor pool (worker processes, imports,
the model in each actor) and is reported on its own line; the jobs after it take the warm pool, as
a driver's later jobs do, so their ratio compares both runners with their models loaded.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
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


def timed(batches) -> tuple[torch.Tensor, float, float, float]:
    """(all features, images/s over the whole job, images/s over its second half, seconds to the first
    batch) of one job. The second half's rate is the steady throughput: it leaves out start-up (worker
    processes, the actors' models) and any batches that piled up behind a late first one."""
    start = time.perf_counter()
    first, features, times = None, [], []
    for *_, batch in batches:
        features.append(batch)
        times.append(time.perf_counter() - start)
        if first is None:
            first = times[-1]
    done = list(itertools.accumulate(len(f) for f in features))
    half = next(i for i, count in enumerate(done) if count >= done[-1] / 2)
    steady = (done[-1] - done[half]) / (times[-1] - times[half])
    return torch.cat(features), done[-1] / times[-1], steady, first


def prepared(model: str, pretrained: str | None, images: int, folder: Path, weights: Path):
    """(the encoder, the sources of ``images`` rendered PNGs in ``folder``): 64x64 for the demo model,
    256x256 for an open_clip model, whose seeded random weights are saved in ``weights`` so that every
    Ray actor loads exactly the driver's (a ``local-dir:`` model)."""
    name = model
    if model != "demo" and pretrained is None:
        import open_clip

        from zsclip.testing.tiny_open_clip import save_local_dir

        name = save_local_dir(weights, open_clip.get_model_config(model), seed=0)
    encoder = zsclip.load_model(name, pretrained=pretrained, device="cpu")
    size = 64 if model == "demo" else 256
    for index, spec in enumerate(shapes.sample_specs(images, seed=0)):
        shapes.render(spec, size=size).save(folder / f"{index:05d}.png")
    return encoder, list(expand_inputs([str(folder)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4, help="jobs per runner; the first Ray job is the cold one")
    args = parser.parse_args()
    options = zsclip.RunOptions(precision="fp32", batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as weights:
        encoder, sources = prepared(args.model, args.pretrained, args.images, Path(folder), Path(weights))
        print(f"{len(sources)} PNGs, model {args.model}, fp32, batch {args.batch_size}, "
              f"{args.repeats} alternating runs each")

        start = time.perf_counter()
        connect(RaySettings(num_cpus=args.ray_cpus))
        started = time.perf_counter() - start
        runs: dict[str, list[tuple[float, float, float]]] = {"local": [], "ray": []}
        difference = 0.0
        for _ in range(args.repeats):
            local, *figures = timed(feature_batches(sources, encoder, options))
            runs["local"].append(tuple(figures))
            remote, *figures = timed(ray_feature_batches(sources, encoder, options, RaySettings()))
            runs["ray"].append(tuple(figures))
            difference = max(difference, float((local - remote).abs().max()))
        cold, runs["ray"] = runs["ray"][0], runs["ray"][1:] or runs["ray"]
        medians = {name: [statistics.median(run[i] for run in found) for i in range(3)]
                   for name, found in runs.items()}
        for name, label in (("local", f"local pipeline ({options.decode_workers} decode workers)"),
                            ("ray", f"Ray Data, {args.ray_cpus} CPUs, warm actors")):
            whole, steady, first = medians[name]
            print(f"{label:40s} job {whole:7.1f} images/s, second half {steady:7.1f} images/s, first "
                  f"batch after {first:4.1f} s   (job runs: {', '.join(f'{r[0]:.1f}' for r in runs[name])})")
        print(f"{'Ray, first job (starts the actors)':40s} job {cold[0]:7.1f} images/s, second half {cold[1]:7.1f} "
              f"images/s, first batch after {cold[2]:4.1f} s")
        print(f"ratio Ray/local (medians): {medians['ray'][0] / medians['local'][0]:.2f}x over the whole job, "
              f"{medians['ray'][1] / medians['local'][1]:.2f}x over the second half; the first job "
              f"{cold[0] / medians['local'][0]:.2f}x ({started:.1f} s to start Ray itself is in none)")
        print(f"max |embedding difference| {difference:.2e} over {len(sources)} images")


if __name__ == "__main__":
    main()
