"""The ANN index of a real store, measured end to end at any size (issue 37: 10 M x 512 rows, measured).

    python benchmarks/bench_index_store.py --rows 1000000 --workdir /tmp/ix
    nice -n 10 python benchmarks/bench_index_store.py --rows 10000000 --workdir /tmp/ix --json /tmp/ix/10m.json

``bench_index.py`` measures the index's arrays in one process; this measures what users run, each step in a
process of its own: its peak RSS is the kernel's ``VmHWM`` of that process; sampled every 0.2 s, also the peaks
of its anonymous memory and of its memory-mapped file pages (reclaimable page cache), which VmHWM adds together:

write   a store of --rows float16 unit vectors x --dim, clustered like real embeddings (``bench_index.mixture``:
        a Gaussian mixture around --centres random centres), --shard-rows per shard, written through
        ``EmbeddingStore.append`` under the write lock after ``facts`` as ``zsclip embed`` writes (so the shards
        are marked ``new_paths``); paths are synthetic strings. Each shard's vectors come from a seed of their
        own: a store already in --workdir is reused, and a partly written one is completed.
build   ``zsclip.tasks.indexing.index_store`` (what ``zsclip index STORE`` runs: parts of 1 M rows, FAISS IVF
        ~sqrt(rows) lists with 8-bit codes, plus the float16 vectors for rescoring; then its own recall check
        on 100 sampled rows). An index already built is reused unless --rebuild.
search  --queries held-out queries from the same mixture, through the index: all at once
        (``StoreIndex.search``, the batched path), then --single of them one at a time through
        ``zsclip.tasks.stored.search_store`` (what ``zsclip search`` and the service run per query: the index
        loaded once and cached on the store handle, rows named by their paths).
exact   the same queries scored against every row, in float16 blocks converted to float32 one block at a
        time (the store is larger than memory in float32): (a) over the index's float16 vector files
        (memory-mapped .npy, 65,536 rows a block: the fastest exact scan we have, the reference for the
        ratio) and (b) over the store's shards as ``search --exact`` reads them (``shard_vectors``: Parquet
        decoded and checked, one shard at a time); then --single-exact queries one at a time through
        ``search_store(..., exact=True)``.

Recall@10 of the index against (a), queries/s of each, the ratios, build time, bytes on disk and the peak RSS
of each step are printed as JSON (and written to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def vmhwm_mb() -> float:
    """This process's peak RSS as the kernel counts it."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


class MemorySampler:
    """The peaks of this process's anonymous memory (``RssAnon``: what it allocated) and file-backed memory
    (``RssFile``: pages of memory-mapped files, which the kernel can drop and read again), sampled every 0.2 s.
    ``VmHWM`` counts both: a scan of memory-mapped vectors raises it by their size without allocating."""

    def __init__(self) -> None:
        import threading

        self.peaks = {"RssAnon:": 0, "RssFile:": 0}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        with open("/proc/self/status") as status:
            for line in status:
                key = line.split(maxsplit=1)[0]
                if key in self.peaks:
                    self.peaks[key] = max(self.peaks[key], int(line.split()[1]))

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.sample()

    def stop(self) -> dict:
        self.done.set()
        self.thread.join()
        self.sample()
        return {"peak_anon_mb": round(self.peaks["RssAnon:"] / 1024, 1),
                "peak_file_mb": round(self.peaks["RssFile:"] / 1024, 1)}


def centres(args) -> np.ndarray:
    rng = np.random.default_rng(args.seed)
    out = rng.standard_normal((args.centres, args.dim), dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def queries(args) -> np.ndarray:
    sys.path.insert(0, str(HERE))
    from bench_index import mixture

    return mixture(np.random.default_rng((args.seed, 2)), centres(args), args.queries, args.spread)


# --- the steps, each run in a child process (``--step NAME``) ----------------------------------------------
def step_write(args) -> dict:
    """Write (or complete) the store: shard s holds rows s*shard_rows... drawn with seed (seed, 1, s)."""
    sys.path.insert(0, str(HERE))
    from bench_index import mixture

    from zsclip.store import EmbeddingStore
    from zsclip.store.format import FORMAT, SINGLE_LABEL_VERSION
    from zsclip.store.location import Location
    from zsclip.testing.stores import FINGERPRINT, synthetic_rows

    folder = args.store
    if (folder / "zsclip-store.json").exists():
        store = EmbeddingStore.open(folder)
    else:
        location = Location(folder)
        location.mkdir()
        manifest = {"format": FORMAT, "version": SINGLE_LABEL_VERSION, "zsclip_version": "synthetic",
                    "model": "synthetic", "pretrained": None, "fingerprint": FINGERPRINT, "backend": "synthetic",
                    "embed_dim": args.dim, "precision": "fp32", "dtype": "float16", "logit_scale": 100.0,
                    "logit_bias": None, "preprocessing": None, "classnames": None, "shards": [],
                    "created": "synthetic"}
        store = EmbeddingStore(location, manifest)
        store._write_manifest()
    mix = centres(args)
    started = time.perf_counter()
    written = 0
    with store.writing():
        have = sum(int(shard["rows"]) for shard in store.manifest["shards"])
        if have % args.shard_rows and have < args.rows:
            raise SystemExit(f"{folder} holds {have} rows, not whole shards of {args.shard_rows}: delete it")
        if have < args.rows:
            store.facts()  # as embed does: the new shards add only new paths and are marked so
        for start in range(have, args.rows, args.shard_rows):
            count = min(args.shard_rows, args.rows - start)
            vectors = mixture(np.random.default_rng((args.seed, 1, start // args.shard_rows)), mix, count,
                              args.spread)
            store.append(synthetic_rows(start, count), vectors)
            written += count
            print(f"# wrote {start + count:,} rows ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
                  flush=True)
    return {"rows_written": written, "seconds": round(time.perf_counter() - started, 1)}


def step_build(args) -> dict:
    from dataclasses import asdict

    from zsclip.tasks.indexing import index_store

    started = time.perf_counter()
    report = index_store(args.store, rebuild=True, probes=args.probes, check=args.check)
    out = asdict(report)
    out["seconds_with_check"] = round(time.perf_counter() - started, 1)
    out["seconds"] = round(out["seconds"], 1)
    return out


def step_search(args) -> dict:
    import torch

    from zsclip.store import EmbeddingStore
    from zsclip.store.index import StoreIndex
    from zsclip.tasks.search import search_store

    asked = queries(args)
    store = EmbeddingStore.open(args.store)
    started = time.perf_counter()
    index = StoreIndex.cached(store)  # what the first search_store call loads and later calls reuse
    out: dict = {"open_index_s": round(time.perf_counter() - started, 1), "parts": len(index.parts),
                 "uncovered_shards": len(index.uncovered), "probes": [p.part.probes for p in index.parts][:1]}
    runs = []
    for _ in range(3):  # the first pass reads the rescoring vectors from disk, later ones from the page cache
        started = time.perf_counter()
        found = index.search(asked, 10)
        runs.append(time.perf_counter() - started)
    out["batch_s"] = [round(s, 2) for s in runs]
    out["batch_queries_per_s"] = [round(len(asked) / s, 1) for s in runs]
    answers = [[[shard, row] for shard, row, _ in hits] for hits in found]
    single = asked[:args.single]
    started = time.perf_counter()
    paths = [[path for path, _ in search_store(store, torch.from_numpy(q), top_k=10)] for q in single]
    out["single_ms"] = round(1000 * (time.perf_counter() - started) / max(1, len(single)), 1)
    sweep = []
    for probes in args.sweep:  # the same parts searched with other probes (what `zsclip index --probes` sets)
        for loaded in index.parts:
            loaded.part.probes = min(probes, loaded.part.lists) if loaded.part.lists else 0
        seconds = float("inf")
        for _ in range(2):  # the best of two: the machine is shared
            started = time.perf_counter()
            swept = index.search(asked, 10)
            seconds = min(seconds, time.perf_counter() - started)
        sweep.append({"probes": probes, "queries_per_s": round(len(asked) / seconds, 1),
                      "answers": [[[shard, row] for shard, row, _ in hits] for hits in swept]})
    out["sweep"] = sweep
    out["answers"], out["single_paths"] = answers, paths
    return out


def step_exact(args) -> dict:
    import torch

    from zsclip.store import EmbeddingStore
    from zsclip.store.index import exact_top, read_sidecar, shard_vectors
    from zsclip.tasks.search import search_store

    asked = queries(args)
    store = EmbeddingStore.open(args.store)
    out: dict = {}
    # (a) the index's float16 vector files, memory-mapped, 65,536 rows a block
    _, parts = read_sidecar(store)
    folder = Path(args.store)
    best: list[list[tuple[float, str, int]]] = [[] for _ in asked]
    started = time.perf_counter()
    for part in parts:
        vectors = np.load(folder / part.file(".vectors.npy"), mmap_mode="r", allow_pickle=False)
        ids = np.load(folder / part.file(".ids.npy"), mmap_mode="r", allow_pickle=False)
        for start in range(0, len(vectors), 65536):
            positions, scores = exact_top(vectors[start:start + 65536], asked, 10)
            at = np.asarray(ids[start:start + 65536])[positions]
            for i in range(len(asked)):
                best[i].extend((float(s), part.shards[int(a >> 32)], int(a & 0xFFFFFFFF))
                               for s, a in zip(scores[i], at[i], strict=True))
            best = [sorted(hits, reverse=True)[:10] for hits in best]
    seconds = time.perf_counter() - started
    out["vectors_s"] = round(seconds, 1)
    out["vectors_queries_per_s"] = round(len(asked) / seconds, 2)
    out["answers"] = [[[shard, row] for _, shard, row in hits] for hits in best]
    # (b) the store's shards as `search --exact` reads them
    if not args.skip_shard_exact:
        masks = store.view_masks()
        names = [shard["file"] for shard in store.manifest["shards"]]
        by_name = {names[i]: mask for i, mask in masks.items()}
        kept: list[list[tuple[float, str, int]]] = [[] for _ in asked]
        started = time.perf_counter()
        for shard, rows, vectors in shard_vectors(store, names, by_name):
            positions, scores = exact_top(vectors, asked, 10)
            for i in range(len(asked)):
                kept[i].extend((float(s), shard, int(rows[p])) for s, p in zip(scores[i], positions[i], strict=True))
            kept = [sorted(hits, reverse=True)[:10] for hits in kept]
        seconds = time.perf_counter() - started
        out["shards_s"] = round(seconds, 1)
        out["shards_queries_per_s"] = round(len(asked) / seconds, 2)
        out["shards_agree"] = sum(len({(s, r) for _, s, r in a} & {(s, r) for _, s, r in b})
                                  for a, b in zip(kept, best, strict=True)) / (10 * len(asked))
    single = asked[:args.single_exact]
    started = time.perf_counter()
    out["single_paths"] = [[path for path, _ in search_store(store, torch.from_numpy(q), top_k=10, exact=True)]
                           for q in single]
    out["single_ms"] = round(1000 * (time.perf_counter() - started) / max(1, len(single)), 1)
    return out


STEPS = {"write": step_write, "build": step_build, "search": step_search, "exact": step_exact}


def child(step: str, args) -> dict:
    """Run one step in a fresh process: (its JSON, with its peak RSS and wall seconds)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--step", step, *args.argv]
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"step {step} failed with exit status {done.returncode}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def recall(answers: list, truth: list) -> float:
    hits = sum(len({tuple(x) for x in a} & {tuple(x) for x in t}) for a, t in zip(answers, truth, strict=True))
    return round(hits / max(1, sum(len(t) for t in truth)), 4)


def path_recall(answers: list[list[str]], truth: list[list[str]]) -> float:
    """Recall@10 of one-at-a-time answers (paths) against the exact ones, over the queries both answered."""
    pairs = list(zip(answers, truth, strict=False))
    return round(sum(len(set(a) & set(t)) for a, t in pairs) / max(1, sum(len(t) for _, t in pairs)), 4)


def sizes(folder: Path) -> dict:
    shards = json.loads((folder / "zsclip-store.json").read_text())["shards"]
    store = sum((folder / shard["file"]).stat().st_size for shard in shards)
    index: dict[str, int] = {}
    for path in folder.iterdir():
        if path.name.startswith("index-"):
            suffix = path.name[len("index-") + 12:]
            index[suffix] = index.get(suffix, 0) + path.stat().st_size
    return {"store_gb": round(store / 1e9, 2), "index_gb": {k: round(v / 1e9, 2) for k, v in sorted(index.items())},
            "index_total_gb": round(sum(index.values()) / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--centres", type=int, default=4000)
    parser.add_argument("--spread", type=float, default=0.6, help="noise norm around a centre (bench_index's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--single", type=int, default=50, help="queries searched one at a time through the index")
    parser.add_argument("--single-exact", type=int, default=3, help="... and exactly (search_store exact=True)")
    parser.add_argument("--probes", type=int, default=None, help="zsclip index --probes (default: its own)")
    parser.add_argument("--check", type=int, default=100, help="zsclip index's own recall check (0: none)")
    parser.add_argument("--sweep", type=lambda text: [int(p) for p in text.split(",") if p], default=[],
                        help="also search the same index with these probes, e.g. 4,16")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--rebuild", action="store_true", help="build the index even when the store has one")
    parser.add_argument("--skip-shard-exact", action="store_true", help="skip exact (b) over the Parquet shards")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zsclip-index-store"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.store = args.workdir / f"mix-{args.rows}-d{args.dim}-c{args.centres}.zse"
    if args.step:
        sampler = MemorySampler()
        out = STEPS[args.step](args)
        out["peak_rss_mb"] = round(vmhwm_mb(), 1)
        out.update(sampler.stop())
        print(json.dumps(out), flush=True)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.argv = [a for a in sys.argv[1:]]
    figures: dict = {"rows": args.rows, "dim": args.dim, "centres": args.centres, "spread": args.spread,
                     "queries": args.queries, "store": str(args.store), "cores": os.cpu_count()}

    def save() -> None:
        print(json.dumps({k: v for k, v in figures.items()}, indent=1), file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1) + "\n")

    if "write" in args.steps:
        figures["write"] = child("write", args)
        save()
    built = any(path.name == "zsclip-index.json" for path in args.store.iterdir())
    if "build" in args.steps and (args.rebuild or not built):
        figures["build"] = child("build", args)
        save()
    figures["sizes"] = sizes(args.store)
    search = child("search", args) if "search" in args.steps else None
    exact = child("exact", args) if "exact" in args.steps else None
    if search is not None:
        figures["search"] = {k: v for k, v in search.items() if k not in ("answers", "single_paths", "sweep")}
    if exact is not None:
        figures["exact"] = {k: v for k, v in exact.items() if k not in ("answers", "single_paths")}
    if search is not None and exact is not None:
        best_index = max(search["batch_queries_per_s"])
        figures["result"] = {
            "recall_at_10": recall(search["answers"], exact["answers"]),
            "index_queries_per_s": best_index,
            "exact_queries_per_s": exact["vectors_queries_per_s"],
            "speedup_vs_exact": round(best_index / exact["vectors_queries_per_s"], 1),
            "speedup_vs_exact_shards": round(best_index / exact["shards_queries_per_s"], 1)
            if "shards_queries_per_s" in exact else None,
            "single_ms_index": search["single_ms"], "single_ms_exact": exact["single_ms"],
            "single_speedup": round(exact["single_ms"] / search["single_ms"], 1),
            "single_recall_at_10": path_recall(search["single_paths"], exact["single_paths"])
            if exact["single_paths"] else None,
        }
        figures["sweep"] = [{"probes": s["probes"], "queries_per_s": s["queries_per_s"],
                             "recall_at_10": recall(s["answers"], exact["answers"]),
                             "speedup_vs_exact": round(s["queries_per_s"] / exact["vectors_queries_per_s"], 1)}
                            for s in search["sweep"]]
    save()
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
