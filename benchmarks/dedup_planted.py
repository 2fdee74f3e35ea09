"""`zsclip dedup` on planted near-duplicates: recall (copies grouped with their original) and false groups
(groups holding two different originals), at several thresholds, with the bundled demo model.

    python benchmarks/dedup_planted.py

Originals: the 10 demo-world pictures in examples/ and scikit-learn's two sample photographs (china.jpg,
flower.jpg); every other original gets three copies: resized to half, re-compressed as JPEG quality 40,
cropped by 3% on each side (the copies tests/test_index.py plants).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import zsclip  # noqa: E402
from test_index import _planted  # noqa: E402
from zsclip.data.sources import expand_inputs  # noqa: E402
from zsclip.store import EmbeddingStore, embed  # noqa: E402
from zsclip.store.index import build  # noqa: E402
from zsclip.tasks.dedup import find_duplicates  # noqa: E402


def main() -> None:
    demo = zsclip.load_model("demo", device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "photos"
        root.mkdir()
        originals, copies = _planted(root)
        store = EmbeddingStore.create_or_open(Path(folder) / "s.zse", demo, precision="fp32")
        embed(store, list(expand_inputs([str(root)])), demo, zsclip.RunOptions(workers=0, precision="fp32"))
        build(EmbeddingStore.open(Path(folder) / "s.zse"), check_queries=0)
        owner = {str(c): str(o) for c, o in copies.items()}
        print(f"{len(originals)} originals, {len(copies)} planted copies")
        print("| threshold | recall (copies grouped with their original) | false groups | groups | rows listed |")
        print("|---|---|---|---|---|")
        for threshold in (0.85, 0.9, 0.95, 0.98):
            report = find_duplicates(Path(folder) / "s.zse", threshold)
            groups: dict[int, set[str]] = {}
            for dup in report.duplicates:
                groups.setdefault(dup.group, set()).update({dup.path, dup.representative})
            false = sum(len({owner.get(m, m) for m in members}) > 1 for members in groups.values())
            found = sum(any({c, o} <= members for members in groups.values()) for c, o in owner.items())
            print(f"| {threshold} | {found}/{len(owner)} = {found / len(owner):.2f} | {false} | {len(groups)} | "
                  f"{len(report.duplicates)} |")


if __name__ == "__main__":
    main()
