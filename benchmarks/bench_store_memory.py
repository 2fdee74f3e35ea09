"""Peak memory of opening, classifying and searching an embedding store, by its number of rows (issue 37).

Synthetic stores (512-d float16 unit vectors clustered like real embeddings, real-looking paths) are
written through the store's own writer (``zsclip.testing.stores``), then each step runs in its own
process, which reports its peak RSS as the kernel counts it (``VmHWM`` of /proc/self/status at exit; the
rusage of a child would include its parent's memory at the fork):

    open      EmbeddingStore.open + len(store) (computes the view)
    classify  `zsclip classify STORE -c classifier.zsc -o out.csv` (1,000 classes, top-3, every row written)
    search    zsclip.tasks.stored.search_store(store, query, top_k=10) (a query vector: no model)

``--src`` runs the steps on another checkout's code (e.g. the main branch, for "before"); the stores
are the same files (the format is unchanged; older code ignores the ``new_paths`` marks).
``--churn F`` also builds a second store per size in which a fraction F of the paths were embedded
again (a shard of newer rows, as `zsclip embed` writes after files changed) and 1% deleted, and
measures opening it, `zsclip compact` on it (peak RSS, seconds, rows and bytes on disk before and
after), and opening it again after.

    python benchmarks/bench_store_memory.py --rows 100000 1000000 --workdir /tmp/stores
    python benchmarks/bench_store_memory.py --rows 100000 1000000 --workdir /tmp/stores --src /work/main/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STEPS = {
    "open": "from zsclip.store import EmbeddingStore\n"
            "store = EmbeddingStore.open(STORE)\nprint(len(store))",
    "search": "import torch\nfrom zsclip.store import EmbeddingStore\nfrom zsclip.tasks.stored import search_store\n"
              "store = EmbeddingStore.open(STORE)\nquery = torch.randn(store.embed_dim)\n"
              "query = query / query.norm()\nprint(len(search_store(store, query, top_k=10)))",
    "compact": "import sys\nfrom zsclip.cli import main\nsys.argv = ['zsclip', 'compact', STORE]\n"
               "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code",
    "classify": "import sys\nfrom zsclip.cli import main\n"
                "sys.argv = ['zsclip', 'classify', STORE, '-c', CLASSIFIER, '-o', OUTPUT]\n"
                "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code",
}


def measure(step: str, store: Path, classifier: Path, src: str | None) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one step in a fresh process."""
    code = (f"STORE, CLASSIFIER, OUTPUT = {str(store)!r}, {str(classifier)!r}, {str(store) + '.out.csv'!r}\n"
            + STEPS[step] + "\nimport sys\nprint('PEAK', next(line.split()[1] for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')), file=sys.stderr)")
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode:
        raise SystemExit(f"{step} on {store} failed ({done.returncode}): {done.stderr[-2000:]}")
    peak_kb = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK "))
    return peak_kb / 1024, time.perf_counter() - started


def build(folder: Path, rows: int, shard_rows: int, dim: int = 512) -> None:
    """The store, written by a child process (so this one stays small)."""
    if (folder / "zsclip-store.json").exists():
        return
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys\nfrom zsclip.testing.stores import synthetic_store\n"
                    f"synthetic_store({str(folder)!r}, {rows}, {dim}, shard_rows={shard_rows})"], check=True)
    print(f"# built {folder} ({rows:,} rows) in {time.perf_counter() - started:.0f} s", file=sys.stderr)


CHURN = """
import numpy as np
from zsclip.store import EmbeddingStore
from zsclip.testing.stores import synthetic_rows, synthetic_store
store = synthetic_store(FOLDER, ROWS, 512, shard_rows=SHARD_ROWS)
rng = np.random.default_rng(7)
changed = np.sort(rng.choice(ROWS, int(ROWS * CHURN), replace=False))
gone = np.sort(rng.choice(ROWS, ROWS // 100, replace=False))
with store.writing():
    store.facts()  # as embed does: the shards below replace paths of the view, so they are not marked
    for start in range(0, len(changed), SHARD_ROWS):
        part = changed[start:start + SHARD_ROWS]
        rows = [synthetic_rows(int(n), 1)[0] for n in part]
        vectors = rng.standard_normal((len(part), 512)).astype(np.float32)
        store.append(rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    rows = [dict(synthetic_rows(int(n), 1)[0], deleted=True) for n in gone]
    store.append(rows, [None] * len(rows))
"""


def churned(folder: Path, rows: int, shard_rows: int, churn: float) -> None:
    """A store of ``rows`` in which ``churn`` of the paths have a newer row and 1% are deleted."""
    if (folder / "zsclip-store.json").exists():
        return
    code = f"FOLDER, ROWS, SHARD_ROWS, CHURN = {str(folder)!r}, {rows}, {shard_rows}, {churn}\n" + CHURN
    subprocess.run([sys.executable, "-c", code], check=True)


def on_disk(folder: Path) -> tuple[int, int]:
    """(rows, bytes) of the shards the manifest lists, as pyarrow reads them."""
    import pyarrow.parquet as pq

    shards = json.loads((folder / "zsclip-store.json").read_text())["shards"]
    return (sum(pq.ParquetFile(folder / shard["file"]).metadata.num_rows for shard in shards),
            sum((folder / shard["file"]).stat().st_size for shard in shards))


def measure_compaction(rows: int, args) -> list[dict]:
    folder = args.workdir / f"churned-{rows}.zse"
    churned(folder, rows, args.shard_rows, args.churn)
    out = []
    peak, seconds = measure("open", folder, Path("-"), args.src)
    out.append({"rows": rows, "step": "open churned", "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1)})
    disk_rows, disk_bytes = on_disk(folder)
    peak, seconds = measure("compact", folder, Path("-"), args.src)
    after_rows, after_bytes = on_disk(folder)
    out.append({"rows": rows, "step": "compact", "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1),
                "rows_on_disk": [disk_rows, after_rows],
                "mb_on_disk": [round(disk_bytes / 1e6), round(after_bytes / 1e6)]})
    peak, seconds = measure("open", folder, Path("-"), args.src)
    out.append({"rows": rows, "step": "open compacted", "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zsclip-store-memory"))
    parser.add_argument("--src", default=None, help="PYTHONPATH of the code to measure (default: this checkout's)")
    parser.add_argument("--steps", nargs="+", default=["open", "search", "classify"], choices=list(STEPS))
    parser.add_argument("--churn", type=float, default=0.0, help="also measure compaction (see above)")
    parser.add_argument("--dim", type=int, default=512,
                        help="embedding width: what grows with rows is the view and the paths, not the width, so a "
                             "narrow store measures 10M rows in a fraction of the disk and time (say so when quoting)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    classifier = args.workdir / f"classifier-{args.dim}x1000.zsc"
    if not classifier.exists():
        subprocess.run([sys.executable, "-c", "from zsclip.testing.stores import synthetic_classifier\n"
                        f"synthetic_classifier({str(classifier)!r}, {args.dim}, 1000)"], check=True)
    results = []
    for rows in args.rows:
        store = args.workdir / (f"rows-{rows}.zse" if args.dim == 512 else f"rows-{rows}-d{args.dim}.zse")
        build(store, rows, args.shard_rows, args.dim)
        for step in args.steps:
            peak, seconds = measure(step, store, classifier, args.src)
            results.append({"rows": rows, "dim": args.dim, "step": step, "peak_rss_mb": round(peak, 1),
                            "seconds": round(seconds, 1), "code": args.src or "this checkout"})
            print(json.dumps(results[-1]), flush=True)
        if args.churn:
            for result in measure_compaction(rows, args):
                print(json.dumps(result), flush=True)
    by_step: dict[str, list] = {}
    for result in results:
        by_step.setdefault(result["step"], []).append(result)
    for step, rows in by_step.items():
        if len(rows) > 1:
            first, last = rows[0], rows[-1]
            growth = (last["peak_rss_mb"] - first["peak_rss_mb"]) / ((last["rows"] - first["rows"]) / 1e6)
            print(f"# {step}: {growth:+.1f} MB of peak RSS per million rows", file=sys.stderr)


if __name__ == "__main__":
    main()
