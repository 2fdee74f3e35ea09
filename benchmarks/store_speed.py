"""The embedding store: re-classifying stored embeddings vs encoding the images again, same run.

    python benchmarks/store_speed.py                      # 1,000 JPEGs, ViT-B-32 random weights
    python benchmarks/store_speed.py --images 200 --synthetic-rows 1000000

(a) the open_clip loop (the seed example) classifying N JPEGs 640x480;
(b) `zsclip embed` of the same images once, then `classify` of the store with a new label set:
    the time of that re-classification and its ratio to (a); top-1 agreement with (a);
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--synthetic-rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    encoder = zsclip.load_model("ViT-B-32", pretrained="random", device="cpu")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        (root / "photos").mkdir()
        paths = make_photos(root / "photos", args.images, (640, 480))
        first = zsclip.ZeroShotClassifier.build(encoder, LABELS, "photo", precision="fp32", cache=False)
        start = time.perf_counter()
        reference = reference_loop([str(p) for p in paths], encoder, first)
        loop_seconds = time.perf_counter() - start
        print(f"(a) open_clip loop, {len(paths)} JPEGs 640x480:           {loop_seconds:8.2f} s")

        start = time.perf_counter()
        store = EmbeddingStore.create_or_open(root / "photos.zse", encoder, precision="fp32", dtype="float16")
        embed(store, list(expand_inputs([str(root / "photos")])), encoder, zsclip.RunOptions(precision="fp32"))
        print(f"(b) zsclip embed, once:                          {time.perf_counter() - start:8.2f} s")
        stored = [LABELS.index(p.labels[0]) for p in classify_store(store, first, top_k=1)]
        agreement = np.mean(np.array(stored) == np.array(reference))
        new = zsclip.ZeroShotClassifier.build(encoder, NEW_LABELS, "photo", precision="fp32", cache=False)
        start = time.perf_counter()
        rows = list(classify_store(EmbeddingStore.open(root / "photos.zse"), new, top_k=3))
        seconds = time.perf_counter() - start
        print(f"    classify the store with new labels:          {seconds:8.4f} s   "
              f"ratio {loop_seconds / seconds:7.0f}x   ({len(rows)} rows; float16 store top-1 agreement with (a): "
              f"{agreement:.2%})")

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
