"""The embedding store: re-classifying stored embeddings vs encoding the images again, same run.

    python benchmarks/store_speed.py                      # 1,000 JPEGs, ViT-B-32 random weights
    python benchmarks/store_speed.py --images 200 --synthetic-rows 1000000
    python benchmarks/store_speed.py --model demo --synthetic-rows 0   # the bundled model, its own world

(a) the open_clip loop (the seed example) classifying N JPEGs 640x480;
(b) `zsclip embed` of the same images once, then `classify` of the store with a new label set:
    the time of that re-classification and its ratio to (a) (alone; with building the new
    classifier; as a fresh `zsclip classify` process); top-1 agreement with (a); and the top-1
    agreement of float16 storage with float32 storage of the very same fp32 features (and, for
    the demo model, the accuracy of each against the true labels);
(c) a synthetic store of --synthetic-rows x 512 float16 embeddings: classify it with 1,000
    classes (one matmul per streamed batch), its time and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from classify_speed import LABELS, make_photos, reference_loop  # noqa: E402  (benchmarks/ is the path)

import zsclip
from zsclip import shapes
from zsclip.data.sources import expand_inputs
from zsclip.store import EmbeddingStore, embed
from zsclip.store.store import ROW_GROUP_ROWS
from zsclip.tasks.stored import classify_store

NEW_LABELS = ["forklift", "pallet", "empty shelf", "truck", "person", "box", "ladder", "door", "window", "sign"]


def synthetic_store(folder: Path, rows: int, dim: int, encoder) -> EmbeddingStore:
    """A store of ``rows`` random unit vectors, written shard by shard straight from NumPy."""
    store = EmbeddingStore.create_or_open(folder, encoder, precision="fp32", dtype="float16")
    store.manifest["embed_dim"] = dim
    rng = np.random.default_rng(0)
    per_shard = 250_000
    from zsclip.store.format import schema

    for start in range(0, rows, per_shard):
        n = min(per_shard, rows - start)
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        flat = pa.array(vectors.astype(np.float16).reshape(-1))
        names = pa.array([f"/synthetic/{i}.jpg" for i in range(start, start + n)])
        nulls = pa.nulls(n)
        table = pa.table({"path": names, "resolved": names, "size": nulls.cast(pa.int64()),
                          "mtime_ns": nulls.cast(pa.int64()), "sha256": nulls.cast(pa.string()),
                          "width": nulls.cast(pa.int32()), "height": nulls.cast(pa.int32()),
                          "label": nulls.cast(pa.int32()), "error": nulls.cast(pa.string()),
                          "deleted": pa.array(np.zeros(n, dtype=bool)),
                          "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)}, schema=schema(dim, "float16"))
        name = f"shard-{len(store.manifest['shards']):05d}-synthetic.parquet"
        pq.write_table(table, folder / name, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        store.manifest["shards"].append({"file": name, "rows": n})
    store._write_manifest()
    return EmbeddingStore.open(folder)


def demo_photos(folder: Path, count: int, size: int) -> tuple[list[Path], list[str]]:
    """JPEGs of the demo model's world (coloured shapes) and each one's true colour-shape label."""
    paths, truths = [], []
    for index, spec in enumerate(shapes.sample_specs(count, seed=3)):
        path = folder / f"shape_{index:04d}.jpg"
        shapes.render(spec, size=size).convert("RGB").save(path, quality=90)
        paths.append(path)
        truths.append(shapes.label_of(spec))
    return paths, truths


def tee(encoder, options, recorded: list):
    """``embed``'s feature source: the local pipeline, with each batch also kept, so the same fp32
    features can be stored a second time (as float32) without encoding again."""
    def features(sources):
        for names, errors, batch in zsclip.pipeline.feature_batches(list(sources), encoder, options):
            recorded.append((names, errors, batch.clone()))
            yield names, errors, batch
    return features


def timed(function, repeats: int = 5) -> tuple[float, object]:
    """The median wall time of ``repeats`` calls (the shared CPU is noisy at milliseconds) and a result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def cli_time(root: Path, new_labels: list[str], loop_seconds: float) -> None:
    """`zsclip classify STORE --labels ...` in a fresh process: what a CLI user waits for."""
    command = [sys.executable, "-m", "zsclip", "classify", str(root / "photos.zse"), "--labels",
               ",".join(new_labels), "-t", "photo", "--no-cache", "-o", str(root / "new.parquet")]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    print(f"    `zsclip classify STORE` as a fresh process:  {seconds:8.2f} s   ratio "
          f"{loop_seconds / seconds:7.1f}x  (Python start-up, imports and model load included)")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="ViT-B-32 (random weights) or demo (the bundled model)")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--synthetic-rows", type=int, default=1_000_000, help="0 skips (c)")
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    demo = args.model == "demo"
    encoder = zsclip.load_model(args.model, pretrained=None if demo else args.pretrained, device="cpu")
    labels, new_labels = (shapes.classnames("both"), shapes.classnames("shape")) if demo else (LABELS, NEW_LABELS)
    print(f"model {encoder.name} ({encoder.embed_dim}-d), {torch.get_num_threads()} threads")
    options = zsclip.RunOptions(precision="fp32")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        (root / "photos").mkdir()
        if demo:
            paths, truths = demo_photos(root / "photos", args.images, 480)
            kind = "480x480 shape JPEGs"
        else:
            paths, truths = make_photos(root / "photos", args.images, (640, 480)), None
            kind = "640x480 JPEGs"
        first = zsclip.ZeroShotClassifier.build(encoder, labels, "photo", precision="fp32", cache=False)
        start = time.perf_counter()
        reference = reference_loop([str(p) for p in paths], encoder, first)
        loop_seconds = time.perf_counter() - start
        print(f"(a) open_clip loop, {len(paths)} {kind}, {len(labels)} labels: {loop_seconds:8.2f} s")

        sources = list(expand_inputs([str(root / "photos")]))
        recorded: list = []
        start = time.perf_counter()
        store = EmbeddingStore.create_or_open(root / "photos.zse", encoder, precision="fp32", dtype="float16")
        embed(store, sources, encoder, options, features=tee(encoder, options, recorded))
        print(f"(b) zsclip embed once (float16 store):          {time.perf_counter() - start:8.2f} s")
        exact = EmbeddingStore.create_or_open(root / "exact.zse", encoder, precision="fp32", dtype="float32")
        embed(exact, sources, encoder, options, features=lambda _: iter(recorded))  # the same fp32 features
        half, full = EmbeddingStore.open(root / "photos.zse"), EmbeddingStore.open(root / "exact.zse")

        new = zsclip.ZeroShotClassifier.build(encoder, new_labels, "photo", precision="fp32", cache=False)
        seconds, rows = timed(lambda: list(classify_store(half, new, top_k=3)))
        print(f"    re-classify the store, {len(new_labels)} new labels:       {seconds:8.4f} s   ratio "
              f"{loop_seconds / seconds:7.0f}x  ({len(rows)} rows, median of 5)")

        def build_and_classify():
            clf = zsclip.ZeroShotClassifier.build(encoder, new_labels, "photo", precision="fp32", cache=False)
            return list(classify_store(half, clf, top_k=3))
        seconds, _ = timed(build_and_classify)
        print(f"    + building that classifier (text tower):     {seconds:8.4f} s   ratio "
              f"{loop_seconds / seconds:7.0f}x")
        if args.pretrained == "random" and not demo:
            print("    `zsclip classify STORE` as a fresh process:  skipped (random weights differ in every process, "
                  "and the store refuses other weights)")
        else:
            cli_time(root, new_labels, loop_seconds)

        stored = [labels.index(p.labels[0]) for p in classify_store(half, first, top_k=1)]
        print(f"    top-1 agreement of the float16 store with (a): {np.mean(np.array(stored) == reference):.2%}")
        for name, classifier in ((f"{len(labels)} labels", first), (f"{len(new_labels)} new labels", new)):
            a = list(classify_store(half, classifier, top_k=1))
            b = list(classify_store(full, classifier, top_k=1))
            same = np.mean([x.labels == y.labels for x, y in zip(a, b, strict=True)])
            gap = max(abs(x.scores[0] - y.scores[0]) for x, y in zip(a, b, strict=True) if x.labels == y.labels)
            line = f"    float16 vs float32 storage, {name}: top-1 agreement {same:.2%}, max |p diff| {gap:.1e}"
            if truths is not None and classifier is first:
                accuracy = [np.mean([r.labels[0] == t for r, t in zip(rows_, truths, strict=True)]) for rows_ in (a, b)]
                line += f", accuracy {accuracy[0]:.2%} (float16) vs {accuracy[1]:.2%} (float32)"
            print(line)

        if args.synthetic_rows <= 0:
            return
        synthetic_store(root / "big.zse", args.synthetic_rows, 512, encoder)
        weights = torch.nn.functional.normalize(torch.randn(512, args.classes), dim=0)
        classifier = zsclip.ZeroShotClassifier(weights, [f"c{i}" for i in range(args.classes)],
                                               [[f"c{i}"] for i in range(args.classes)], logit_scale=100.0)
        classifier.save(root / "big.zsc")
        # a fresh process, so its peak memory is the classification's alone
        child = subprocess.run([sys.executable, "-c", CLASSIFY_CHILD, str(root / "big.zse"), str(root / "big.zsc")],
                               capture_output=True, text=True, check=True)
        count, seconds, peak = child.stdout.split()
        print(f"(c) {count} x 512 store, {args.classes} classes, top-5:   {float(seconds):8.2f} s   peak RSS "
              f"{float(peak):.0f} MB (the store is {int(count) * 512 * 2 / 2**20:.0f} MB of float16)")


CLASSIFY_CHILD = """
import sys, time
import zsclip
from zsclip.store import EmbeddingStore
from zsclip.tasks.stored import classify_store
store, classifier = EmbeddingStore.open(sys.argv[1]), zsclip.ZeroShotClassifier.load(sys.argv[2])
start = time.perf_counter()
count = sum(1 for _ in classify_store(store, classifier, top_k=5))
seconds = time.perf_counter() - start
# VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(count, seconds, peak / 1024)
"""

if __name__ == "__main__":
    main()
