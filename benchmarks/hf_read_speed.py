"""Reading a Hugging Face Parquet split: rows in one row group vs the same rows in one-row groups, same run.

    python benchmarks/hf_read_speed.py                 # 1,200 rows
    python benchmarks/hf_read_speed.py --rows 5000

What is timed is zsclip's reading layer (``zsclip.data.hf``: open the split, then every part's rows with
their image bytes and labels), not image decoding or the model, which cost the same per row in both files.
Reading must be linear in the file: the many-groups file may cost a small constant factor more than the
one-group file (pyarrow reads each row group's column chunks on their own), never a factor that grows with
the number of groups. The files are written by pyarrow with the schema ``datasets`` gives an Image and a
ClassLabel column (the Hub's Parquet layout).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from zsclip.data.hf import open_hf, table_rows

FEATURES = {"image": {"_type": "Image"}, "label": {"names": ["red", "blue"], "_type": "ClassLabel"}}
SCHEMA = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64())],
                   metadata={"huggingface": json.dumps({"info": {"features": FEATURES}})})


def write(path: Path, rows: int, group_rows: int) -> None:
    images = []
    for colour in ("red", "blue"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    table = pa.Table.from_pylist([{"image": {"bytes": images[i % 2], "path": f"{i}.png"}, "label": i % 2}
                                  for i in range(rows)], schema=SCHEMA)
    pq.write_table(table, path, row_group_size=group_rows)


def read(path: Path) -> tuple[float, int, int]:
    """Seconds to open the split and read every row; rows read; row groups in the file."""
    start = time.perf_counter()
    table = open_hf(path)
    count = sum(1 for part in table.parts for _ in table_rows(table, part))
    return time.perf_counter() - start, count, pq.ParquetFile(path).metadata.num_row_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--repeat", type=int, default=3, help="best of N reads of each file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        one, many = Path(folder) / "one-group.parquet", Path(folder) / "many-groups.parquet"
        write(one, args.rows, args.rows)
        write(many, args.rows, 1)
        results = {}
        for name, path in (("1 row group", one), (f"{args.rows:,} row groups", many)):
            best = min(read(path) for _ in range(args.repeat))
            assert best[1] == args.rows, best
            results[name] = best[0]
            print(f"{name:>20}: {best[0]:.3f} s for {best[1]:,} rows ({best[2]:,} groups)")
        first, second = results.values()
        print(f"{'ratio':>20}: {second / first:.1f}x (many groups / one group)")


if __name__ == "__main__":
    main()
