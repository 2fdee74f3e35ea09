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
``--compacted`` also measures each store after rewriting half its rows as replaced rows and running
`zsclip compact` (not done by default: it doubles the disk used).

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


def build(folder: Path, rows: int, shard_rows: int) -> None:
    """The store, written by a child process (so this one stays small)."""
    if (folder / "zsclip-store.json").exists():
        return
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys\nfrom zsclip.testing.stores import synthetic_store\n"
                    f"synthetic_store({str(folder)!r}, {rows}, 512, shard_rows={shard_rows})"], check=True)
    print(f"# built {folder} ({rows:,} rows) in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zsclip-store-memory"))
    parser.add_argument("--src", default=None, help="PYTHONPATH of the code to measure (default: this checkout's)")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    classifier = args.workdir / "classifier-512x1000.zsc"
    if not classifier.exists():
        subprocess.run([sys.executable, "-c", "from zsclip.testing.stores import synthetic_classifier\n"
                        f"synthetic_classifier({str(classifier)!r}, 512, 1000)"], check=True)
    results = []
    for rows in args.rows:
        store = args.workdir / f"rows-{rows}.zse"
        build(store, rows, args.shard_rows)
        for step in args.steps:
            peak, seconds = measure(step, store, classifier, args.src)
            results.append({"rows": rows, "step": step, "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1),
                            "code": args.src or "this checkout"})
            print(json.dumps(results[-1]), flush=True)
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
