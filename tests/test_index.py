"""The store's ANN index (issue 37, items 1, 2 and 6): `zsclip index` builds and extends it, `zsclip search`
answers through it exactly as it answers without it (candidates rescored with the stored embeddings), rows
deleted or replaced since are never returned, a damaged or stale index is refused in one warning line (and
rebuilt by `zsclip index`), `zsclip dedup` finds planted near-duplicates, and on Ray each part is built and
searched in a task with the same answer."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import zsclip
from zsclip import shapes
from zsclip.cli import main
from zsclip.data.sources import expand_inputs
from zsclip.store import EmbeddingStore, embed
from zsclip.store.index import INDEX_FILE

pytest.importorskip("faiss")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUERIES = ["a red circle", "a blue star", "a green triangle", "a yellow ring"]


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


def _options() -> zsclip.RunOptions:
    return zsclip.RunOptions(workers=0, precision="fp32", batch_size=16)


def clustered_store(folder: Path, demo, shards: int = 3, rows: int = 400, seed: int = 0) -> Path:
    """A store of the demo model with ``shards`` shards of ``rows`` rows clustered around 40 centres (as real
    embeddings are), written with the store's own ``append``; one error row per shard."""
    store = EmbeddingStore.create_or_open(folder, demo, precision="fp32", dtype="float16")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, demo.embed_dim)).astype(np.float32)
    for shard in range(shards):
        vectors = centres[rng.integers(0, 40, rows)] + 0.5 * rng.standard_normal((rows, demo.embed_dim)) / 8
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        names = [f"/c/{shard}/{i}.jpg" for i in range(rows)] + [f"/c/{shard}/broken.jpg"]
        meta = [{"path": n, "resolved": n, "deleted": False, "width": 64, "height": 64} for n in names]
        meta[-1]["error"] = "cannot identify image file"
        store.append(meta, [*vectors, None])
    return folder


def _cli(*args: str, ok: tuple[int, ...] = (0,)):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code in ok, result.output
    return result


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _hits(path: Path) -> list[tuple[str, float]]:
    return [(row["path"], float(row["score"])) for row in _rows(path) if row.get("rank")]


def _printed(stdout: str) -> list[tuple[str, float]]:
    """The terminal's result lines (``  1. 0.1234  path``) as (path, score)."""
    return [(line.split()[2], float(line.split()[1])) for line in stdout.splitlines() if line.strip()]


def _same(indexed: list[tuple[str, float]], exact: list[tuple[str, float]], tolerance: float = 1e-5) -> None:
    assert [p for p, _ in indexed] == [p for p, _ in exact]
    assert np.allclose([s for _, s in indexed], [s for _, s in exact], atol=tolerance)


def test_index_answers_equal_exact_search_for_text_and_image_queries(demo, tmp_path, monkeypatch):
    store = clustered_store(tmp_path / "s.zse", demo)
    built = _cli("index", str(store), "--lists", "8", "--probes", "8", "--check", "50")
    line = built.stderr.strip().splitlines()[-1]
    assert "indexed 1,200 rows in 1 part" in line and "recall@10 1.000 against exact search on 50" in line, line
    sidecar = json.loads((store / INDEX_FILE).read_text())
    manifest = json.loads((store / "zsclip-store.json").read_text())
    assert sidecar["parts"][0]["shards"] == [s["file"] for s in manifest["shards"]]
    assert sidecar["parts"][0]["lists"] == 8 and sidecar["library"] == "faiss-cpu"

    from zsclip.store.index import StoreIndex

    searched = []
    original = StoreIndex.search
    monkeypatch.setattr(StoreIndex, "search", lambda self, *a, **k: searched.append(1) or original(self, *a, **k))
    for n, query in enumerate([QUERIES[0], "--image"]):
        given = ["--image", str(EXAMPLES / "blue_star.png")] if query == "--image" else [query]
        _cli("search", str(store), *given, "-k", "20", "-o", str(tmp_path / f"i{n}.csv"), ok=(1,))
        _cli("search", str(store), *given, "-k", "20", "--exact", "-o", str(tmp_path / f"e{n}.csv"), ok=(1,))
        _same(_hits(tmp_path / f"i{n}.csv"), _hits(tmp_path / f"e{n}.csv"))
        # the store's error rows are reported by both, as exact search always did
        failed = sorted(row["path"] for row in _rows(tmp_path / f"i{n}.csv") if row.get("error"))
        assert failed == sorted(row["path"] for row in _rows(tmp_path / f"e{n}.csv") if row.get("error"))
        assert len(failed) == 3
    assert len(searched) == 2  # the indexed runs went through the index, the --exact ones did not

    from zsclip.tasks.stored import search_store

    vector = demo.encode_text(["a red circle"], precision="fp32")[0]
    opened = EmbeddingStore.open(store)
    _same(search_store(opened, vector, 10), search_store(opened, vector, 10, exact=True))
    removed = _cli("index", str(store), "--remove")
    assert "removed the index" in removed.stderr and not list(store.glob("index-*"))
    assert not (store / INDEX_FILE).exists()


@pytest.mark.slow
def test_index_extends_after_a_new_embed_and_never_returns_deleted_rows(demo, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    specs = shapes.sample_specs(14, seed=5)
    for i, spec in enumerate(specs[:10]):
        shapes.render(spec).save(folder / f"{i}.png")
    store_path = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(store_path, demo, precision="fp32")
    embed(store, list(expand_inputs([str(folder)])), demo, _options())
    _cli("index", str(store_path), "--lists", "2", "--probes", "2")
    for i, spec in enumerate(specs[10:]):
        shapes.render(spec).save(folder / f"new{i}.png")
    gone = [str(folder / "0.png")]  # with the changed file, 2 of the part's 10 rows leave the view: it is kept
    for path in gone:
        Path(path).unlink()
    time.sleep(0.01)
    shapes.render(specs[0]).save(folder / "2.png")  # changed (0.png's picture): its old row is superseded
    embed(store, list(expand_inputs([str(folder)])), demo, _options())

    def answers(name: str, *extra: str) -> list[tuple[str, float]]:
        _cli("search", str(store_path), "a red circle", "-k", "100", "-o", str(tmp_path / name), *extra)
        return _hits(tmp_path / name)

    # before the index is extended: the new shard is searched exactly, deleted rows are filtered out
    before = answers("before.csv")
    _same(before, answers("exact.csv", "--exact"))
    assert len(before) == 13 and not set(gone) & {p for p, _ in before}
    assert [p for p, _ in before].count(str(folder / "2.png")) == 1  # only its new row
    extended = _cli("index", str(store_path), "--lists", "2", "--probes", "2")
    assert "in 2 parts (1 built, 1 kept)" in extended.stderr, extended.stderr
    sidecar = json.loads((store_path / INDEX_FILE).read_text())
    manifest = json.loads((store_path / "zsclip-store.json").read_text())
    assert [s for part in sidecar["parts"] for s in part["shards"]] == [s["file"] for s in manifest["shards"]]
    after = answers("after.csv")
    _same(after, answers("exact2.csv", "--exact"))
    assert not set(gone) & {p for p, _ in after}
    for i in (3, 4, 5):  # now 5 of the first part's 10 rows have left the view: `zsclip index` rebuilds it
        (folder / f"{i}.png").unlink()
    embed(store, list(expand_inputs([str(folder)])), demo, _options())
    rebuilt = _cli("index", str(store_path), "--lists", "2", "--probes", "2")
    assert "rows left the store's view" in rebuilt.stderr and "in 2 parts (1 built, 1 kept)" in rebuilt.stderr
    _same(answers("last.csv"), answers("exact3.csv", "--exact"))


@pytest.mark.parametrize("damage", ["garbled part", pytest.param("truncated vectors", marks=pytest.mark.slow),
                                    pytest.param("stale shard", marks=pytest.mark.slow),
                                    pytest.param("bad sidecar", marks=pytest.mark.slow)])
def test_a_damaged_or_stale_index_is_refused_in_one_warning_and_rebuilt(demo, tmp_path, damage):
    store = clustered_store(tmp_path / "s.zse", demo, shards=2, rows=150)
    _cli("index", str(store), "--lists", "4", "--probes", "4", "--check", "0")
    exact = _cli("search", str(store), "a blue star", "--exact", "-k", "15", ok=(1,)).stdout
    sidecar = json.loads((store / INDEX_FILE).read_text())
    stem = sidecar["parts"][0]["stem"]
    if damage == "garbled part":
        size = (store / f"{stem}.faiss").stat().st_size
        (store / f"{stem}.faiss").write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))
    elif damage == "truncated vectors":
        data = (store / f"{stem}.vectors.npy").read_bytes()
        (store / f"{stem}.vectors.npy").write_bytes(data[: len(data) // 2])
    elif damage == "stale shard":  # as after a compaction: the part names a shard the store no longer lists
        sidecar["parts"][0]["shards"][0] = "shard-00000-compacted.parquet"
        (store / INDEX_FILE).write_text(json.dumps(sidecar))
    else:
        (store / INDEX_FILE).write_text("{not json")
    searched = _cli("search", str(store), "a blue star", "-k", "15", ok=(1,))
    warnings = [line for line in searched.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "index of store" in warnings[0] and "zsclip index" in warnings[0], searched.stderr
    _same(_printed(searched.stdout), _printed(exact), 1e-4)  # answered exactly meanwhile (4 decimals printed)
    rebuilt = _cli("index", str(store), "--lists", "4", "--probes", "4", "--check", "20")
    assert "recall@10 1.000" in rebuilt.stderr
    again = _cli("search", str(store), "a blue star", "-k", "15", ok=(1,))
    assert "warning" not in again.stderr
    _same(_printed(again.stdout), _printed(exact), 1e-4)
    listed = {f"{p['stem']}{s}" for p in json.loads((store / INDEX_FILE).read_text())["parts"]
              for s in (".faiss", ".ids.npy", ".vectors.npy")}
    assert {p.name for p in store.glob("index-*")} == listed  # the damaged part's files are gone


def test_index_and_dedup_refuse_bad_input_in_one_line(tmp_path):
    for args in (["index", str(tmp_path / "missing.zse")], ["dedup", str(tmp_path / "missing.zse")],
                 ["search", str(EXAMPLES), "a star", "--exact"]):
        result = _cli(*args, ok=(2,))
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("zsclip: error:"), result.stderr
    assert "--exact applies to a store" in result.stderr


def _planted(root: Path) -> tuple[list[Path], dict[Path, Path]]:
    """Originals (the demo world's pictures and two real photographs) and copies of some: resized, re-compressed
    as JPEG at quality 40, cropped by 6% (copy -> original)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    originals = []
    for path in sorted(EXAMPLES.glob("*.png")):
        originals.append(root / path.name)
        Image.open(path).convert("RGB").save(originals[-1])
    for n, array in enumerate(load_sample_images().images):
        originals.append(root / f"photo{n}.png")
        Image.fromarray(array).save(originals[-1])
    copies = {}
    for n, original in enumerate(originals[::2]):
        picture = Image.open(original).convert("RGB")
        w, h = picture.size
        made = {"resized": picture.resize((w // 2, h // 2), Image.BICUBIC),
                "cropped": picture.crop((int(w * .03), int(h * .03), int(w * .97), int(h * .97)))}
        for kind, copy in made.items():
            copies[root / f"{kind}{n}.png"] = original
            copy.save(root / f"{kind}{n}.png")
        copies[root / f"jpeg{n}.jpg"] = original
        picture.save(root / f"jpeg{n}.jpg", quality=40)
    return originals, copies


@pytest.mark.slow
def test_dedup_finds_planted_duplicates_and_makes_no_false_groups(demo, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    originals, copies = _planted(root)
    store_path = tmp_path / "s.zse"
    store = EmbeddingStore.create_or_open(store_path, demo, precision="fp32")
    embed(store, list(expand_inputs([str(root)])), demo, _options())
    _cli("index", str(store_path))
    out = tmp_path / "duplicates.csv"
    result = _cli("dedup", str(store_path), "--threshold", "0.95", "-o", str(out))
    rows = _rows(out)
    assert list(rows[0]) == ["group", "path", "representative", "similarity"]
    groups: dict[str, set[str]] = {}
    for row in rows:
        groups.setdefault(row["group"], set()).update({row["path"], row["representative"]})
        assert float(row["similarity"]) > 0.5
    owner = {str(copy): str(original) for copy, original in copies.items()}
    found = 0
    for members in groups.values():  # no false group: every member is one original or a copy of it
        sources = {owner.get(m, m) for m in members}
        assert len(sources) == 1, members
    for copy, original in owner.items():
        found += any({copy, original} <= members for members in groups.values())
    recall = found / len(owner)
    assert recall >= 0.8, (recall, rows)
    # the representative is the largest copy (the original or its re-compressed same-size twin), never a shrunk one
    assert not any(Path(row["representative"]).name.startswith(("resized", "cropped")) for row in rows)
    assert f"{len(rows)} duplicates in {len(groups)} groups" in result.stderr


@pytest.mark.slow
def test_index_built_and_searched_on_ray_nodes_equals_the_local_answer(demo, tmp_path):
    """On the multi-node test cluster (zsclip.cluster.nodes: a head without CPUs and two 1-CPU worker nodes):
    each part built in a Ray task, each searched in a Ray task returning its partial top-k, merged on the
    driver, equal to the single-machine answer."""
    ray = pytest.importorskip("ray")
    from zsclip.cluster import RaySettings
    from zsclip.cluster.index import NODE_COUNTS, build_runner
    from zsclip.cluster.nodes import ray_nodes
    from zsclip.cluster.session import connect
    from zsclip.store.index import build

    store = clustered_store(tmp_path / "s.zse", demo, shards=4, rows=300)
    local = clustered_store(tmp_path / "local.zse", demo, shards=4, rows=300)
    # parts of 2 shards each (part_rows through the library: the CLI keeps one part per million rows)
    build(EmbeddingStore.open(local), lists=4, probes=4, part_rows=700, check_queries=0)
    if ray.is_initialized():
        ray.shutdown()
    with ray_nodes(workers=2) as cluster:
        settings = RaySettings(address=cluster.address)
        connect(settings)
        build(EmbeddingStore.open(store), lists=4, probes=4, part_rows=700, check_queries=0,
              runner=build_runner(settings))
        assert len(json.loads((store / INDEX_FILE).read_text())["parts"]) == 2 and sum(NODE_COUNTS.values()) == 2
        for query in QUERIES[:2]:
            on_ray = _cli("search", str(store), query, "-k", "25", "--ray", cluster.address, "-o",
                          str(tmp_path / "r.csv"), ok=(1,))
            assert sum(NODE_COUNTS.values()) == 2, on_ray.output  # one task per part
            _cli("search", str(local), query, "-k", "25", "-o", str(tmp_path / "l.csv"), ok=(1,))
            _same(_hits(tmp_path / "r.csv"), _hits(tmp_path / "l.csv"))
        ray.shutdown()


def test_index_cli_refuses_remove_with_build_options(tmp_path):
    result = _cli("index", str(tmp_path / "s.zse"), "--remove", "--rebuild", ok=(2,))
    assert "--remove deletes the index" in result.stderr and len(io.StringIO(result.stderr).readlines()) == 1


@pytest.mark.slow
def test_the_service_searches_an_indexed_store_as_the_cli_does(demo, tmp_path):
    pytest.importorskip("fastapi")
    import httpx

    from test_serve import _start, _stop

    store = clustered_store(tmp_path / "s.zse", demo, shards=2, rows=200)
    _cli("index", str(store), "--lists", "4", "--probes", "4", "--check", "0")
    exact = _printed(_cli("search", str(store), "a green star", "--exact", "-k", "12", ok=(1,)).stdout)
    process, url = _start("--store", str(store))
    try:
        response = httpx.post(f"{url}/v1/search", data={"text": "a green star", "top_k": "12"}, timeout=60)
    finally:
        _stop(process)
    assert response.status_code == 200, response.text
    _same([(r["path"], r["score"]) for r in response.json()["results"]], exact, 1e-4)


def test_rescoring_scores_each_live_candidate_once_best_first():
    """The batched rescoring equals scoring each query's candidates one by one: padding (-1), rows no longer in
    the view and a position named twice are left out; float32 dot products with the stored float16 vectors."""
    from zsclip.store.index import rescored

    rng = np.random.default_rng(3)
    for _ in range(10):
        vectors = rng.standard_normal((100, 16)).astype(np.float16)
        queries = rng.standard_normal((3, 16)).astype(np.float32)
        found = rng.choice(100, (3, 60))
        found[0, :5] = -1
        alive = rng.random(100) > 0.3
        positions, scores = rescored(found, vectors, queries, 10, alive)
        for i in range(3):
            rows = np.unique(found[i][found[i] >= 0])
            rows = rows[alive[rows]]
            exact = vectors[rows].astype(np.float32) @ queries[i]
            order = np.argsort(-exact, kind="stable")[:10]
            assert positions[i][:len(order)].tolist() == rows[order].tolist()
            assert (positions[i][len(order):] == -1).all()
            assert np.allclose(scores[i][:len(order)], exact[order], atol=1e-5)


def test_indexed_search_names_rows_from_every_row_group_of_a_shard(tmp_path):
    """Hits are named by reading only the row groups that hold them (``describe_rows``): a stored row searched
    with its own vector comes back first under its own path, wherever it sits in its shard (first, last, either
    side of a row-group boundary) and in whichever shard."""
    import torch

    from zsclip.store.index import build
    from zsclip.store.store import ROW_GROUP_ROWS
    from zsclip.tasks.search import search_store
    from zsclip.testing.stores import synthetic_store

    store = synthetic_store(tmp_path / "s.zse", 2 * 10_000, 16, shard_rows=10_000, clusters=2000)
    build(store, check_queries=0)
    store = EmbeddingStore.open(tmp_path / "s.zse")
    picks = [0, ROW_GROUP_ROWS - 1, ROW_GROUP_ROWS, 2 * ROW_GROUP_ROWS + 7, 9_999, 10_000, 10_000 + ROW_GROUP_ROWS,
             19_999]
    vectors = {}
    for batch in store.batches(8192):
        for path, vector in zip(batch.paths, batch.embeddings, strict=True):
            vectors[path] = vector
    for n in picks:
        path = f"/synthetic/{n:09d}.jpg"
        hits = search_store(store, torch.from_numpy(np.asarray(vectors[path], dtype=np.float32)), top_k=3)
        assert hits[0][0] == path
        assert len({p for p, _ in hits}) == 3
