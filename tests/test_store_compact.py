"""`zsclip compact` and the store's flat-memory view (issue 37, items 4 and 5).

Compaction keeps exactly the view: classify and search answer the same before and after, while the
shards on disk (read back with pyarrow) hold fewer rows; it is atomic and resumable (a run killed
before or after its commit leaves a readable store, and a rerun finishes); it refuses while a
writer holds the lock. The view computed from ``new_paths`` marks equals the one computed from every
path, and a compacted store's view reads no path at all.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from zsclip import shapes
from zsclip.cli import main
from zsclip.store import EmbeddingStore
from zsclip.store.format import MANIFEST
from zsclip.store.location import Location
from zsclip.testing.stores import synthetic_rows, synthetic_store

LABELS = "red circle,blue square,green star,yellow ring"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _render(folder: Path, count: int, seed: int) -> None:
    for index, spec in enumerate(shapes.sample_specs(count, seed=seed)):
        shapes.render(spec).save(folder / f"{index}.png")


def _embed(photos: Path, store: Path) -> None:
    result = CliRunner().invoke(main, ["embed", str(photos), "-o", str(store), "-m", "demo", "-j", "0",
                                       "--precision", "fp32", "--commit-every", "3"])
    assert result.exit_code in (0, 1), result.output


@pytest.fixture(scope="module")
def churned(tmp_path_factory) -> Path:
    """A store whose view lost rows: 9 images embedded (3 shards), then 2 changed and 2 deleted and the
    folder embedded again (a shard of 2 newer rows and 2 deletions), plus one unreadable file."""
    root = tmp_path_factory.mktemp("compact")
    photos = root / "photos"
    photos.mkdir()
    _render(photos, 9, seed=5)
    (photos / "broken.png").write_bytes(b"not a png")  # an error row: kept in the view, and after compaction
    store = root / "s.zse"
    _embed(photos, store)
    changed = shapes.sample_specs(2, seed=99)
    for index, spec in zip((1, 4), changed, strict=True):
        shapes.render(spec).save(photos / f"{index}.png")
    for index in (2, 7):
        (photos / f"{index}.png").unlink()
    _embed(photos, store)
    return store


def _copy(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store.zse"
    shutil.copytree(store, copy)
    return copy


def _answers(store: Path, tmp_path: Path, tag: str) -> tuple[str, str]:
    """classify's CSV and search's CSV for ``store``, as text (the paths are the same files)."""
    classified, found = tmp_path / f"c-{tag}.csv", tmp_path / f"s-{tag}.csv"
    result = CliRunner().invoke(main, ["classify", str(store), "--labels", LABELS, "-t", "photo", "-k", "2",
                                       "-o", str(classified)])
    assert result.exit_code == 1, result.output  # the broken file's error row
    result = CliRunner().invoke(main, ["search", str(store), "a red circle", "-k", "5", "-o", str(found)])
    assert result.exit_code == 1, result.output
    return classified.read_text(), found.read_text()


def _on_disk(store: Path) -> tuple[list[str], int]:
    """(the listed shards, the rows they hold as pyarrow reads them)."""
    listed = [shard["file"] for shard in json.loads((store / MANIFEST).read_text())["shards"]]
    return listed, sum(pq.ParquetFile(store / name).metadata.num_rows for name in listed)


def _with_dictionary(store: Path) -> set[str]:
    """The columns that any shard of ``store`` wrote with a dictionary page, as Parquet's metadata says."""
    found = set()
    for shard in store.glob("*.parquet"):
        metadata = pq.ParquetFile(shard).metadata
        for group in range(metadata.num_row_groups):
            for index in range(metadata.num_columns):
                column = metadata.row_group(group).column(index)
                if column.has_dictionary_page:
                    found.add(column.path_in_schema)
    return found


def test_compacting_keeps_every_answer_and_drops_the_dead_rows(churned, tmp_path):
    store = _copy(churned, tmp_path)
    before = _answers(store, tmp_path, "before")
    shards_before, rows_before = _on_disk(store)
    assert rows_before == 10 + 2 + 2  # 10 rows embedded, 2 newer rows and 2 deletions added
    # the embedding is packed and written plain (no dictionary of float16's 65,536 values: store/format.py)
    assert "embedding" not in _with_dictionary(store) and "path" in _with_dictionary(store)

    result = CliRunner().invoke(main, ["compact", str(store)])
    assert result.exit_code == 0, result.output
    assert "compacted: kept 8 rows, dropped 6" in result.output  # 4 replaced or deleted rows + 2 deletion rows
    shards_after, rows_after = _on_disk(store)
    assert rows_after == 8 and len(before[0].splitlines()) == 1 + 8  # the header + the view's rows
    assert _answers(store, tmp_path, "after") == before
    rewritten = set(shards_after) - set(shards_before)
    assert rewritten and not rewritten & set(shards_before)  # new names: no shard rewritten in place
    assert sorted(p.name for p in store.glob("*.parquet")) == sorted(shards_after)  # old shards removed
    marks = [shard.get("new_paths") for shard in json.loads((store / MANIFEST).read_text())["shards"]]
    assert marks == [True] * len(shards_after)
    assert "embedding" not in _with_dictionary(store)  # rewritten shards: plain too

    again = CliRunner().invoke(main, ["compact", str(store)])
    assert again.exit_code == 0 and "nothing to drop: kept 8 rows, dropped 0" in again.output
    assert _on_disk(store) == (shards_after, 8)


def test_compact_refuses_while_a_writer_holds_the_lock(churned, tmp_path):
    store = _copy(churned, tmp_path)
    manifest = (store / MANIFEST).read_text()
    with Location(store).lock():
        result = CliRunner().invoke(main, ["compact", str(store)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "being written by another run" in result.stderr
    assert (store / MANIFEST).read_text() == manifest


KILLER = textwrap.dedent("""
    import os, signal, sys
    from zsclip.store.location import Location
    point = sys.argv[1]
    if point == "before-commit":  # SIGKILL right after the first new shard is written, before the manifest
        write = Location.write_batches
        def write_batches(self, *args, **kwargs):
            rows = write(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        Location.write_batches = write_batches
    else:  # after the commit, as the first old shard is being removed
        def delete(self, name):
            os.kill(os.getpid(), signal.SIGKILL)
        Location.delete = delete
    from zsclip.cli import main
    sys.argv = ["zsclip", "compact", *sys.argv[2:]]
    main()
""")


def _as_lists(store: Path) -> None:
    """``store`` as a zsclip before format 3 made it: every shard's embeddings in lists, manifest version 1."""
    manifest = json.loads((store / MANIFEST).read_text())
    for shard in manifest["shards"]:
        table = pq.read_table(store / shard["file"])
        column = table.column("embedding").combine_chunks()
        valid = np.asarray(column.is_valid())
        values = np.frombuffer(column.buffers()[1], "<f2")[: len(column) * manifest["embed_dim"]]
        vectors = [row.tolist() if ok else None for row, ok in zip(values.reshape(len(column), -1), valid,
                                                                   strict=True)]
        lists = pa.array(vectors, type=pa.list_(pa.float16(), manifest["embed_dim"]))
        pq.write_table(table.set_column(table.schema.get_field_index("embedding"), "embedding", lists),
                       store / shard["file"])
    del manifest["embedding_layout"]
    manifest["version"] = 1
    (store / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before-commit", "after-commit"])
@pytest.mark.parametrize("pack", [False, True])
def test_a_killed_compaction_leaves_a_readable_store_and_a_rerun_finishes(churned, tmp_path, point, pack):
    store = _copy(churned, tmp_path)
    if pack:  # a store made before format 3, packed by the compaction
        _as_lists(store)
    before = _answers(store, tmp_path, "before")
    shards_before, _ = _on_disk(store)
    env = {**os.environ, "PYTHONPATH": SRC}
    flags = ["--pack"] if pack else []
    killed = subprocess.run([sys.executable, "-c", KILLER, point, str(store), *flags], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    listed, _ = _on_disk(store)
    assert (listed == shards_before) == (point == "before-commit")  # the old store, or the new one
    assert len(list(store.glob("*.parquet"))) > len(listed)  # what the kill left: unlisted shards
    assert _answers(store, tmp_path, "killed") == before  # readable, and the same answers

    version = json.loads((store / MANIFEST).read_text())["version"]
    assert version == (1 if pack and point == "before-commit" else 3)  # the old manifest, or the new one

    rerun = subprocess.run([sys.executable, "-m", "zsclip", "compact", str(store), *flags], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "leftover files of a killed run" in rerun.stdout
    listed, rows = _on_disk(store)
    assert rows == 8 and sorted(p.name for p in store.glob("*.parquet")) == sorted(listed)
    assert not list(store.glob(".*.partial"))
    assert _answers(store, tmp_path, "rerun") == before
    assert json.loads((store / MANIFEST).read_text())["version"] == 3
    for name in listed:
        assert pa.types.is_fixed_size_binary(pq.read_schema(store / name).field("embedding").type)


def _views(store: EmbeddingStore) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The view from the marks, and the view computed from every path (the marks taken away)."""
    marked = [store.view_masks()[index] for index in sorted(store.view_masks())]
    plain = EmbeddingStore(store.location, {**store.manifest, "shards": [
        {key: value for key, value in shard.items() if key != "new_paths"} for shard in store.manifest["shards"]]})
    return marked, [plain.view_masks()[index] for index in sorted(plain.view_masks())]


def test_the_view_from_new_path_marks_equals_the_view_from_every_path(tmp_path):
    """Random histories of appends (new paths, replaced paths, deletions, paths coming back), each
    shard appended as `zsclip embed` appends (after ``facts``, so marked when it only adds paths)."""
    marked_shards = 0
    for history in range(12):
        rng = random.Random(history)
        store = synthetic_store(tmp_path / f"h{history}.zse", 6, 4, shard_rows=3)
        for _ in range(5):
            rows = []
            for _ in range(rng.randint(1, 4)):
                n = rng.randrange(0 if rng.random() < 0.5 else 6, 12)  # an old path or a new one
                row = synthetic_rows(n, 1)[0]
                row["deleted"] = rng.random() < 0.25
                rows.append(row)
            vectors = [None if row["deleted"] else np.ones(4) / 2 for row in rows]
            with store.writing():
                if rng.random() < 0.8:  # the writer read the view first (embed always does)
                    store.facts()
                store.append(rows, vectors)
        marked_shards += sum(bool(shard.get("new_paths")) for shard in store.manifest["shards"][2:])
        reopened = EmbeddingStore.open(store.folder)
        marked, plain = _views(reopened)
        assert [m.tolist() for m in marked] == [p.tolist() for p in plain], history
        if len(reopened):  # the rows' paths read back by position are the ones the batches carry
            streamed = [key for batch in reopened.batches() for key in batch.keys]
            order = list(range(len(streamed)))
            rng.shuffle(order)
            assert reopened.keys_at(order) == [streamed[i] for i in order]
    assert marked_shards >= 3  # the histories did exercise marked shards after the first two


def test_a_compacted_store_computes_its_view_without_reading_a_path(tmp_path, monkeypatch):
    store = synthetic_store(tmp_path / "s.zse", 30, 4, shard_rows=10)
    read: list = []
    real = Location.read_table
    monkeypatch.setattr(Location, "read_table", lambda self, name, columns: read.append(columns) or real(
        self, name, columns))
    opened = EmbeddingStore.open(store.folder)
    assert len(opened) == 30 and sum(len(b.paths) for b in opened.batches()) == 30
    assert read == []  # each shard's footer, never its paths
    assert opened.keys_at([0, 29, 10]) == ["/synthetic/000000000.jpg", "/synthetic/000000029.jpg",
                                           "/synthetic/000000010.jpg"]


@pytest.mark.slow
def test_memory_of_opening_and_classifying_a_store_is_flat_in_its_rows(tmp_path):
    """Peak RSS (the kernel's count) of opening and classifying a store of N and 4N rows, each in a fresh
    process: what the 3N more rows add stays under a bound that holding their paths would break. N is two
    shards: reading a second shard grows Arrow's allocator once (~17 MB, then flat), which is not the rows.
    Each size's peak is the lower of two runs: the store's batches are read on whichever of the top-k's threads
    is free, and where the allocators' freed pages land moves a run's peak by up to ~10 MB now and then (about
    one run in ten); holding the rows would raise every run."""
    script = textwrap.dedent("""
        import sys
        from zsclip.store import EmbeddingStore
        from zsclip.cli import main
        store = EmbeddingStore.open(sys.argv[1])
        assert len(store) == int(sys.argv[2])
        sys.argv = ["zsclip", "classify", sys.argv[1], "-c", sys.argv[3], "-o", sys.argv[1] + ".csv"]
        try:
            main()
        except SystemExit as exit:
            assert not exit.code
        print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
    """)
    from zsclip.testing.stores import synthetic_classifier

    classifier = synthetic_classifier(tmp_path / "c.zsc", 4, 3)
    peaks = {}
    for rows in (50_000, 200_000):  # two shards and eight: the first shard read also warms Arrow's allocator
        folder = tmp_path / f"s{rows}.zse"
        synthetic_store(folder, rows, 4, shard_rows=25_000, prefix="/" + "deep/" * 40)
        runs = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", script, str(folder), str(rows), str(classifier)],
                                  env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            runs.append(int(done.stdout.split()[-1]) * 1024)
        peaks[rows] = min(runs)
    # 150,000 more rows of ~230-byte paths: holding them would add over 34 MB; the view adds 150 KB
    assert peaks[200_000] - peaks[50_000] < 8 * 2**20, peaks
