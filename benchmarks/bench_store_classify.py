"""Classifying a store against a plain matmul of the same shape, in one run (issue 37: within 1.5x of it).

    python benchmarks/bench_store_classify.py                      # 1,000,000 rows x 512, 1,000 classes, top-5
    python benchmarks/bench_store_classify.py --rows 100000 --rounds 3

A synthetic store (unit vectors clustered like real embeddings, float16, 100,000-row shards written by the
store's own writer: ``zsclip.testing.stores.synthetic_store``) is classified with 1,000 random classes, and
each of these is timed, in turns, ``--rounds`` times (the best of each is reported):

- ``matmul``: the reference, one float32 BLAS matmul [rows, 512] x [512, 1,000] from memory, 65,536-row blocks;
- ``read``: reading and checking the store's rows alone (``EmbeddingStore.batches``: Parquet, float16 to
  float32, norms, paths);
- ``arrays``: ``zsclip.tasks.stored.classify_store_arrays``: read + logits + top-k + probabilities, as arrays;
- ``predictions``: ``classify_store``: the same, one ``Prediction`` per row (what the command's sinks write);
- ``cli``: ``zsclip classify STORE -c FILE -o out.csv -k 5`` (only with ``--cli``: it writes every row).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cli", action="store_true", help="also time the zsclip command writing a CSV")
    parser.add_argument("--workdir", default=None, help="keep the store here (reused when it exists)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    from zsclip import ZeroShotClassifier
    from zsclip.store import EmbeddingStore
    from zsclip.tasks.stored import classify_store, classify_store_arrays
    from zsclip.testing.stores import synthetic_classifier, synthetic_store

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.workdir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        folder = work / f"store-{args.rows}x{args.dim}.zse"
        if not (folder / "zsclip-store.json").exists():
            started = time.perf_counter()
            synthetic_store(folder, args.rows, args.dim)
            print(f"wrote {args.rows:,} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        classifier_file = synthetic_classifier(work / "classes.zsc", args.dim, args.classes)
        classifier = ZeroShotClassifier.load(classifier_file)
        weights = classifier.weights_array
        rng = np.random.default_rng(2)
        matrix = rng.standard_normal((args.rows, args.dim), dtype=np.float32)

        def matmul() -> None:
            for start in range(0, args.rows, 65_536):
                matrix[start:start + 65_536] @ weights

        def read() -> None:
            assert sum(len(batch.paths) for batch in EmbeddingStore.open(folder).batches()) == args.rows

        def arrays() -> None:
            answered = classify_store_arrays(EmbeddingStore.open(folder), classifier, top_k=args.top_k)
            assert sum(len(batch.paths) for batch in answered) == args.rows

        def predictions() -> None:
            assert sum(1 for _ in classify_store(EmbeddingStore.open(folder), classifier, top_k=args.top_k)) == \
                args.rows

        def cli() -> None:
            subprocess.run([sys.executable, "-m", "zsclip", "classify", str(folder), "-c", str(classifier_file),
                            "-k", str(args.top_k), "-o", str(work / "out.csv")], check=True,
                           stderr=subprocess.DEVNULL, env={**os.environ, "ZSCLIP_NO_PROGRESS": "1"})

        runs = {"matmul": matmul, "read": read, "arrays": arrays, "predictions": predictions}
        if args.cli:
            runs["cli"] = cli
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
                print(f"{name}: {time.perf_counter() - started:.2f} s", file=sys.stderr, flush=True)
    figures = {"rows": args.rows, "dim": args.dim, "classes": args.classes, "top_k": args.top_k,
               "seconds": {name: round(seconds, 2) for name, seconds in best.items()},
               "vs_matmul": {name: round(seconds / best["matmul"], 2) for name, seconds in best.items()},
               "load_average": os.getloadavg()}
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
