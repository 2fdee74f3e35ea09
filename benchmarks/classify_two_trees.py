"""`zsclip classify` from two source trees, alternately, on the same images: does a change slow the command?

    git worktree add --detach /tmp/before f2219f0     # the explain branch's base
    git worktree add --detach /tmp/after 21180be      # its tip
    python benchmarks/classify_two_trees.py /tmp/before/src /tmp/after/src --rounds 5

Renders 6 demo-world images per class of the 48 (288 PNGs, 224 px), then runs
``python -m zsclip classify IMAGES --model demo --labels-file LABELS -j 0 -o OUT.csv`` with each tree first on
``PYTHONPATH``, alternating which goes first each round, and reports every wall time, the best and the median
per tree, and whether both wrote the same rows (path, label, score columns).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="the first tree's src folder")
    parser.add_argument("after", help="the second tree's src folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=6)
    args = parser.parse_args()

    from zsclip import shapes

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        shapes.write_dataset(root, args.per_class, 77, "all", "both", size=224)
        images, labels = root / "images", root / "labels.txt"
        times: dict[str, list[float]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
            for name in order:
                env = {**os.environ, "PYTHONPATH": getattr(args, name)}
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "zsclip", "classify", str(images), "--model", "demo",
                                "--labels-file", str(labels), "-j", "0", "-o", str(root / f"{name}.csv")],
                               env=env, check=True, stderr=subprocess.DEVNULL)
                times[name].append(round(time.perf_counter() - started, 2))
                print(f"round {round_ + 1} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
        rows = {name: [row[:3] for row in csv.reader((root / f"{name}.csv").open(encoding="utf-8"))]
                for name in times}
    figures = {"images": sum(1 for _ in rows["before"]) - 1, "seconds": times,
               "best": {name: min(values) for name, values in times.items()},
               "median": {name: statistics.median(values) for name, values in times.items()},
               "after_over_before_best": round(min(times["after"]) / min(times["before"]), 3),
               "same_rows": rows["before"] == rows["after"], "load_average": os.getloadavg()}
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
