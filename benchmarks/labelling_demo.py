"""Labelling formats and `zsclip sort --accept` on the demo model (offline).

1. Time to label N demo images into each format (CSV, Label Studio, FiftyOne, imagefolder) through the Python
   API, as a ratio to writing CSV in the same run (the same images, model and head; the best of --repeats runs).
   From image files (decode + model + sink: what a user runs) and from an embedding store of the same images
   (no decoding, no model: the sink's own cost stands out).
2. `sort --accept T`: the share of images accepted into class folders and their precision (accepted images whose
   folder is their true class), for several T, on a labelled demo set drawn in a harder style (tiny shapes) so the
   model is not sure of everything; sorted from an embedding store of them (the same answers, encoded once).

    PYTHONPATH=src python benchmarks/labelling_demo.py --images 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import zsclip
from zsclip import shapes
from zsclip.outputs.sinks import SinkOptions
from zsclip.store import EmbeddingStore, embed
from zsclip.tasks.classify import classify
from zsclip.tasks.sort import sort

FORMATS = {"csv": ("rows.csv", None), "label-studio": ("tasks.json", "label-studio"),
           "fiftyone (copy)": ("fo", "fiftyone"), "fiftyone (hardlink)": ("fo-link", "fiftyone"),
           "imagefolder (copy)": ("hf", "imagefolder")}


def timed_run(inputs, out: Path, fmt: str | None, files: str | None, options, encoder, labels) -> float:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    started = time.perf_counter()
    for _ in classify(inputs, labels, templates="photo", encoder=encoder, options=options, output=out,
                      output_format=fmt, sink_options=SinkOptions(files=files) if files else None,
                      cache=True):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--sort-only", action="store_true", help="only part 2 (sort --accept)")
    args = parser.parse_args()
    encoder = zsclip.load_model("demo", device="cpu")
    options = zsclip.RunOptions(precision="fp32", workers=args.workers)
    labels = shapes.classnames("both")
    per_class = max(1, round(args.images / len(labels)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.sort_only:
            time_formats(root, per_class, args, encoder, options, labels)
        sort_accept(root, per_class, encoder, options, labels)


def time_formats(root: Path, per_class: int, args, encoder, options, labels) -> None:
    manifest = shapes.write_dataset(root / "plain", per_class, seed=11)
    images = root / "plain" / "images"
    count = len(list(images.iterdir()))
    store = EmbeddingStore.create_or_open(root / "plain.zse", encoder, precision="fp32")
    embed(store, list(zsclip.data.sources.expand_inputs([str(images)])), encoder, options)
    print(f"## Time to label {count} demo images, ratio to CSV (best of {args.repeats})\n")
    print("| format | from images (s) | ratio | from a store (s) | ratio |")
    print("|---|---|---|---|---|")
    results = {name: (float("inf"), float("inf")) for name in FORMATS}
    for _ in range(args.repeats):  # formats interleaved: a busy machine slows every format alike
        for name, (target, fmt) in FORMATS.items():
            files = "hardlink" if "hardlink" in name else ("copy" if fmt in ("fiftyone", "imagefolder") else None)
            from_images = timed_run(str(images), root / target, fmt, files, options, encoder, labels)
            from_store = timed_run(str(root / "plain.zse"), root / target, fmt, files, options, encoder, labels)
            results[name] = (min(results[name][0], from_images), min(results[name][1], from_store))
    base_images, base_store = results["csv"]
    for name, (seconds_images, seconds_store) in results.items():
        print(f"| {name} | {seconds_images:.2f} | {seconds_images / base_images:.3f} | {seconds_store:.3f} | "
              f"{seconds_store / base_store:.2f} |")
    del manifest


def sort_accept(root: Path, per_class: int, encoder, options, labels) -> None:
    hard = shapes.write_dataset(root / "noise", per_class, seed=12, style="tiny")
    truth = {Path(row["path"]).name: row["label"] for row in csv.DictReader(hard.open())}
    hard_store = EmbeddingStore.create_or_open(root / "tiny.zse", encoder, precision="fp32")
    embed(hard_store, list(zsclip.data.sources.expand_inputs([str(root / "noise" / "images")])), encoder, options)
    print(f"\n## sort --accept on {len(truth)} labelled demo images (style tiny: small shapes, about 45% top-1)\n")
    print("| --accept | accepted | precision of accepted | to review |")
    print("|---|---|---|---|")
    for threshold in (0.0, 0.5, 0.8, 0.9, 0.95, 0.99):
        into = root / f"sorted-{threshold}"
        summary = sort(str(root / "tiny.zse"), into, accept=threshold, files="hardlink", labels=labels,
                       templates="photo", encoder=encoder, options=options)
        correct = 0
        for label in summary.per_class:
            folder = into / label
            correct += sum(1 for path in folder.iterdir() if truth[path.name] == label)
        precision = correct / summary.accepted if summary.accepted else float("nan")
        print(f"| {threshold:g} | {summary.accepted / len(truth):.1%} | {precision:.1%} | "
              f"{summary.review / len(truth):.1%} |")


if __name__ == "__main__":
    main()
