"""The store's two embedding layouts (store/format.py, version 3): a new store packs each embedding into one
uncompressed binary value, read back as a copy; a store made before keeps its lists when extended and
compacted, so the zsclip that made it still reads it; both answer the same, and the reader's faster checks
(lengths screened in float32) decide every row as the float64 checks did.

Shards are read back as a user reads them: pyarrow, and ``np.frombuffer`` for a packed value.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import zsclip
from zsclip import shapes
from zsclip.cli import main
from zsclip.data.sources import Source
from zsclip.pipeline import feature_batches
from zsclip.store import EmbeddingStore
from zsclip.store.format import MANIFEST, schema
from zsclip.store.store import NORM_TOLERANCE, checked_vectors
from zsclip.testing.stores import synthetic_classifier, synthetic_rows, synthetic_store

LITTLE_ENDIAN = {"float16": "<f2", "float32": "<f4"}
OPTIONS = zsclip.RunOptions(workers=0, precision="fp32", batch_size=4)


def _manifest(store: Path) -> dict:
    return json.loads((store / MANIFEST).read_text())


def _columns(shard: Path) -> dict[str, tuple[str, bool]]:
    """Each Parquet column's (compression, has a dictionary page), as Parquet's metadata says."""
    group = pq.ParquetFile(shard).metadata.row_group(0)
    return {group.column(i).path_in_schema: (group.column(i).compression, group.column(i).has_dictionary_page)
            for i in range(group.num_columns)}


def _vectors(store: Path) -> dict[str, np.ndarray]:
    """path -> stored embedding (float32), read with pyarrow from the shards the manifest lists, either layout."""
    manifest = _manifest(store)
    found = {}
    for shard in manifest["shards"]:
        for row in pq.read_table(store / shard["file"], columns=["path", "embedding"]).to_pylist():
            value = row["embedding"]
            if isinstance(value, bytes):
                value = np.frombuffer(value, LITTLE_ENDIAN[manifest["dtype"]])
            found[row["path"]] = np.asarray(value, dtype=np.float32)
    return found


def _classified(store: Path, classifier: Path, out: Path) -> list[dict]:
    result = CliRunner().invoke(main, ["classify", str(store), "-c", str(classifier), "-k", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with out.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_new_store_packs_each_embedding_into_one_uncompressed_binary_value(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, spec in enumerate(shapes.sample_specs(6, seed=3)):
        shapes.render(spec).save(photos / f"{index}.png")
    store = tmp_path / "s.zse"
    result = CliRunner().invoke(main, ["embed", str(photos), "-o", str(store), "-m", "demo", "-j", "0",
                                       "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    manifest = _manifest(store)
    assert (manifest["version"], manifest["embedding_layout"], manifest["dtype"]) == (3, "packed", "float16")
    shard = store / manifest["shards"][0]["file"]
    dim = manifest["embed_dim"]
    assert pq.read_schema(shard).field("embedding").type == pa.binary(2 * dim)
    columns = _columns(shard)
    assert columns["embedding"] == ("UNCOMPRESSED", False)  # read as a copy
    assert columns["path"] == ("ZSTD", True) and columns["sha256"][0] == "ZSTD"
    demo = zsclip.load_model("demo")
    stored = _vectors(store)
    assert len(stored) == 6
    for path, vector in stored.items():  # the model's features, rounded to float16
        features = torch.cat([f for _, _, f in feature_batches([Source(path)], demo, OPTIONS)])[0].numpy()
        assert np.array_equal(vector, features.astype(np.float16).astype(np.float32))


@pytest.fixture
def twins(tmp_path) -> tuple[Path, Path, Path]:
    """(a store in lists, as made before packed embeddings, the same rows packed, a classifier file): each got
    a second shard replacing 40 of its 300 rows, so compaction has rows to drop."""
    stores = []
    for packed in (False, True):
        folder = tmp_path / ("packed.zse" if packed else "lists.zse")
        store = synthetic_store(folder, 300, 32, shard_rows=100, seed=4, packed=packed)
        vectors = np.random.default_rng(9).standard_normal((40, 32)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with store.writing():
            store.facts()
            store.append(synthetic_rows(10, 40), vectors)
        stores.append(folder)
    return stores[0], stores[1], synthetic_classifier(tmp_path / "c.zsc", 32, 20)


def test_a_store_made_before_keeps_its_lists_when_extended_and_compacted(twins, tmp_path):
    lists, packed, classifier = twins
    assert "embedding_layout" not in _manifest(lists) and _manifest(lists)["version"] == 1
    for shard in _manifest(lists)["shards"]:  # the appended shard too: what the older zsclip reads
        assert pa.types.is_fixed_size_list(pq.read_schema(lists / shard["file"]).field("embedding").type)
    before = _classified(lists, classifier, tmp_path / "before.csv")
    result = CliRunner().invoke(main, ["compact", str(lists)])
    assert result.exit_code == 0 and "dropped 40" in result.output, result.output
    manifest = _manifest(lists)
    assert manifest["version"] == 1 and "embedding_layout" not in manifest
    for shard in manifest["shards"]:
        assert pa.types.is_fixed_size_list(pq.read_schema(lists / shard["file"]).field("embedding").type)
    assert _classified(lists, classifier, tmp_path / "after.csv") == before
    # the packed twin holds the same values and answers the same, row for row, before and after its compaction
    assert _manifest(packed)["version"] == 3
    same = _vectors(packed)
    assert all(np.array_equal(vector, same[path]) for path, vector in _vectors(lists).items())
    assert _classified(packed, classifier, tmp_path / "packed.csv") == before
    assert CliRunner().invoke(main, ["compact", str(packed)]).exit_code == 0
    for shard in _manifest(packed)["shards"]:
        assert pq.read_schema(packed / shard["file"]).field("embedding").type == pa.binary(64)
    assert _classified(packed, classifier, tmp_path / "packed-after.csv") == before


def test_a_shard_in_the_other_layout_is_read_as_the_same_rows(tmp_path):
    folder = tmp_path / "s.zse"
    synthetic_store(folder, 200, 16, shard_rows=100, seed=2)

    def read() -> tuple[list[str], np.ndarray]:
        batches = list(EmbeddingStore.open(folder).batches())
        return [p for b in batches for p in b.paths], np.concatenate([b.embeddings for b in batches])

    paths, embeddings = read()
    shard = folder / _manifest(folder)["shards"][1]["file"]
    table = pq.read_table(shard)
    values = np.frombuffer(b"".join(table.column("embedding").to_pylist()), "<f2")
    as_lists = pa.FixedSizeListArray.from_arrays(pa.array(values), 16)
    index = table.schema.get_field_index("embedding")
    pq.write_table(table.set_column(index, "embedding", as_lists), shard)
    assert pa.types.is_fixed_size_list(pq.read_schema(shard).field("embedding").type)
    again_paths, again = read()
    assert again_paths == paths and np.array_equal(again, embeddings)


def test_an_unknown_embedding_layout_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "s.zse"
    synthetic_store(folder, 10, 8)
    manifest = _manifest(folder)
    manifest["embedding_layout"] = "zipped"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["search", str(folder), "a cat", "-k", "1"])
    assert result.exit_code == 2
    assert "field 'embedding_layout' is 'zipped', not 'packed'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def _with_damaged_shard(folder: Path, vectors: dict, dtype: str) -> pa.Table:
    """A packed ``dtype`` store of 20 rows of width 8 plus a shard "shard-damaged.parquet" of one row per
    ``vectors`` entry (path ``/d/NAME.jpg``; None: no embedding), listed in the manifest; returns that shard."""
    synthetic_store(folder, 20, 8, shard_rows=20, dtype=dtype)
    rows = synthetic_rows(100, len(vectors))
    for row, name in zip(rows, vectors, strict=True):
        row["path"] = row["resolved"] = f"/d/{name}.jpg"
    width = np.dtype(LITTLE_ENDIAN[dtype]).itemsize * 8
    column = pa.array([None if v is None else np.asarray(v, LITTLE_ENDIAN[dtype]).tobytes() for v in vectors.values()],
                      type=pa.binary(width))
    layout = schema(8, dtype, packed=True)
    table = pa.table({**{f.name: [row.get(f.name) for row in rows] for f in layout if f.name != "embedding"},
                      "embedding": column}, schema=layout)
    pq.write_table(table, folder / "shard-damaged.parquet")
    manifest = _manifest(folder)
    manifest["shards"] += [{"file": "shard-damaged.parquet", "rows": len(rows)}]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return table


def test_damaged_packed_rows_are_error_rows_and_a_packed_shard_of_another_width_is_skipped(tmp_path):
    folder = tmp_path / "s.zse"
    unit = np.eye(8, dtype=np.float32)[0]
    vectors = {"nan": np.full(8, np.nan), "inf": np.r_[np.inf, np.zeros(7)], "zeros": np.zeros(8), "null": None,
               "huge": unit * 1e30, "short": unit * 0.5}
    table = _with_damaged_shard(folder, vectors, "float32")
    wide = table.set_column(table.schema.get_field_index("embedding"), "embedding",
                            pa.array([b"\0" * 40] * len(vectors), type=pa.binary(40)))
    pq.write_table(wide, folder / "shard-wide.parquet")
    manifest = _manifest(folder)
    manifest["shards"] += [{"file": "shard-wide.parquet", "rows": len(vectors)}]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match=r"shard-wide\.parquet.*fixed_size_binary\[40\]"):
        batches = list(EmbeddingStore.open(folder).batches())
    errors = {p: e for b in batches for p, e in zip(b.paths, b.errors, strict=True)}
    assert len(errors) == 20 + len(vectors)
    assert "NaN or infinite" in errors["/d/nan.jpg"] and "NaN or infinite" in errors["/d/inf.jpg"]
    assert "all zeros" in errors["/d/zeros.jpg"] and "no embedding" in errors["/d/null.jpg"]
    assert all("shard-damaged.parquet" in errors[f"/d/{name}.jpg"] for name in ("nan", "inf", "zeros", "null"))
    kept = {p: v for b in batches for p, v in zip([p for p, e in zip(b.paths, b.errors, strict=True) if e is None],
                                                  b.embeddings, strict=True)}
    assert errors["/d/huge.jpg"] is None and np.array_equal(kept["/d/huge.jpg"], unit)  # scaled to length 1
    assert np.array_equal(kept["/d/short.jpg"], unit)


def _checked_in_float64(values: np.ndarray) -> tuple[list[str | None], np.ndarray]:
    """The checks as every row was decided before the float32 screen: lengths in float64."""
    values = values.copy()
    with np.errstate(all="ignore"):
        finite = np.isfinite(values).all(axis=1)
        norms = np.sqrt(np.einsum("ij,ij->i", values, values, dtype=np.float64))
        off = finite & (norms > 0) & (np.abs(norms - 1.0) > NORM_TOLERANCE)
        values[off] = (values[off] / norms[off, None]).astype(np.float32)
    return ["embedding has NaN or infinite values" if not ok else "embedding is all zeros" if not n > 0 else None
            for ok, n in zip(finite.tolist(), norms.tolist(), strict=True)], values


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1.0, 1.0 + NORM_TOLERANCE, 1.0 - NORM_TOLERANCE, 1.0 + NORM_TOLERANCE / 2,
                                           1.0 - NORM_TOLERANCE / 2, 1e-30, 1e-45, 0.0, 3e19, 1e38]) |
                          st.floats(0, 2, width=32), st.integers(0, 2**32 - 1),
                          st.sampled_from([None, np.nan, np.inf, -np.inf])), min_size=1, max_size=12))
def test_rows_screened_in_float32_are_decided_as_in_float64(rows):
    values = np.zeros((len(rows), 24), dtype=np.float32)
    for i, (length, seed, odd) in enumerate(rows):
        direction = np.random.default_rng(seed).standard_normal(24)
        values[i] = (direction / np.linalg.norm(direction) * length).astype(np.float32)
        if odd is not None:
            values[i, seed % 24] = odd
    problems, checked = checked_vectors(values.copy())
    expected_problems, expected = _checked_in_float64(values)
    assert problems == expected_problems
    usable = [p is None for p in problems]
    assert np.array_equal(checked[usable], expected[usable])


def test_the_benchmarks_store_classifies_alike_in_both_layouts(tmp_path):
    """The synthetic store of the benchmark, both layouts, through the Python API: the same arrays bit for bit."""
    from zsclip.tasks.stored import classify_store_arrays

    classifier = zsclip.ZeroShotClassifier.load(synthetic_classifier(tmp_path / "c.zsc", 64, 300))
    answers = []
    for packed in (False, True):
        folder = tmp_path / f"{packed}.zse"
        synthetic_store(folder, 3000, 64, shard_rows=1000, packed=packed)
        batches = list(classify_store_arrays(EmbeddingStore.open(folder), classifier, top_k=4))
        answers.append((np.concatenate([b.indices for b in batches]), np.concatenate([b.scores for b in batches])))
    assert np.array_equal(answers[0][0], answers[1][0]) and np.array_equal(answers[0][1], answers[1][1])
    shutil.rmtree(tmp_path / "False.zse")


def test_compact_pack_makes_a_store_made_before_format_3_with_the_same_answers(twins, tmp_path):
    lists, packed, classifier = twins
    before = _classified(lists, classifier, tmp_path / "before.csv")
    result = CliRunner().invoke(main, ["compact", str(lists), "--pack"])
    assert result.exit_code == 0, result.output
    assert "dropped 40" in result.output and "4 shards packed" in result.output and "now format 3" in result.output
    manifest = _manifest(lists)
    assert (manifest["version"], manifest["embedding_layout"]) == (3, "packed")
    for shard in manifest["shards"]:
        assert pq.read_schema(lists / shard["file"]).field("embedding").type == pa.binary(64)
    assert _classified(lists, classifier, tmp_path / "after.csv") == before
    assert _classified(packed, classifier, tmp_path / "twin.csv") == before
    same = _vectors(packed)
    assert all(np.array_equal(vector, same[path]) for path, vector in _vectors(lists).items())
    store = EmbeddingStore.open(lists)  # what it writes from now on is packed too
    with store.writing():
        store.facts()
        store.append(synthetic_rows(1000, 5), np.eye(32, dtype=np.float32)[:5])
    assert pq.read_schema(lists / _manifest(lists)["shards"][-1]["file"]).field("embedding").type == pa.binary(64)
    again = CliRunner().invoke(main, ["compact", str(lists), "--pack"])
    assert again.exit_code == 0 and "nothing to drop" in again.output and "packed" not in again.output


def test_packing_keeps_damaged_rows_damaged_and_refuses_a_row_of_another_width(tmp_path):
    folder = tmp_path / "s.zse"
    synthetic_store(folder, 10, 4, shard_rows=10, dtype="float32", packed=False)
    rows = synthetic_rows(100, 3)
    vectors = [None, [None, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]
    for row, name in zip(rows, ("null", "hole", "fine"), strict=True):
        row["path"] = row["resolved"] = f"/d/{name}.jpg"
    layout = schema(4, "float32")
    table = pa.table({**{f.name: [row.get(f.name) for row in rows] for f in layout if f.name != "embedding"},
                      "embedding": pa.array(vectors, type=layout.field("embedding").type)}, schema=layout)
    pq.write_table(table, folder / "shard-damaged.parquet")
    manifest = _manifest(folder)
    manifest["shards"].append({"file": "shard-damaged.parquet", "rows": 3})
    (folder / MANIFEST).write_text(json.dumps(manifest))

    def errors() -> dict[str, str | None]:
        batches = list(EmbeddingStore.open(folder).batches())
        return {p: e for b in batches for p, e in zip(b.paths, b.errors, strict=True)}

    before = errors()
    assert "no embedding" in before["/d/null.jpg"] and "NaN or infinite" in before["/d/hole.jpg"]
    result = CliRunner().invoke(main, ["compact", str(folder), "--pack"])
    assert result.exit_code == 0, result.output
    after = errors()
    assert after.keys() == before.keys() and after["/d/fine.jpg"] is None
    for name in ("null", "hole"):  # the same problem, named in the packed shard now
        assert after[f"/d/{name}.jpg"].split(": ")[-1] == before[f"/d/{name}.jpg"].split(": ")[-1]
    # a row of another length (a list column of another writer) cannot be packed: nothing changes
    other = tmp_path / "o.zse"
    synthetic_store(other, 10, 4, shard_rows=10, dtype="float32", packed=False)
    ragged = table.set_column(table.schema.get_field_index("embedding"), "embedding",
                              pa.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0], None], type=pa.list_(pa.float32())))
    pq.write_table(ragged, other / "shard-ragged.parquet")
    manifest = _manifest(other)
    manifest["shards"].append({"file": "shard-ragged.parquet", "rows": 3})
    (other / MANIFEST).write_text(json.dumps(manifest))
    listing = sorted(p.name for p in other.iterdir())
    result = CliRunner().invoke(main, ["compact", str(other), "--pack"])
    assert result.exit_code == 2
    assert "shard-ragged.parquet cannot be rewritten (row 1 has 2 values, the store's width is 4: it cannot be " \
           "packed)" in result.output and "Traceback" not in result.output
    assert _manifest(other) == manifest and sorted(p.name for p in other.iterdir()) == listing


def test_a_packed_column_of_another_width_read_without_the_shard_check_is_error_rows():
    """``checked_batch`` is also called on shards read elsewhere (Ray's store tasks), where no schema check ran:
    a packed width that is neither float16 nor float32 of the store's width makes error rows, not a crash."""
    from zsclip.store.store import checked_batch

    rows = synthetic_rows(0, 3)
    layout = schema(32, "float16", packed=True)
    record = pa.RecordBatch.from_pydict(
        {**{f.name: [row.get(f.name) for row in rows] for f in layout if f.name != "embedding"},
         "embedding": pa.array([b"\1" * 40] * 3, type=pa.binary(40))})
    batch = checked_batch(record, np.ones(3, dtype=bool), shard="s.parquet", offset=0, embed_dim=32, classnames=None)
    assert len(batch.embeddings) == 0
    assert all("embedding of 40 bytes is not 32 float16 or float32 values" in e and "s.parquet" in e
               for e in batch.errors)


# --- float16 widened by bit arithmetic (store/halves.py) -------------------------------------------------------------
EVERY_HALF = np.arange(65536, dtype=np.uint16).view(np.float16)  # zeros, subnormals, normals, infinities, NaN payloads


def _same_bits(widened_values: np.ndarray, halves: np.ndarray) -> bool:
    expected = halves.astype(np.float32)
    return (widened_values.dtype == np.float32 and widened_values.shape == expected.shape
            and np.array_equal(widened_values.view(np.uint32), expected.view(np.uint32)))


@pytest.mark.parametrize("halves", [EVERY_HALF, EVERY_HALF[::-1].reshape(256, 256),
                                    EVERY_HALF.reshape(256, 256)[:, ::3], np.tile(EVERY_HALF, 3)[5:], EVERY_HALF[:0]],
                         ids=["every", "every-2d", "strided", "chunks-unaligned", "empty"])
def test_every_float16_widens_to_numpys_float32_bit_for_bit(halves):
    from zsclip.store.halves import widened

    assert _same_bits(widened(halves), halves)


@pytest.mark.parametrize("shape", [(768, 256), (12288, 16), (384, 512), (24, 8192)])
def test_rows_widened_with_their_sums_of_squares_equal_numpys_cast_and_einsum_bit_for_bit(shape):
    """Each row's sum of squares made while widening (which also finds the chunks holding an infinity or NaN) is
    what einsum gives over the widened rows; every float16 value, in rows of several widths."""
    from zsclip.store.halves import CHUNK, rows_widened

    rng = np.random.default_rng(shape[1])
    halves = rng.permutation(np.tile(EVERY_HALF, 3)).reshape(shape)  # several chunks of rows at every width
    halves[-1] = np.float16(60000.0)  # large and finite: a sum past 2**32 with nothing to patch
    values, squares = rows_widened(halves)
    assert _same_bits(values, halves)
    expected = halves.astype(np.float32)
    with np.errstate(all="ignore"):
        expected_squares = np.einsum("ij,ij->i", expected, expected)
    assert squares.dtype == np.float32 and squares.shape == (shape[0],)
    assert np.array_equal(squares.view(np.uint32), expected_squares.view(np.uint32))
    assert shape[0] > CHUNK // shape[1]


def test_rows_wider_than_einsums_buffer_are_widened_and_left_for_the_caller_to_sum():
    from zsclip.store.halves import WIDEST_SUMMED, rows_widened

    halves = np.tile(EVERY_HALF, 2)[: 3 * (WIDEST_SUMMED + 1)].reshape(3, WIDEST_SUMMED + 1)
    values, squares = rows_widened(halves)
    assert squares is None and _same_bits(values, halves)


def test_a_thread_that_flushes_subnormal_inputs_still_widens_them_exactly():
    """DAZ (torch.set_flush_denormal) would read the subnormal float32 the bit move makes as zero: such a thread
    is noticed and numpy widens its values."""
    import threading

    from zsclip.store import halves as module

    seen: dict[str, bool] = {}

    def flushing() -> None:
        if not torch.set_flush_denormal(True):
            return
        try:
            seen["kept"] = module._subnormals_kept()
            seen["exact"] = _same_bits(module.widened(EVERY_HALF), EVERY_HALF)
        finally:
            torch.set_flush_denormal(False)

    thread = threading.Thread(target=flushing)
    thread.start()
    thread.join()
    if not seen:
        pytest.skip("this CPU cannot flush subnormals")
    assert seen == {"kept": False, "exact": True}
    assert module._subnormals_kept()  # this thread's own unit was left as it was


def test_float16_infinities_and_nan_in_a_store_are_error_rows_and_its_extremes_read_exactly(tmp_path):
    """Through the store's reader: float16's specials (widened as large finite values, then patched) become the
    row's error; its largest finite value and its subnormals are read as numpy widens them."""
    folder = tmp_path / "s.zse"
    unit = np.eye(8, dtype=np.float16)[0]
    payload = np.array([0x7E01], dtype=np.uint16).view(np.float16)[0]  # a NaN with a payload
    vectors = {"inf": np.r_[np.float16(np.inf), np.zeros(7, np.float16)],
               "minus-inf": np.r_[np.zeros(7, np.float16), np.float16(-np.inf)],
               "nan": np.r_[unit[:4], payload, unit[5:]], "largest": unit * np.float16(65504),
               "subnormal": np.array([2**-24, -2**-20, 0, 0, 0, 0, 0, 2**-15], dtype=np.float16),
               "plain": np.array([0.5, -0.25, 0.5, 0.5, 0.25, -0.25, 0.125, 0.25], dtype=np.float16)}
    _with_damaged_shard(folder, vectors, "float16")
    batches = list(EmbeddingStore.open(folder).batches())
    errors = {p: e for b in batches for p, e in zip(b.paths, b.errors, strict=True)}
    assert all("NaN or infinite" in errors[f"/d/{name}.jpg"] for name in ("inf", "minus-inf", "nan"))
    kept = {p: v for b in batches for p, v in zip([p for p, e in zip(b.paths, b.errors, strict=True) if e is None],
                                                  b.embeddings, strict=True)}
    names = ("largest", "subnormal", "plain")
    problems, expected = checked_vectors(np.stack([vectors[name].astype(np.float32) for name in names]))
    assert problems == [None] * 3
    for name, row in zip(names, expected, strict=True):
        assert np.array_equal(kept[f"/d/{name}.jpg"].view(np.uint32), row.view(np.uint32)), name
    assert np.array_equal(kept["/d/largest.jpg"], np.eye(8, dtype=np.float32)[0])


def test_local_shards_are_read_memory_mapped_and_remote_ones_through_their_filesystem(tmp_path, monkeypatch):
    """A local shard's pages are read in place (no copy into Arrow's buffers: half the decode time of the
    embeddings); a store at a pyarrow filesystem URI reads through that filesystem; both give the same rows. A
    shard unlinked while mapped (as compaction unlinks the shards it replaced) still reads to its end."""
    from zsclip.store import location as module

    folder = tmp_path / "s.zse"
    synthetic_store(folder, 900, 16, shard_rows=400)
    mapped: list[str] = []
    real_map = module.pa.memory_map
    monkeypatch.setattr(module.pa, "memory_map", lambda path, *a, **k: mapped.append(path) or real_map(path, *a, **k))

    def rows(batches) -> list[tuple[str, bytes]]:
        return [(path, vector.tobytes()) for batch in batches
                for path, vector in zip(batch.paths, batch.embeddings, strict=True)]

    local = rows(EmbeddingStore.open(folder).batches(256))
    shards = {path.name for path in folder.glob("*.parquet")}
    assert len(local) == 900 and len(shards) == 3 and {Path(path).name for path in mapped} == shards
    mapped.clear()
    assert rows(EmbeddingStore.open(folder.as_uri()).batches(256)) == local and not mapped

    reading = EmbeddingStore.open(folder).batches(256)
    first = rows([next(reading)])
    for shard in folder.glob("*.parquet"):
        shard.unlink()
    with pytest.warns(UserWarning):  # the shards not yet opened are gone: each one warning, skipped
        rest = rows(reading)
    assert first + rest == local[:400]
