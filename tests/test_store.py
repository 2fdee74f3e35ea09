"""The embedding store (issue 12): kill-and-resume equality, incremental add/change/delete,
clip-retrieval's layout, classification and eval from a store equal to the images', search, flat
memory while streaming, Parquet output, and every bad store in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
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
from zsclip.data.sources import expand_inputs
from zsclip.store import EmbeddingStore, StoreError, embed, open_store
from zsclip.store.format import MANIFEST, schema
from zsclip.tasks.classify import classify_items
from zsclip.tasks.stored import classify_store, evaluate_store, search_store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LABELS = [line for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line and line[0] != "#"]


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A labelled tree of demo-world images (4 classes x 6), plus one broken file."""
    root = tmp_path_factory.mktemp("store_photos")
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "ring")):
        folder = root / f"{colour}_{shape}"
        folder.mkdir()
        for index, spec in enumerate(shapes.sample_specs(6, seed=len(colour) * 7 + len(shape))):
            spec = shapes.ShapeSpec(colour, shape, spec.background, spec.radius, spec.centre, spec.rotation)
            shapes.render(spec).save(folder / f"{index}.png")
    (root / "red_circle" / "broken.png").write_bytes(b"not a png")
    return root


def _options(**changes) -> zsclip.RunOptions:
    return zsclip.RunOptions(workers=0, precision="fp32", batch_size=8, **changes)


def _view(store: EmbeddingStore) -> dict[str, tuple[str | None, bytes | None]]:
    out = {}
    rows = 0
    for batch in store.batches():
        embeddings = iter(batch.embeddings)
        for path, error in zip(batch.paths, batch.errors, strict=True):
            out[path] = (error, None if error else next(embeddings).tobytes())
            rows += 1
    assert rows == len(out)  # nothing duplicated in the view
    return out


def test_classifying_a_store_equals_classifying_the_images(demo, photos, tmp_path):
    sources = list(expand_inputs([str(photos)]))
    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32", dtype="float32")
    report = embed(store, sources, demo, _options(), commit_every=7)
    assert (report.encoded, report.failed, report.shards) == (24, 1, 4)
    classifier = zsclip.ZeroShotClassifier.build(demo, LABELS, "photo", precision="fp32")
    direct = list(classify_items(sources, classifier, demo, top_k=3, options=_options()))
    stored = list(classify_store(EmbeddingStore.open(tmp_path / "s.zse"), classifier, top_k=3))
    assert [p.source for p in stored] == [p.source for p in direct]
    for a, b in zip(direct, stored, strict=True):
        assert a.labels == b.labels and (a.error is None) == (b.error is None)
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def _close(a, b) -> bool:
    """Nested measures equal within float rounding (dicts by key, lists by item, numbers to 1e-6)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-6)
    return a == b


def test_eval_from_a_store_equals_eval_from_the_folder(demo, photos, tmp_path):
    out = tmp_path / "tree.zse"
    result = CliRunner().invoke(main, ["embed", str(photos), "--labelled", "-o", str(out), "-m", "demo",
                                       "--dtype", "float32", "--precision", "fp32", "-j", "0"])
    assert result.exit_code == 1, result.output  # the broken file is recorded as a failed row
    from_store = evaluate_store(EmbeddingStore.open(out), demo, "photo", precision="fp32")
    from_folder = zsclip.evaluate(photos, demo, "photo", options=_options())
    stored, direct = dict(from_store.metrics["photo"]), dict(from_folder.metrics["photo"])
    # counts are equal exactly; the calibration measures are float sums, equal up to summation order
    stored_calibration, direct_calibration = stored.pop("calibration"), direct.pop("calibration")
    assert stored == direct
    assert _close(stored_calibration, direct_calibration), (stored_calibration, direct_calibration)
    assert [f["path"] for f in from_store.failures] == [f["path"] for f in from_folder.failures]
    cli = CliRunner().invoke(main, ["eval", "--data", str(out), "-t", "photo", "-o", str(tmp_path / "r.json")])
    assert cli.exit_code == 1 and json.loads((tmp_path / "r.json").read_text())["metrics"]["acc1"] == pytest.approx(
        from_folder.metrics["photo"]["acc1"])


@pytest.mark.slow
def test_a_killed_embed_resumes_to_the_same_store(photos, tmp_path):
    big = tmp_path / "many"
    big.mkdir()
    for index, spec in enumerate(shapes.sample_specs(240, seed=5)):
        shapes.render(spec).save(big / f"{index:04d}.png")
    command = [sys.executable, "-m", "zsclip", "embed", str(big), "-m", "demo", "--commit-every", "16", "-j", "0",
               "-b", "8", "--precision", "fp32"]
    env = {**os.environ, "ZSCLIP_CACHE_DIR": str(tmp_path / "cache")}
    killed_store = tmp_path / "killed.zse"
    process = subprocess.Popen([*command, "-o", str(killed_store)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        manifest = killed_store / MANIFEST
        if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    committed = len(json.loads((killed_store / MANIFEST).read_text())["shards"])
    assert 3 <= committed < 15, "the run should have been killed part-way"
    resumed = subprocess.run([*command, "-o", str(killed_store)], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{16 * committed} unchanged" in resumed.stderr  # nothing committed was encoded again
    whole = subprocess.run([*command, "-o", str(tmp_path / "whole.zse")], env=env, capture_output=True, timeout=300)
    assert whole.returncode == 0
    assert _view(EmbeddingStore.open(killed_store)) == _view(EmbeddingStore.open(tmp_path / "whole.zse"))
    assert not [p for p in killed_store.glob("*.parquet")
                if p.name not in (killed_store / MANIFEST).read_text()]  # the uncommitted shard was removed


def test_new_changed_and_deleted_files(demo, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    specs = shapes.sample_specs(4, seed=9)
    for index, spec in enumerate(specs[:3]):
        shapes.render(spec).save(folder / f"{index}.png")
    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32")
    embed(store, list(expand_inputs([str(folder)])), demo, _options())
    before = _view(store)
    shapes.render(specs[3]).save(folder / "new.png")                 # added
    time.sleep(0.01)
    shapes.render(specs[3]).save(folder / "0.png")                   # changed (other picture, new mtime)
    (folder / "1.png").unlink()                                      # deleted
    report = embed(store, list(expand_inputs([str(folder)])), demo, _options())
    assert (report.encoded, report.skipped, report.deleted) == (2, 1, 1)
    after = _view(store)
    assert set(after) == {str(folder / n) for n in ("0.png", "2.png", "new.png")}
    assert after[str(folder / "0.png")] != before[str(folder / "0.png")]
    assert after[str(folder / "0.png")] == after[str(folder / "new.png")]  # same picture, same embedding
    assert after[str(folder / "2.png")] == before[str(folder / "2.png")]


def test_clip_retrievals_layout_opens_as_a_store(demo, photos, tmp_path):
    sources = [s for s in expand_inputs([str(photos)]) if not s.name.endswith("broken.png")]
    features = torch.cat([f for _, _, f in zsclip.pipeline.feature_batches(sources, demo, _options())])
    (tmp_path / "cr" / "img_emb").mkdir(parents=True)
    (tmp_path / "cr" / "metadata").mkdir()
    for part, rows in enumerate((slice(0, 10), slice(10, None))):
        np.save(tmp_path / "cr" / "img_emb" / f"img_emb_{part}.npy", features[rows].numpy().astype(np.float16))
        pq.write_table(pa.table({"image_path": [s.name for s in sources[rows]]}),
                       tmp_path / "cr" / "metadata" / f"metadata_{part}.parquet")
    with pytest.raises(StoreError, match="name the model"):
        open_store(tmp_path / "cr")
    with pytest.raises(StoreError, match="clip-retrieval output, not a zsclip store: open it with .*open_store"):
        EmbeddingStore.open(tmp_path / "cr", model="demo")  # the zsclip store's own reader says where it goes
    store = open_store(tmp_path / "cr", model="demo")
    classifier = zsclip.ZeroShotClassifier.build(demo, LABELS, "photo", precision="fp32")
    stored = list(classify_store(store, classifier, top_k=1))
    direct = list(classify_items(sources, classifier, demo, top_k=1, options=_options()))
    assert [p.labels for p in stored] == [p.labels for p in direct] and len(stored) == 24
    result = CliRunner().invoke(main, ["classify", str(tmp_path / "cr"), "--model", "demo", "--labels-file",
                                       str(EXAMPLES / "labels.txt"), "-t", "photo", "-o", str(tmp_path / "r.parquet")])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.num_rows == 24 and table.column_names == ["path", "labels", "scores", "error"]


def test_search_ranks_the_known_image_first(demo, photos, tmp_path):
    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32", dtype="float32")
    embed(store, list(expand_inputs([str(photos)])), demo, _options())
    target = str(photos / "green_star" / "3.png")
    query = torch.cat([f for _, _, f in zsclip.pipeline.feature_batches([zsclip.Source(target)], demo, _options())])
    results = search_store(store, query[0], top_k=5)
    assert results[0][0] == target and results[0][1] == pytest.approx(1.0, abs=1e-5)
    text = CliRunner().invoke(main, ["search", str(tmp_path / "s.zse"), "a green star", "-k", "3"])
    assert text.stdout.count("green_star") >= 2
    # the store's error row (broken.png failed when embedded) is reported as classify reports it
    assert text.exit_code == 1 and "zsclip: skipped" in text.stderr and "broken.png" in text.stderr, text.output


@pytest.mark.slow
def test_streaming_memory_does_not_grow_with_the_number_of_shards(demo, tmp_path):
    def build(shards: int) -> EmbeddingStore:
        store = EmbeddingStore.create_or_open(tmp_path / f"{shards}.zse", demo, precision="fp32", dtype="float32")
        rng = np.random.default_rng(0)
        for shard in range(shards):
            rows = [{"path": f"{shard}/{i}", "resolved": f"/{shard}/{i}", "deleted": False} for i in range(20_000)]
            vectors = list(rng.standard_normal((20_000, demo.embed_dim)).astype(np.float32))
            store.append(rows, vectors)
        return EmbeddingStore.open(tmp_path / f"{shards}.zse")

    peaks = {}
    for shards in (2, 8):
        store = build(shards)
        tracemalloc.start()
        count = sum(len(batch.embeddings) for batch in store.batches(batch_size=4096))
        peaks[shards] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == 20_000 * shards
    embeddings_8 = 8 * 20_000 * demo.embed_dim * 4
    assert peaks[8] < embeddings_8 / 4  # a fraction of the store: batches are streamed, not collected
    assert peaks[8] < 2.5 * peaks[2]  # 4x the shards: what grows is the view's one small entry per path


@pytest.mark.parametrize("damage", ["not a store", "newer version", "empty", "truncated shard",
                                    pytest.param("other model", marks=pytest.mark.slow)])  # loads a second model
def test_bad_stores_are_one_line(demo, photos, tmp_path, damage):
    folder = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    if damage != "empty":
        embed(store, list(expand_inputs([str(photos)])), demo, _options(), commit_every=10)
    labels = ["--labels", "red circle,blue square", "-t", "photo"]
    if damage == "not a store":
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "x.txt").write_text("x")
        with pytest.raises(StoreError, match="not a zsclip store"):
            EmbeddingStore.open(tmp_path / "plain")
        return
    if damage == "newer version":
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["version"] = 99
        (folder / MANIFEST).write_text(json.dumps(manifest))
    if damage == "truncated shard":
        shard = store.shard_files[1]
        shard.write_bytes(shard.read_bytes()[:200])
        with pytest.warns(zsclip.ZsclipWarning, match=shard.name):
            rows = list(classify_store(EmbeddingStore.open(folder),
                                       zsclip.ZeroShotClassifier.build(demo, LABELS, "photo"), top_k=1))
        assert len(rows) == 25 - 10  # the other shards still work
        return
    args = ["classify", str(folder), *labels] + (["--model", str(tmp_path)] if damage == "other model" else [])
    if damage == "other model":
        wider = zsclip.load_model("ViT-B-32", pretrained="random")
        other = zsclip.ZeroShotClassifier.build(wider, ["a", "b"], "photo", cache=False)
        with pytest.raises(zsclip.ClassifierFileError, match="takes 512-d features"):
            list(classify_store(EmbeddingStore.open(folder), other))
        with pytest.raises(StoreError, match="512-d ones"):
            EmbeddingStore.open(folder).check_encoder(wider)
        retrained = EmbeddingStore.open(folder)
        retrained.manifest["fingerprint"] = "open_clip:w2:0000"  # as if made by other weights of the same model
        with pytest.raises(StoreError, match="holds embeddings of demo with other weights"):
            retrained.check_encoder(demo)
        same_width = zsclip.ZeroShotClassifier.build(demo, ["a", "b"], "photo", cache=False)
        same_width.provenance["fingerprint"] = "another-model"  # as a classifier file of another 64-d model says
        with pytest.raises(zsclip.ClassifierFileError, match="rebuild the classifier"):
            list(classify_store(EmbeddingStore.open(folder), same_width))
        return
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert {"newer version": "newer than this zsclip", "empty": "is empty"}[damage] in result.stderr


def test_float16_storage_keeps_top1(demo, photos, tmp_path):
    sources = list(expand_inputs([str(photos)]))
    classifier = zsclip.ZeroShotClassifier.build(demo, LABELS, "photo", precision="fp32")
    answers = {}
    for dtype in ("float16", "float32"):
        store = EmbeddingStore.create_or_open(tmp_path / f"{dtype}.zse", demo, precision="fp32", dtype=dtype)
        embed(store, sources, demo, _options())
        answers[dtype] = [p.labels[:1] for p in classify_store(store, classifier, top_k=1)]
    assert answers["float16"] == answers["float32"]


@pytest.mark.slow
def test_a_store_at_a_pyarrow_filesystem_uri(demo, photos, tmp_path):
    """file:// goes through the same code as s3:// or gs:// (pyarrow.fs, no rename, no lock)."""
    uri = (tmp_path / "remote.zse").as_uri()
    common = ["-m", "demo", "--precision", "fp32", "-j", "0", "--commit-every", "10"]
    first = CliRunner().invoke(main, ["embed", str(photos), "-o", uri, *common])
    assert first.exit_code == 1 and "24 encoded" in first.stderr, first.output
    again = CliRunner().invoke(main, ["embed", str(photos), "-o", uri, *common])
    assert "0 encoded, 25 unchanged" in again.stderr
    remote = EmbeddingStore.open(uri)
    assert remote.location.local is None and len(remote) == 25
    assert all(str(path).startswith("file://") for path in remote.shard_files)
    local = EmbeddingStore.create_or_open(tmp_path / "local.zse", demo, precision="fp32")
    embed(local, list(expand_inputs([str(photos)])), demo, _options())
    assert _view(remote) == _view(local)
    result = CliRunner().invoke(main, ["classify", uri, "--labels-file", str(EXAMPLES / "labels.txt"), "-t", "photo",
                                       "-o", str(tmp_path / "r.csv")])
    assert result.exit_code == 1 and "classified 24 of 25" in result.stderr


def _clip_retrieval_folder(root: Path, parts: list[np.ndarray]) -> Path:
    """clip-retrieval's layout, as it writes it: img_emb/img_emb_N.npy + metadata/metadata_N.parquet."""
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    for part, embeddings in enumerate(parts):
        np.save(root / "img_emb" / f"img_emb_{part}.npy", embeddings.astype(np.float16))
        pq.write_table(pa.table({"image_path": [f"part{part}/{i}.jpg" for i in range(len(embeddings))],
                                 "caption": ["a caption"] * len(embeddings)}),
                       root / "metadata" / f"metadata_{part}.parquet")
    return root


def test_damaged_clip_retrieval_parts_are_skipped_by_name(demo, tmp_path):
    rng = np.random.default_rng(1)
    folder = _clip_retrieval_folder(tmp_path / "cr", [rng.standard_normal((5, demo.embed_dim)) for _ in range(4)])
    array = folder / "img_emb" / "img_emb_1.npy"
    array.write_bytes(array.read_bytes()[:300])                          # truncated array
    (folder / "metadata" / "metadata_2.parquet").unlink()                # a part without its metadata
    pq.write_table(pa.table({"image_path": ["x"] * 4}), folder / "metadata" / "metadata_3.parquet")  # 4 rows for 5
    store = open_store(folder, model="demo")
    with pytest.warns(zsclip.ZsclipWarning) as caught:
        paths = [p for batch in store.batches(batch_size=2) for p in batch.paths]
    assert paths == [f"part0/{i}.jpg" for i in range(5)]                 # the readable part, streamed in batches
    assert sorted(str(w.message).split()[2] for w in caught) == ["img_emb_1.npy", "img_emb_2.npy", "img_emb_3.npy"]
    assert len(store) == 5


def test_a_store_of_another_width_is_refused_in_one_line(tmp_path):
    folder = _clip_retrieval_folder(tmp_path / "cr", [np.ones((3, 512))])
    result = CliRunner().invoke(main, ["classify", str(folder), "--model", "demo", "--labels", "a,b", "-t", "photo"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"zsclip: error: store {folder} holds 512-d embeddings, but model demo makes 64-d ones: use the model that "
        "made the store"]


def test_a_foreign_shard_is_skipped_by_name_and_reported_once(demo, photos, tmp_path):
    folder = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(folder, demo, precision="fp32", dtype="float32")
    embed(store, list(expand_inputs([str(photos)])), demo, _options(), commit_every=10)
    # a shard of another store's width, listed in this store's manifest (e.g. copied in by hand)
    columns = {"path": ["x.png"], "resolved": ["/elsewhere/x.png"], "deleted": [False], "embedding": [[0.5] * 32]}
    foreign = pa.table({field.name: columns.get(field.name, [None]) for field in schema(32, "float32")},
                       schema=schema(32, "float32"))
    pq.write_table(foreign, folder / "shard-00009-foreign.parquet")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["shards"].append({"file": "shard-00009-foreign.parquet", "rows": 1})
    (folder / MANIFEST).write_text(json.dumps(manifest))
    truncated = EmbeddingStore.open(folder).shard_files[0]
    truncated.write_bytes(truncated.read_bytes()[:100])
    result = CliRunner().invoke(main, ["classify", str(folder), "--labels-file", str(EXAMPLES / "labels.txt"),
                                       "-t", "photo", "-o", str(tmp_path / "r.parquet")])
    assert result.exit_code == 1, result.output                         # the broken.png row is still an error row
    warned = [line for line in result.stderr.splitlines() if "cannot be read" in line]
    assert len(warned) == 2 and "shard-00009-foreign.parquet" in warned[1] and "'embedding'" in warned[1]
    assert truncated.name in warned[0]
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 25 - 10    # the two good shards


def test_a_killed_writers_temporary_files_are_removed_by_the_next_writer(demo, photos, tmp_path):
    folder = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(folder, demo, precision="fp32")
    embed(store, list(expand_inputs([str(photos / "red_circle")])), demo, _options())
    # what a SIGKILL during a shard write / a manifest write / after the rename leaves behind
    leftovers = [".shard-00001-0123abcd.parquet.x7k2.partial", f".{MANIFEST}.q9w1.partial",
                 "shard-00001-0123abcd.parquet"]
    for name in leftovers:
        (folder / name).write_bytes(b"half a file")
    kept = {p.name for p in folder.iterdir()} - set(leftovers)
    report = embed(EmbeddingStore.open(folder), list(expand_inputs([str(photos / "red_circle")])), demo, _options())
    assert report.skipped == 7 and report.encoded == 0
    assert {p.name for p in folder.iterdir()} == kept                  # only the leftovers went


def test_a_store_handle_sees_video_clips_in_a_shard_appended_after_it_asked(tmp_path):
    """``timed`` (whether a store holds video clips, asked by every search) reads each shard's footer once per
    handle: a shard appended later is still read, so a clip shard makes the same handle timed, and a fresh
    handle agrees."""
    from zsclip.testing.stores import synthetic_rows, synthetic_store

    store = synthetic_store(tmp_path / "s.zse", 20, 8, shard_rows=10)
    assert store.timed is False
    assert store.timed is False  # asked again: from what it read
    rows = [dict(row, start=float(i), end=float(i) + 1.0) for i, row in enumerate(synthetic_rows(20, 5))]
    store.append(rows, np.eye(5, 8, dtype=np.float32))
    assert store.timed is True
    assert EmbeddingStore.open(tmp_path / "s.zse").timed is True
