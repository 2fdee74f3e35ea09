"""The store's ANN index against exact search, and store classification against a plain matmul, same run.

    python benchmarks/bench_index.py                         # 1M rows x 512, 4,000 centres (a few minutes)
    python benchmarks/bench_index.py --rows 200000 --classify-rows 200000

(a) --rows synthetic unit vectors, clustered like real embeddings (a Gaussian mixture around --centres
    random centres, normalised; not uniform noise), float16 as a store keeps them; held-out queries from the
    same mixture. The index is built with the code ``zsclip index`` runs (zsclip.store.index: FAISS IVF,
    8-bit codes, ~sqrt(rows) lists, candidates rescored exactly with the stored float16 vectors), and
    measured against exact search (a float32 BLAS matmul over all rows + top-k): recall@10, queries/s (a
    batch of queries, and one query at a time), build time and rate, bytes on disk, peak RSS.
(b) 10M rows: extrapolated from (a)'s build rate and scan cost; the measured 10M figures (a real store, the
    real build and search) are benchmarks/bench_index_store.py's (docs/round4-index.md).
(c) --classify-rows x 512 float16 store rows x 1,000 classes: zsclip's store classify path (classify_store,
    every prediction consumed) against one plain float32 BLAS matmul of the same shape.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from zsclip.store.index import auto_lists, auto_probes, candidates, rescored, train


def mixture(rng, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    """``n`` unit vectors: a random centre each plus Gaussian noise of norm ~``spread``, normalised."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, len(centres), m)]
        x = x + spread * rng.standard_normal((m, centres.shape[1]), dtype=np.float32) / np.sqrt(centres.shape[1])
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top(stored: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The exact top-k rows per query: float32 matmul in chunks of rows, running top-k."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(stored), 262_144):
        chunk = np.asarray(stored[start:start + 262_144], dtype=np.float32)
        s = queries @ chunk.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def index_section(args) -> dict:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.centres, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    stored = mixture(rng, centres, args.rows, args.spread).astype(np.float16)
    queries = mixture(rng, centres, args.queries, args.spread)
    out: dict = {"rows": args.rows, "dim": args.dim, "centres": args.centres, "queries": args.queries}

    start = time.perf_counter()
    truth = exact_top(stored, queries, 10)
    exact_s = time.perf_counter() - start
    out["exact_queries_per_s"] = round(args.queries / exact_s, 1)

    lists = auto_lists(args.rows) if args.lists is None else args.lists
    probes = auto_probes(lists) if args.probes is None else args.probes
    start = time.perf_counter()
    index = train(stored, lists)  # float16 -> float32 in chunks inside
    build_s = time.perf_counter() - start
    out.update(lists=lists, probes=probes, build_s=round(build_s, 1), build_rows_per_s=round(args.rows / build_s))

    import faiss

    with tempfile.TemporaryDirectory() as folder:
        faiss.write_index(index, str(Path(folder) / "part.faiss"))
        np.save(Path(folder) / "vectors.npy", stored)
        np.save(Path(folder) / "ids.npy", np.arange(args.rows, dtype=np.int64))
        sizes = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
    out["index_mb"] = {name: round(size / 1e6, 1) for name, size in sizes.items()}

    count = max(10 * 4, 100)  # what StoreIndex asks for k=10: max(k * OVERSAMPLE, MIN_CANDIDATES)
    start = time.perf_counter()
    found = candidates(index, queries, count, probes)
    positions, _ = rescored(found, stored, queries, 10)
    batch_s = time.perf_counter() - start
    single = min(100, args.queries)
    start = time.perf_counter()
    for i in range(single):
        rescored(candidates(index, queries[i:i + 1], count, probes), stored, queries[i:i + 1], 10)
    single_s = time.perf_counter() - start
    recall = np.mean([len(set(p) & set(t)) / 10 for p, t in zip(positions.tolist(), truth.tolist(), strict=True)])
    raw = np.mean([len(set(f[:10]) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist(), strict=True)])
    out.update(recall_at_10=round(float(recall), 4), recall_at_10_codes_only=round(float(raw), 4),
               index_queries_per_s=round(args.queries / batch_s, 1),
               index_single_query_ms=round(1000 * single_s / single, 2),
               speedup_vs_exact=round((args.queries / batch_s) / (args.queries / exact_s), 1),
               peak_rss_mb=round(peak_rss_mb()))
    out["sweep"] = []
    for swept in args.sweep:  # the same index, other --probes: recall and queries/s
        start = time.perf_counter()
        positions, _ = rescored(candidates(index, queries, count, swept), stored, queries, 10)
        seconds = time.perf_counter() - start
        hits = np.mean([len(set(p) & set(t)) / 10 for p, t in zip(positions.tolist(), truth.tolist(), strict=True)])
        out["sweep"].append({"probes": swept, "recall_at_10": round(float(hits), 4),
                             "queries_per_s": round(args.queries / seconds, 1),
                             "speedup_vs_exact": round(exact_s / seconds, 1)})
    # 10M estimate: build is linear in rows (k-means on a fixed sample + assignment); a query scans
    # probes/lists of the rows (lists ~ sqrt(rows): sqrt(10) x more lists, the same share with probes = lists/32)
    out["estimate_10m"] = {"build_s": round(build_s * 10),
                           "exact_queries_per_s": round(out["exact_queries_per_s"] / 10, 1),
                           "bytes_gb": round(sum(sizes.values()) * 10 / 1e9, 1),
                           "note": "extrapolated from this run, not measured"}
    return out


def classify_section(args) -> dict:
    import torch

    from zsclip import ZeroShotClassifier
    from zsclip.store import EmbeddingStore
    from zsclip.store.format import DTYPES, FORMAT, SINGLE_LABEL_VERSION, schema
    from zsclip.store.location import Location
    from zsclip.tasks.stored import classify_store

    rows, dim, classes = args.classify_rows, args.dim, 1000
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as folder:
        location = Location(Path(folder) / "bench.zse")
        location.mkdir()
        manifest = {"format": FORMAT, "version": SINGLE_LABEL_VERSION, "model": "synthetic", "embed_dim": dim,
                    "dtype": "float16", "precision": "fp32", "logit_scale": 100.0, "classnames": None, "shards": []}
        store = EmbeddingStore(location, manifest)
        store._write_manifest()
        per = 250_000
        for start in range(0, rows, per):
            n = min(per, rows - start)
            vectors = rng.standard_normal((n, dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            import pyarrow as pa

            names = pa.array([f"/synthetic/{i}.jpg" for i in range(start, start + n)])
            nulls = pa.nulls(n)
            columns = {f.name: nulls.cast(f.type) for f in schema(dim, "float16")}
            columns.update(path=names, resolved=names, deleted=pa.array(np.zeros(n, dtype=bool)),
                           embedding=pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float16).reshape(-1),
                                                                                type=DTYPES["float16"]), dim))
            name = f"shard-{start // per:05d}-bench.parquet"
            location.write_table(name, pa.table(columns, schema=schema(dim, "float16")), compression="zstd",
                                 row_group_size=4096)
            store.manifest["shards"].append({"file": name, "rows": n})
        store._write_manifest()
        store = EmbeddingStore.open(location.local)
        weights = torch.nn.functional.normalize(torch.randn(dim, classes), dim=0)
        names = [f"c{i}" for i in range(classes)]
        classifier = ZeroShotClassifier(weights, names, [[name] for name in names], 100.0, None,
                                        {"model": "synthetic", "templates": ["{}"]})
        start = time.perf_counter()
        count = sum(1 for _ in classify_store(store, classifier, top_k=5))
        zsclip_s = time.perf_counter() - start
        assert count == rows
        matrix = np.ascontiguousarray(rng.standard_normal((rows, dim), dtype=np.float32))
        w = weights.numpy()
        start = time.perf_counter()
        for s in range(0, rows, 65536):
            matrix[s:s + 65536] @ w
        blas_s = time.perf_counter() - start
    return {"rows": rows, "classes": classes, "zsclip_store_classify_s": round(zsclip_s, 1),
            "blas_matmul_s": round(blas_s, 1), "ratio": round(zsclip_s / blas_s, 2),
            "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--centres", type=int, default=4000)
    parser.add_argument("--spread", type=float, default=0.6, help="noise norm around a centre (0.6: cos ~0.86)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--lists", type=int, default=None)
    parser.add_argument("--probes", type=int, default=None)
    parser.add_argument("--classify-rows", type=int, default=1_000_000, help="0 skips (c)")
    parser.add_argument("--sweep", type=lambda text: [int(p) for p in text.split(",") if p], default=[],
                        help="also measure these --probes values on the same index, e.g. 4,8,16")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    figures = {"index": index_section(args)}
    print(json.dumps(figures, indent=1), flush=True)
    if args.classify_rows:
        figures["classify"] = classify_section(args)
        print(json.dumps(figures["classify"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
