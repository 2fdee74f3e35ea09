"""The store's data integrity (issue 22, items 1-4 and 12): facts and embedding from the same bytes,
writers that never drop each other's shards, every row and manifest field validated, no NaN in
any output, and a store's model name that loads back and is not overridden by --model."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import zsclip
from zsclip import shapes
from zsclip.cli import main
from zsclip.data.sources import Source
from zsclip.pipeline import feature_batches
from zsclip.store import EmbeddingStore, StoreError, embed, open_store
from zsclip.store.embed import CHANGED, RETRIES
from zsclip.store.format import MANIFEST, schema
from zsclip.tasks.stored import classify_store, classify_store_arrays, evaluate_store, search_store

OPTIONS = zsclip.RunOptions(workers=0, precision="fp32", batch_size=4)


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


def _render(path: Path, seed: int) -> bytes:
    shapes.render(shapes.sample_specs(1, seed=seed)[0]).save(path)
    return path.read_bytes()


def _replace(path: Path, seed: int) -> bytes:
    """Another picture at ``path``, as an editor or a sync tool writes it (a new file renamed over it)."""
    temporary = path.with_name(f".tmp-{path.name}")
    data = _render(temporary, seed)
    os.replace(temporary, path)
    return data


def _feature(demo, path: Path) -> np.ndarray:
    return torch.cat([f for _, _, f in feature_batches([Source(str(path))], demo, OPTIONS)])[0].numpy()


def _latest_rows(folder: Path) -> dict[str, dict]:
    """resolved path -> its latest row, read straight from the shards the manifest lists."""
    rows: dict[str, dict] = {}
    manifest = json.loads((folder / MANIFEST).read_text())
    for shard in manifest["shards"]:
        for row in pq.read_table(folder / shard["file"]).to_pylist():
            if isinstance(row["embedding"], bytes):  # packed: the values little-endian (store/format.py)
                row["embedding"] = np.frombuffer(row["embedding"], {"float16": "<f2", "float32": "<f4"}[
                    manifest["dtype"]])
            rows[row["resolved"]] = row
    return rows


# --- 1. facts and embedding from the same bytes -------------------------------------------------
def test_a_file_replaced_after_it_was_decoded_is_stored_with_the_facts_of_the_bytes_encoded(demo, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for index in range(3):
        _render(folder / f"{index}.png", seed=index)
    target = folder / "1.png"
    sources = [Source(str(folder / f"{index}.png")) for index in range(3)]
    replaced = {}

    def replacing_after_decoding(chunk):
        for names, errors, features in feature_batches(list(chunk), demo, OPTIONS):
            if not replaced and str(target) in names:  # decoded (and encoded) already: now the file changes
                replaced["bytes"] = _replace(target, seed=40)
            yield names, errors, features

    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32", dtype="float32")
    report = embed(store, sources, demo, OPTIONS, features=replacing_after_decoding)
    assert (report.encoded, report.failed) == (3, 0)
    row = _latest_rows(tmp_path / "s.zse")[str(target)]
    info = target.stat()
    assert row["sha256"] == hashlib.sha256(replaced["bytes"]).hexdigest()
    assert (row["size"], row["mtime_ns"]) == (info.st_size, info.st_mtime_ns)
    assert np.allclose(row["embedding"], _feature(demo, target), atol=1e-6)  # the new picture's embedding
    assert embed(store, sources, demo, OPTIONS).skipped == 3                 # and its facts let it be skipped
    # a later change to the bytes is seen and encoded again
    old = _replace(target, seed=1)
    assert old == (folder / "1.png").read_bytes()
    again = embed(store, sources, demo, OPTIONS)
    assert (again.encoded, again.skipped) == (1, 2)
    row = _latest_rows(tmp_path / "s.zse")[str(target)]
    assert row["sha256"] == hashlib.sha256(old).hexdigest()
    assert np.allclose(row["embedding"], _feature(demo, target), atol=1e-6)


def test_a_file_that_keeps_changing_is_an_error_without_facts_and_is_encoded_by_the_next_run(demo, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for index in range(2):
        _render(folder / f"{index}.png", seed=index)
    target = folder / "0.png"
    sources = [Source(str(folder / f"{index}.png")) for index in range(2)]
    calls = []

    def always_replacing(chunk):
        calls.append([s.name for s in chunk])
        for names, errors, features in feature_batches(list(chunk), demo, OPTIONS):
            _replace(target, seed=50 + len(calls))
            yield names, errors, features

    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32")
    report = embed(store, sources, demo, OPTIONS, features=always_replacing)
    assert calls[1:] == [[str(target)]] * RETRIES                             # encoded again, then given up
    assert (report.encoded, report.failed) == (1, 1)
    row = _latest_rows(tmp_path / "s.zse")[str(target)]
    assert row["error"] == CHANGED and row["size"] is None and row["embedding"] is None
    again = embed(store, sources, demo, OPTIONS)                              # the file is stable now
    assert (again.encoded, again.skipped) == (1, 1)
    assert _latest_rows(tmp_path / "s.zse")[str(target)]["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_a_non_finite_embedding_from_the_model_is_an_error_row_not_stored(demo, tmp_path):
    path = tmp_path / "a.png"
    _render(path, seed=3)

    def nan_features(chunk):
        for names, errors, features in feature_batches(list(chunk), demo, OPTIONS):
            yield names, errors, torch.full_like(features, float("nan"))

    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32")
    report = embed(store, [Source(str(path))], demo, OPTIONS, features=nan_features)
    assert (report.encoded, report.failed) == (0, 1)
    row = _latest_rows(tmp_path / "s.zse")[str(path)]
    assert "NaN" in row["error"] and row["embedding"] is None


# --- 2. writers never drop each other's shards ---------------------------------------------------
def _rows(prefix: str, count: int, dim: int, seed: int) -> tuple[list[dict], list[np.ndarray]]:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"path": f"{prefix}{i}", "resolved": f"/{prefix}{i}", "deleted": False} for i in range(count)]
    return rows, list(vectors)


def test_two_handles_opened_before_either_writes_keep_both_shards(demo, tmp_path):
    folder = tmp_path / "s.zse"
    EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    first, second, third = (EmbeddingStore.open(folder) for _ in range(3))
    first.append(*_rows("a", 5, demo.embed_dim, 0))
    second.append(*_rows("b", 7, demo.embed_dim, 1))                  # its manifest predates first's shard
    with third.writing():                                              # an embed run: leftovers removed here
        pass
    image = tmp_path / "x.png"
    _render(image, seed=2)
    embed(third, [Source(str(image))], demo, OPTIONS, remove_missing=False)  # the rows above name no files
    manifest = json.loads((folder / MANIFEST).read_text())
    assert len(manifest["shards"]) == 3
    assert all((folder / shard["file"]).is_file() for shard in manifest["shards"])
    assert len(EmbeddingStore.open(folder)) == 5 + 7 + 1


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from zsclip.store import EmbeddingStore, StoreError
    store = EmbeddingStore.open(sys.argv[1])              # opened before the other process writes
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.005)
    rng = np.random.default_rng(int(sys.argv[4]))
    for shard in range(6):
        vectors = rng.standard_normal((50, store.embed_dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [{"path": f"{sys.argv[2]}{shard}-{i}", "resolved": f"/{sys.argv[2]}{shard}-{i}", "deleted": False}
                for i in range(50)]
        store.append(rows, list(vectors))
        for _ in range(500):                               # what each embed run does first: refused
            try:                                           # while the other process appends (a user
                with store.writing():                      # is told to wait for it), so tried again
                    break
            except StoreError as error:
                if "being written by another run" not in str(error):
                    raise
                time.sleep(0.01)
        else:
            raise SystemExit("never got the write lock")
""")


@pytest.mark.slow
def test_two_writer_processes_both_commit_every_shard(demo, tmp_path):
    import time

    folder = tmp_path / "s.zse"
    EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    start = time.time() + 4  # both processes import zsclip, open the store, then write at the same moment
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), name, str(start), str(seed)],
                                stderr=subprocess.PIPE, text=True) for seed, name in enumerate("ab")]
    for writer in writers:
        _, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr
    manifest = json.loads((folder / MANIFEST).read_text())
    assert len(manifest["shards"]) == 12
    assert sorted(p.name for p in folder.glob("shard-*.parquet")) == sorted(s["file"] for s in manifest["shards"])
    assert len(EmbeddingStore.open(folder)) == 2 * 6 * 50


def test_only_stale_leftovers_are_removed(demo, tmp_path):
    folder = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    (folder / "shard-00007-deadbeef.parquet").write_bytes(b"a killed writer's uncommitted shard")
    (folder / ".shard-00007-deadbeef.parquet.x1.partial").write_bytes(b"half a shard")
    unlocked = EmbeddingStore.open(folder)
    assert unlocked.remove_leftovers() == []                      # not under the lock: nothing is touched
    with store.writing():
        assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == [MANIFEST]
        (folder / "shard-00008-0badcafe.parquet").write_bytes(b"newer than the lock")
        assert store.remove_leftovers() == []                     # not provably a dead writer's
    with pytest.raises(StoreError, match="being written by another run"), store.writing(), \
            EmbeddingStore.open(folder).writing():
        pass


def test_a_store_is_created_once_by_concurrent_creators(demo, tmp_path):
    folder = tmp_path / "s.zse"
    folder.mkdir()
    (folder / ".lock").touch()                                     # what a creation that failed leaves
    first = EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    first.append(*_rows("a", 2, demo.embed_dim, 0))
    second = EmbeddingStore.create_or_open(folder, demo, precision="fp32")  # opened, never created again
    assert second.manifest["shards"] == first.manifest["shards"] and len(second) == 2


def test_a_store_replaced_while_a_handle_is_open_is_refused(demo, tmp_path):
    folder = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["embed_dim"] = 32
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="replaced by another store"):
        store.append(*_rows("a", 2, demo.embed_dim, 0))
    assert not list(folder.glob("shard-*"))


# --- 3 and 4. every row validated, no NaN in any output --------------------------------------
def _damaged_store(demo, tmp_path: Path) -> tuple[Path, str]:
    """A labelled store (2 classes) with one good shard from ``embed`` and one damaged shard."""
    images = tmp_path / "imgs"
    for colour in ("red", "blue"):
        (images / colour).mkdir(parents=True)
        for index in range(2):
            _render(images / colour / f"{index}.png", seed=index + len(colour))
    folder = tmp_path / "s.zse"
    result = CliRunner().invoke(main, ["embed", str(images), "--labelled", "-o", str(folder), "-m", "demo",
                                       "--precision", "fp32", "-j", "0", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    dim = demo.embed_dim
    unit = np.zeros(dim, dtype=np.float32)
    unit[0] = 1.0
    rows = {  # name: (path, resolved, label, embedding)
        "nan": ("nan.png", "/d/nan.png", 0, [math.nan] * dim),
        "inf": ("inf.png", "/d/inf.png", 0, [math.inf] + [0.0] * (dim - 1)),
        "null embedding": ("null.png", "/d/null.png", 0, None),
        "null value": ("hole.png", "/d/hole.png", 0, [None] + [0.0] * (dim - 1)),
        "zeros": ("zero.png", "/d/zero.png", 1, [0.0] * dim),
        "null path": (None, "/d/nopath.png", 0, unit),
        "null resolved 1": ("r1.png", None, 0, unit),
        "null resolved 2": ("r2.png", None, 1, unit),
        "label too big": ("big.png", "/d/big.png", 2**31 - 1, unit),
        "label negative": ("neg.png", "/d/neg.png", -5, unit),
        "label null": ("nolabel.png", "/d/nolabel.png", None, unit),
        "huge but finite": ("long.png", "/d/long.png", 1, unit * 1e30),
    }
    columns = {"path": [], "resolved": [], "label": [], "embedding": [], "deleted": [], "error": []}
    for path, resolved, label, vector in rows.values():
        columns["path"].append(path)
        columns["resolved"].append(resolved)
        columns["label"].append(label)
        columns["embedding"].append(None if vector is None else list(map(lambda v: None if v is None else float(v),
                                                                          vector)))
        columns["deleted"].append(False)
        columns["error"].append(None)
    table = pa.table({field.name: columns.get(field.name, [None] * len(rows)) for field in schema(dim, "float32")},
                     schema=schema(dim, "float32"))
    name = "shard-00001-damaged.parquet"
    pq.write_table(table, folder / name)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["shards"].append({"file": name, "rows": len(rows)})
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder, name


def test_damaged_rows_are_error_rows_naming_the_shard(demo, tmp_path):
    folder, shard = _damaged_store(demo, tmp_path)
    store = EmbeddingStore.open(folder)
    view = {}
    for batch in store.batches():
        assert len(batch.embeddings) == sum(error is None for error in batch.errors)
        assert np.isfinite(batch.embeddings).all()
        assert np.allclose(np.linalg.norm(batch.embeddings, axis=1), 1.0, atol=1e-3)
        view.update(zip(batch.paths, batch.errors, strict=True))
    assert len(view) == 4 + 12                                        # the null-resolved rows did not collapse
    good = {p for p, e in view.items() if e is None}
    assert good == {str(tmp_path / "imgs" / c / f"{i}.png") for c in ("red", "blue") for i in range(2)} | {
        "long.png"}                                                   # a long vector is scaled to length 1
    expected = {"nan.png": "NaN or infinite", "inf.png": "NaN or infinite", "null.png": "no embedding",
                "hole.png": "NaN or infinite", "zero.png": "all zeros", "/d/nopath.png": "no path",
                "r1.png": "no resolved path", "r2.png": "no resolved path",
                "big.png": "label 2147483647 is not one of the store's 2 classes",
                "neg.png": "label -5 is not one of", "nolabel.png": "no label"}
    for path, problem in expected.items():
        assert view[path].startswith(f"store shard {shard}, row ") and problem in view[path], view[path]
    # the writer copes with rows without an identity: they are never matched, nothing crashes
    image = tmp_path / "new.png"
    _render(image, seed=9)
    assert embed(store, [Source(str(image))], demo, OPTIONS).encoded == 1


def test_a_class_list_shorter_than_the_labels_makes_error_rows_and_eval_goes_on(demo, tmp_path):
    folder, _ = _damaged_store(demo, tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["classnames"] = manifest["classnames"][:1]                # labels 1 now point past the list
    (folder / MANIFEST).write_text(json.dumps(manifest))
    result = evaluate_store(EmbeddingStore.open(folder), demo, "photo", precision="fp32")
    assert result.num_images == 2                                      # the two images of class 0 ('blue')
    out_of_range = {Path(f["path"]).name for f in result.failures
                    if "is not one of the store's 1 classes" in f["error"]}
    assert out_of_range == {"0.png", "1.png", "zero.png", "big.png", "neg.png", "long.png"}  # red/*: label 1


def test_store_scores_as_arrays_equal_the_predictions_damaged_rows_included(demo, tmp_path):
    folder, _ = _damaged_store(demo, tmp_path)
    classifier = zsclip.ZeroShotClassifier.build(demo, ["red circle", "blue square", "green star"], "photo")
    predictions = list(classify_store(EmbeddingStore.open(folder), classifier, top_k=2))
    batches = list(classify_store_arrays(EmbeddingStore.open(folder), classifier, top_k=2, batch_size=5))
    assert len(batches) > 1 and sum(len(b.paths) for b in batches) == len(predictions)
    clean = [all(error is None for error in b.errors) for b in batches]
    assert any(clean) and not all(clean)  # both ways a batch is answered: as it comes, and row by row
    rows = [(path, error, indices, scores) for b in batches
            for path, error, indices, scores in zip(b.paths, b.errors, b.indices, b.scores, strict=True)]
    assert sum(error is not None for _, error, _, _ in rows) == 11  # the damaged rows, as classify reports them
    for prediction, (path, error, indices, scores) in zip(predictions, rows, strict=True):
        assert (prediction.source, prediction.error) == (path, error)
        if error is None:
            assert [classifier.classnames[i] for i in indices] == prediction.labels
            assert scores.tolist() == prediction.scores  # bit for bit
        else:
            assert indices.tolist() == [-1, -1] and np.isnan(scores).all()


@pytest.mark.slow
def test_no_nan_reaches_classify_search_or_eval_output(demo, tmp_path):
    folder, shard = _damaged_store(demo, tmp_path)
    output = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["classify", str(folder), "--labels", "red circle,blue square", "-t", "photo",
                                       "-o", str(output)])
    assert result.exit_code == 1, result.output                       # some rows failed: reported, not fatal

    def no_constants(name):
        raise AssertionError(f"{name} in JSON output")

    rows = json.loads(output.read_text(), parse_constant=no_constants)
    failed = [row for row in rows if row.get("error")]
    assert len(failed) == 11 and all(shard in row["error"] for row in failed)
    assert all(math.isfinite(score) for row in rows for score in row.get("scores") or [])
    predictions = list(classify_store(EmbeddingStore.open(folder),
                                      zsclip.ZeroShotClassifier.build(demo, ["a", "b"], "photo"), top_k=2))
    assert all(math.isfinite(s) for p in predictions for s in p.scores)
    query = torch.from_numpy(np.full(demo.embed_dim, 1 / math.sqrt(demo.embed_dim), dtype=np.float32))
    results = search_store(EmbeddingStore.open(folder), query, top_k=20)
    assert len(results) == 5 and all(math.isfinite(score) and -1.001 <= score <= 1.001 for _, score in results)
    search = CliRunner().invoke(main, ["search", str(folder), "a red circle", "-k", "20"])
    assert search.exit_code == 1, search.output  # the damaged rows are reported (exit 1), the rest answered
    assert "skipped nan.png" in search.stderr and "skipped inf.png" in search.stderr
    assert len(search.stdout.splitlines()) == 5 and all(math.isfinite(float(line.split()[1]))
                                                        for line in search.stdout.splitlines())
    evaluated = CliRunner().invoke(main, ["eval", "--data", str(folder), "-t", "photo", "-o", str(tmp_path / "e.json")])
    assert evaluated.exit_code == 1, evaluated.output
    json.loads((tmp_path / "e.json").read_text(), parse_constant=no_constants)


def test_an_embedding_list_column_of_varying_lengths_is_checked_row_by_row(demo, tmp_path):
    folder = tmp_path / "s.zse"
    EmbeddingStore.create_or_open(folder, demo, precision="fp32", dtype="float32")
    dim = demo.embed_dim
    vector = [1.0] + [0.0] * (dim - 1)
    fields = [pa.field(f.name, pa.list_(pa.float32())) if f.name == "embedding" else f
              for f in schema(dim, "float32")]
    columns = {"path": ["ok", "short", "long"], "resolved": ["/ok", "/short", "/long"], "deleted": [False] * 3,
               "embedding": [vector, vector[:3], vector + [0.0]]}
    pq.write_table(pa.table({f.name: columns.get(f.name, [None] * 3) for f in fields}, schema=pa.schema(fields)),
                   folder / "shard-00000-list.parquet")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["shards"] = [{"file": "shard-00000-list.parquet", "rows": 3}]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (batch,) = EmbeddingStore.open(folder).batches()
    assert batch.errors[0] is None and batch.embeddings.shape == (1, dim)
    assert f"embedding has 3 values, the store's width is {dim}" in batch.errors[1]
    assert f"embedding has {dim + 1} values" in batch.errors[2]


def test_clip_retrieval_rows_without_a_path_or_with_nan_are_error_rows(demo, tmp_path):
    root = tmp_path / "cr"
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    embeddings = np.random.default_rng(0).standard_normal((4, demo.embed_dim)).astype(np.float16)
    embeddings[1] = np.nan
    embeddings[2] = 0
    np.save(root / "img_emb" / "img_emb_0.npy", embeddings)
    pq.write_table(pa.table({"image_path": ["a.jpg", "b.jpg", "c.jpg", None]}),
                   root / "metadata" / "metadata_0.parquet")
    (batch,) = open_store(root, model="demo").batches()
    assert batch.paths[:3] == ["a.jpg", "b.jpg", "c.jpg"] and batch.paths[3] == "<img_emb_0.npy row 3>"
    assert batch.errors[0] is None and "row 1: embedding has NaN" in batch.errors[1]
    assert "row 2: embedding is all zeros" in batch.errors[2] and "row 3: no path" in batch.errors[3]
    assert batch.embeddings.shape == (1, demo.embed_dim) and np.isfinite(batch.embeddings).all()


# --- 3. manifests with fields of the wrong type ------------------------------------------------
@pytest.mark.parametrize(("field", "value", "says"), [
    ("model", 5, "field 'model' is 5"),
    ("model", "", "field 'model' is ''"),
    ("shards", "all", "field 'shards' is 'all'"),
    ("shards", [1], "shards[0] is 1"),
    ("shards", [{"file": "../elsewhere.parquet", "rows": 1}], "shards[0].file"),
    ("shards", [{"file": "shard-a.parquet", "rows": "9"}], "shards[0].rows is '9'"),
    ("shards", [{"file": "shard-a.parquet", "rows": True}], "shards[0].rows is True"),
    ("shards", [{"file": "a.parquet", "rows": 1}, {"file": "a.parquet", "rows": 1}], "listed twice"),
    ("embed_dim", True, "field 'embed_dim' is True"),
    ("embed_dim", 10**12, "field 'embed_dim' is 1000000000000"),
    ("version", "1", "field 'version' is '1'"),
    ("dtype", ["float16"], "field 'dtype' is list"),
    ("classnames", "cat,dog", "field 'classnames' is 'cat,dog'"),
    ("classnames", ["cat", 7], "classnames[1] is 7"),
    ("pretrained", {"a": 1}, "field 'pretrained' is dict"),
    ("fingerprint", 3.5, "field 'fingerprint' is 3.5"),
    ("logit_scale", -1, "field 'logit_scale' is -1"),
    ("logit_bias", "high", "field 'logit_bias' is 'high'"),
    ("preprocessing", [224], "field 'preprocessing' is list"),
])
def test_a_manifest_field_of_the_wrong_type_is_one_line_naming_the_file_and_field(demo, tmp_path, field, value, says):
    folder = tmp_path / "s.zse"
    EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest[field] = value
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError) as caught:
        EmbeddingStore.open(folder)
    message = str(caught.value)
    assert message.startswith(f"store manifest {folder / MANIFEST}: ") and says in message and "\n" not in message
    if field == "model":  # and the CLI says it in one line, exit status 2
        result = CliRunner().invoke(main, ["classify", str(folder), "--labels", "a,b", "-t", "photo"])
        assert result.exit_code == 2 and result.stderr.strip().splitlines() == [f"zsclip: error: {message}"]


# --- 12. the store's model name --------------------------------------------------------------
def test_model_given_for_a_store_must_be_the_stores(demo, tmp_path):
    folder = tmp_path / "s.zse"
    EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    assert open_store(folder, model="demo").model == "demo"
    with pytest.raises(StoreError, match="holds embeddings of model demo, not ViT-B-32: drop --model"):
        EmbeddingStore.open(folder, model="ViT-B-32")
    for command in (["classify", str(folder), "--labels", "a,b", "-t", "photo"], ["search", str(folder), "a"]):
        result = CliRunner().invoke(main, [*command, "--model", "ViT-B-32"])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "not ViT-B-32" in result.stderr


@pytest.mark.slow
def test_a_transformers_store_keeps_its_prefix_and_loads_back(tmp_path, monkeypatch):
    from zsclip.testing.tiny_hf import save_tiny_clip

    save_tiny_clip(tmp_path / "hf", seed=0)
    monkeypatch.chdir(tmp_path)
    encoder = zsclip.load_model("transformers:hf", device="cpu")            # a relative folder
    folder = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(folder, encoder, precision="fp32")
    assert store.model == f"transformers:{tmp_path / 'hf'}"                # prefixed, and absolute
    _render(tmp_path / "a.png", seed=1)
    embed(store, [Source(str(tmp_path / "a.png"))], encoder, OPTIONS)
    monkeypatch.chdir(tmp_path.parent)                                      # used from elsewhere
    result = CliRunner().invoke(main, ["classify", str(folder), "--labels", "a,b", "-t", "photo"])
    assert result.exit_code == 0, result.output
    assert EmbeddingStore.open(folder, model=f"transformers:{tmp_path / 'hf'}").model == store.model
    # a store written before the prefix was recorded (model = the bare folder) reads as prefixed
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["model"] = str(tmp_path / "hf")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert EmbeddingStore.open(folder).model == f"transformers:{tmp_path / 'hf'}"
    EmbeddingStore.open(folder).check_encoder(encoder)


def test_a_shard_with_a_column_twice_is_skipped_by_name(demo, tmp_path):
    folder = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    store.append(*_rows("a", 2, demo.embed_dim, 0))
    good = pq.read_table(store.shard_files[0])
    twice = good.append_column("path", pa.array(["other", "other"]))
    pq.write_table(twice, folder / "shard-00001-twice.parquet")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["shards"].append({"file": "shard-00001-twice.parquet", "rows": 2})
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(zsclip.ZsclipWarning, match="shard-00001-twice.parquet .*'path' appears more than once"):
        assert len(EmbeddingStore.open(folder)) == 2
