"""How zsclip's ANN library was chosen: usearch (HNSW) against FAISS (HNSW and IVF), same data, same rescoring.

    python benchmarks/index_libraries.py faiss            # FAISS: HNSW32+SQ8, HNSW32 flat, IVF1024+SQ8
    python benchmarks/index_libraries.py usearch          # usearch: HNSW i8 and f16 (pip install usearch)

One library per process: usearch and faiss-cpu crash (SIGSEGV) when both are loaded into one process. Data:
200,000 unit vectors x 512 around 2,000 random centres (noise norm 0.6), 500 held-out queries; exact top-10
by a float32 matmul; each index's 100 candidates rescored with the float16 vectors (as zsclip does).
"""

from __future__ import annotations

import sys
import time

import numpy as np

N, D, C, Q, K = 200_000, 512, 2000, 500, 100


def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((C, D)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def sample(n):
        x = centres[rng.integers(0, C, n)] + 0.6 * rng.standard_normal((n, D)).astype(np.float32) / np.sqrt(D)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return np.concatenate([sample(50_000) for _ in range(N // 50_000)]), sample(Q)


def main() -> None:
    library = sys.argv[1] if len(sys.argv) > 1 else "faiss"
    stored, queries = data()
    start = time.perf_counter()
    exact = np.argsort(-(queries @ stored.T), axis=1)[:, :10]
    print(f"exact: {Q / (time.perf_counter() - start):.0f} queries/s")
    half = stored.astype(np.float16)

    def recall(found):
        hits = []
        for i, rows in enumerate(found):
            rows = rows[rows >= 0]
            top = rows[np.argsort(-(half[rows].astype(np.float32) @ queries[i]))[:10]]
            hits.append(len(set(top) & set(exact[i])) / 10)
        return np.mean(hits)

    def report(name, build_s, search_s, found, size):
        print(f"{library} {name}: build {build_s:.1f} s ({N / build_s:.0f} rows/s), {Q / search_s:.0f} queries/s, "
              f"recall@10 rescored {recall(found):.3f}, {size / 1e6:.0f} MB")

    if library == "usearch":
        from usearch.index import Index

        for dtype in ("i8", "f16"):
            index = Index(ndim=D, metric="cos", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=64)
            start = time.perf_counter()
            index.add(np.arange(N), stored, threads=2)
            build_s = time.perf_counter() - start
            start = time.perf_counter()
            found = index.search(queries, K, threads=2).keys
            report(f"HNSW {dtype} M=16", build_s, time.perf_counter() - start, found, index.memory_usage)
        return
    import faiss

    faiss.omp_set_num_threads(2)
    for name in ("HNSW32,SQ8", "HNSW32,Flat", "IVF1024,SQ8"):
        index = faiss.index_factory(D, name, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        if "HNSW" in name:
            faiss.downcast_index(index).hnsw.efConstruction = 80
        index.train(stored[:100_000] if "IVF" in name else stored)
        index.add(stored)
        build_s = time.perf_counter() - start
        if "HNSW" in name:
            faiss.downcast_index(index).hnsw.efSearch = K
        else:
            faiss.extract_index_ivf(index).nprobe = 16
        start = time.perf_counter()
        _, found = index.search(queries, K)
        report(name, build_s, time.perf_counter() - start, found, faiss.serialize_index(index).nbytes)


if __name__ == "__main__":
    main()
