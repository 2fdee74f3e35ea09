"""Classifying a store against a plain matmul of the same shape, in one run (issue 37: within 1.5x of it).

    python benchmarks/bench_store_classify.py                      # 1,000,000 rows x 512, 1,000 classes, top-5
    python benchmarks/bench_store_classify.py --rows 100000 --rounds 3
    python benchmarks/bench_store_classify.py --layout lists       # a store made before packed embeddings
    python benchmarks/bench_store_classify.py --dtype float32       # embedded with --dtype float32
    PYTHONPATH=OLD/src python benchmarks/bench_store_classify.py --steps read,predictions   # an older tree

A synthetic store (unit vectors clustered like real embeddings, float16, 100,000-row shards written by the
store's own writer: ``zsclip.testing.stores.synthetic_store``; packed embeddings, as a new store has them, or
lists, as a store made before version 3 keeps them) is classified with 1,000 random classes, and
each of these is timed, in turns, ``--rounds`` times (the best of each is reported):

- ``matmul``: the reference, one float32 BLAS matmul [rows, 512] x [512, 1,000] from memory, 65,536-row blocks;
- ``read``: reading and checking the store's rows alone (``EmbeddingStore.batches``: Parquet, float16 to
  float32, norms, paths);
- ``arrays``: ``zsclip.tasks.stored.classify_store_arrays``: read + logits + top-k + probabilities, as arrays;
- ``predictions``: ``classify_store``: the same, one ``Prediction`` per row (what the command's sinks write);
- ``cli``: ``zsclip classify STORE -c FILE -o out.csv -k 5`` (only with ``--cli``: it writes every row).

The store steps run in a child process each (its peak RSS is the step's own; the reference matrix lives in the
parent); ``--store`` classifies an existing store (e.g. the 10 M rows of bench_index_store.py).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def step(name: str, folder: Path, classifier_file: Path, top_k: int, rows: int) -> dict:
    """One timed step in this process (a child of the run): seconds and this process's peak RSS."""
    from zsclip import ZeroShotClassifier
    from zsclip.store import EmbeddingStore
    from zsclip.tasks.stored import classify_store

    classifier = ZeroShotClassifier.load(classifier_file)
    store = EmbeddingStore.open(folder)
    started = time.perf_counter()
    if name not in ("read", "arrays", "predictions"):
        raise SystemExit(f"unknown step {name!r}: read, arrays or predictions")
    if name == "read":
        count = sum(len(batch.paths) for batch in store.batches())
    elif name == "arrays":
        from zsclip.tasks.stored import classify_store_arrays

        count = sum(len(batch.paths) for batch in classify_store_arrays(store, classifier, top_k=top_k))
    else:
        count = sum(1 for _ in classify_store(store, classifier, top_k=top_k))
    seconds = time.perf_counter() - started
    assert count == rows, (count, rows)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS as the kernel counts it (VmHWM: reset by exec, unlike getrusage's ru_maxrss, which
    a child started by fork + exec inherits from the parent's reference matrix)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--layout", choices=("packed", "lists"), default="packed",
                        help="packed: a new store's embedding column; lists: a store made before format 3")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cli", action="store_true", help="also time the zsclip command writing a CSV")
    parser.add_argument("--workdir", default=None, help="keep the store here (reused when it exists)")
    parser.add_argument("--store", default=None, help="classify this existing store (its rows and width) instead")
    parser.add_argument("--matmul-rows", type=int, default=1_000_000,
                        help="the reference matmul's matrix in memory (float32); more rows are timed as that "
                             "many blocks again (BLAS time is linear in rows)")
    parser.add_argument("--steps", default="read,arrays,predictions",
                        help="the store steps to time (an older tree has no arrays: read,predictions)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # a child's one step
    args = parser.parse_args()

    from zsclip.store import EmbeddingStore
    from zsclip.testing.stores import synthetic_classifier, synthetic_store

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.workdir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        name = f"store-{args.rows}x{args.dim}-{args.dtype}-{args.layout}.zse"
        folder = Path(args.store) if args.store else work / name
        if args.step:
            print(json.dumps(step(args.step, folder, work / "classes.zsc", args.top_k, args.rows)))
            return
        if not (folder / "zsclip-store.json").exists():
            started = time.perf_counter()
            layout = {"packed": args.layout == "packed"}  # an older tree's writer has lists only
            if "packed" not in inspect.signature(synthetic_store).parameters:
                layout = {}
            synthetic_store(folder, args.rows, args.dim, dtype=args.dtype, **layout)
            print(f"wrote {args.rows:,} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        opened = EmbeddingStore.open(folder)
        rows, dim = len(opened), opened.embed_dim
        classifier_file = synthetic_classifier(work / "classes.zsc", dim, args.classes)
        from zsclip import ZeroShotClassifier

        weights = ZeroShotClassifier.load(classifier_file).weights_array
        in_memory = min(rows, args.matmul_rows)
        matrix = np.random.default_rng(2).standard_normal((in_memory, dim), dtype=np.float32)

        def matmul() -> dict:
            started, done = time.perf_counter(), 0
            while done < rows:
                for start in range(0, min(in_memory, rows - done), 65_536):
                    matrix[start:start + min(65_536, rows - done - start)] @ weights
                done += in_memory
            return {"seconds": time.perf_counter() - started}

        def child(name: str) -> dict:
            command = [sys.executable, __file__, "--step", name, "--rows", str(rows), "--top-k", str(args.top_k),
                       "--workdir", str(work), "--store", str(folder)]
            return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)

        def cli() -> dict:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "zsclip", "classify", str(folder), "-c", str(classifier_file),
                            "-k", str(args.top_k), "-o", str(work / "out.csv")], check=True,
                           stderr=subprocess.DEVNULL)
            return {"seconds": time.perf_counter() - started}

        runs = {"matmul": matmul, **{name: (lambda name=name: child(name)) for name in args.steps.split(",")}}
        if args.cli:
            runs["cli"] = cli
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for name, run in runs.items():
                result = run()
                print(f"{name}: {result['seconds']:.2f} s", file=sys.stderr, flush=True)
                if name not in best or result["seconds"] < best[name]["seconds"]:
                    best[name] = result
    figures = {"rows": rows, "dim": dim, "classes": args.classes, "top_k": args.top_k, "dtype": args.dtype,
               "layout": args.layout,
               "matmul_rows_in_memory": in_memory,
               "seconds": {name: round(result["seconds"], 2) for name, result in best.items()},
               "vs_matmul": {name: round(result["seconds"] / best["matmul"]["seconds"], 2)
                             for name, result in best.items()},
               "peak_rss_mb": {name: round(result["peak_rss_mb"]) for name, result in best.items()
                               if "peak_rss_mb" in result},
               "load_average": os.getloadavg()}
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
