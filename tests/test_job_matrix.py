"""The job matrix: every head on every source through every entry point, the same answer.

Sources: image files, WebDataset shards, an embedding store (float32 and float16). Heads: labels,
a classifier file, a label tree in each mode (built, and from a tree classifier file), fixed and
calibrated rejection, descriptions, multi-label with fixed thresholds and with thresholds calibrated
on a multi-label manifest or on a store embedded from it. Entry points: the Python API, the CLI, HTTP (a real server on
127.0.0.1) and Ray (marked slow). Each answer is compared with the Python API on the image files:
the same top-1 and scores within 1e-5 (fp32). Combinations that cannot apply are refused while the
options are parsed, in one line.
"""

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import zsclip
from zsclip.cli import main
from zsclip.data.sources import expand_inputs
from zsclip.hierarchy import TreeClassifier, read_tree
from zsclip.store import EmbeddingStore, embed

pytestmark = pytest.mark.slow  # the whole matrix is end-to-end: `pytest -m "not slow"` leaves it to CI

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = [p.stem for p in sorted(EXAMPLES.glob("*.png"))]
LABELS = [name.replace("_", " ") for name in NAMES]
SHAPES = sorted({label.split()[1] for label in LABELS})
OPTIONS = zsclip.RunOptions(precision="fp32", workers=0, batch_size=4)
CLI_COMMON = ["--model", "demo", "--precision", "fp32", "-j", "0", "-b", "4"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_behind():
    """The Ray cases start a local instance (and keep a warm actor pool); it ends with this module, so
    the modules after it do not run beside an idle Ray."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo")


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo):
    root = tmp_path_factory.mktemp("matrix")
    images = root / "images"
    images.mkdir()
    for name in NAMES:
        shutil.copy(EXAMPLES / f"{name}.png", images / f"{name}.png")
    with tarfile.open(root / "shard.tar", "w") as archive:
        for name in NAMES:
            data = (images / f"{name}.png").read_bytes()
            info = tarfile.TarInfo(f"{name}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    for dtype in ("float32", "float16"):
        store = EmbeddingStore.create_or_open(root / f"{dtype}.zse", demo, precision="fp32", dtype=dtype)
        embed(store, list(expand_inputs([str(images)])), demo, OPTIONS)
    tree = root / "tree.yaml"
    tree.write_text("".join(f"{shape}:\n" + "".join(f"  - {label}\n" for label in LABELS if label.endswith(shape))
                            for shape in SHAPES))
    zsclip.ZeroShotClassifier.build(demo, LABELS, "photo", cache=False).save(root / "flat.zsc")
    TreeClassifier.build(demo, read_tree(tree), "photo", cache=False).save(root / "tree.zsct")
    (root / "descriptions.json").write_text(json.dumps({"red triangle": ["a red shape with three corners"],
                                                        "blue ring": ["a blue circle with a hole"]}))
    # multi-label calibration data: each image with its own label, and a few with a second one (its colour's
    # other shape in the set), as a manifest and as a store embedded from it
    (root / "tags.csv").write_text("path,labels\n" + "".join(
        f"images/{name}.png,{label}" + "".join(f";{other}" for other in LABELS[:2] if index % 3 == 0 and other != label)
        + "\n" for index, (name, label) in enumerate(zip(NAMES, LABELS, strict=True))))
    collection = zsclip.open_collection(root / "tags.csv")[0]
    store = EmbeddingStore.create_or_open(root / "tags.zse", demo, precision="fp32", dtype="float32",
                                          classnames=collection.classnames, multi_label=True)
    embed(store, collection.labelled_sources(), demo, OPTIONS)
    return root


def heads(world: Path) -> dict[str, tuple[dict, list[str]]]:
    """head name -> (Python keyword arguments, CLI options)."""
    labels = ",".join(LABELS)
    return {
        "labels": ({"labels": LABELS, "templates": "photo", "top_k": 3},
                   ["--labels", labels, "-t", "photo", "-k", "3"]),
        "classifier file": ({"classifier": world / "flat.zsc"}, ["--classifier", str(world / "flat.zsc")]),
        "tree flat": ({"labels_tree": world / "tree.yaml", "templates": "photo"},
                      ["--labels-tree", str(world / "tree.yaml"), "-t", "photo"]),
        "tree top-down": ({"labels_tree": world / "tree.yaml", "templates": "photo", "tree_mode": "top-down",
                           "beam": 2}, ["--labels-tree", str(world / "tree.yaml"), "-t", "photo", "--tree-mode",
                                        "top-down", "--beam", "2"]),
        "tree file chils": ({"classifier": world / "tree.zsct", "tree_mode": "chils"},
                            ["--classifier", str(world / "tree.zsct"), "--tree-mode", "chils"]),
        "reject fixed": ({"labels": LABELS, "templates": "photo", "reject": 0.3},
                         ["--labels", labels, "-t", "photo", "--reject", "0.3"]),
        "reject calibrated tree": ({"labels_tree": world / "tree.yaml", "templates": "photo",
                                    "reject_calibrate": str(world / "images"), "tpr": 0.7},
                                   ["--labels-tree", str(world / "tree.yaml"), "-t", "photo", "--reject-calibrate",
                                    str(world / "images"), "--tpr", "0.7"]),
        "descriptions": ({"labels": LABELS, "templates": "photo", "descriptions": world / "descriptions.json"},
                         ["--labels", labels, "-t", "photo", "--descriptions", str(world / "descriptions.json")]),
        "multi-label fixed": ({"labels": LABELS, "templates": "photo", "multi_label": True, "threshold": 0.3},
                              ["--labels", labels, "-t", "photo", "--multi-label", "--threshold", "0.3"]),
        "multi-label calibrated": ({"labels": LABELS, "templates": "photo", "multi_label": True,
                                    "calibrate": world / "tags.csv", "target_precision": 0.6},
                                   ["--labels", labels, "-t", "photo", "--multi-label", "--calibrate",
                                    str(world / "tags.csv"), "--target-precision", "0.6"]),
        "multi-label calibrated on a store": ({"labels": LABELS, "templates": "photo", "multi_label": True,
                                               "calibrate": world / "tags.zse"},
                                              ["--labels", labels, "-t", "photo", "--multi-label", "--calibrate",
                                               str(world / "tags.zse")]),
    }


HEAD_NAMES = ["labels", "classifier file", "tree flat", "tree top-down", "tree file chils", "reject fixed",
              "reject calibrated tree", "descriptions", "multi-label fixed", "multi-label calibrated",
              "multi-label calibrated on a store"]
SOURCES = {"images": "images", "shards": "shard.tar", "store": "float32.zse"}


def key(source: str) -> str:
    return Path(source.split("#")[-1]).stem


def answers_by_name(rows) -> dict[str, tuple]:
    """name -> (labels, scores, record without probabilities-as-None ambiguity), from Predictions."""
    return {key(r.source): (r.labels[:1], r.scores[:1], r.record, r.error) for r in rows}


def from_jsonl(path: Path) -> dict[str, tuple]:
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "predictions" in row:
            out[key(row["path"])] = ([p["label"] for p in row["predictions"]][:1],
                                     [p["score"] for p in row["predictions"]][:1], None, row["error"])
        else:
            record = {k: v for k, v in row.items() if k not in ("path", "error")}
            out[key(row["path"])] = (None, None, record, row["error"])
    return out


def same(expected: dict, got: dict, tolerance: float = TOLERANCE) -> None:
    assert sorted(got) == sorted(expected)
    for name, (labels, scores, record, error) in expected.items():
        g_labels, g_scores, g_record, g_error = got[name]
        assert error is None and g_error is None, (name, g_error)
        if g_labels is not None:
            assert g_labels == labels, name
            assert g_scores == pytest.approx(scores, abs=tolerance), name
        if g_record is not None or record is not None:
            assert record is not None and g_record is not None, name
            assert set(g_record) == set(record), name
            for field, value in record.items():
                if isinstance(value, float) or (isinstance(value, list) and value
                                                and all(isinstance(v, float) for v in value)):
                    assert g_record[field] == pytest.approx(value, abs=tolerance), (name, field)
                else:
                    assert g_record[field] == value, (name, field)


@pytest.fixture(scope="module")
def reference(world):
    """Every head's answers from the Python API on the image files."""
    return {head: answers_by_name(zsclip.classify(world / "images", model="demo", options=OPTIONS, **kwargs))
            for head, (kwargs, _) in heads(world).items()}


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_python_api_gives_the_same_answer_on_every_source(world, reference, source, head):
    kwargs, _ = heads(world)[head]
    rows = zsclip.classify(world / SOURCES[source], model="demo", options=OPTIONS, **kwargs)
    same(reference[head], answers_by_name(rows))


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_cli_gives_the_same_answer_on_every_source(world, reference, source, head, tmp_path):
    _, options = heads(world)[head]
    out = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(main, ["classify", str(world / SOURCES[source]), *options, *CLI_COMMON,
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    expected = reference[head]
    got = from_jsonl(out)
    if next(iter(got.values()))[0] is None:  # record rows: compare the records only
        expected = {name: (None, None, record, error) for name, (_, _, record, error) in expected.items()}
    same(expected, got, 1e-6 + TOLERANCE)  # JSON rounds scores to 6 decimals


def test_a_float16_store_gives_the_same_rejections_as_its_images(world):
    kwargs, _ = heads(world)["reject calibrated tree"]
    images = answers_by_name(zsclip.classify(world / "images", model="demo", options=OPTIONS, **kwargs))
    stored = answers_by_name(zsclip.classify(world / "float16.zse", options=OPTIONS, **kwargs))
    rejected = {name for name, (_, _, record, _) in images.items() if record["level1"] == "none"}
    assert rejected == {name for name, (_, _, record, _) in stored.items() if record["level1"] == "none"}
    assert 0 < len(rejected) < len(NAMES)  # the threshold keeps 70%: some are rejected, not all


def test_eval_takes_a_classifier_file_a_tree_and_unknown_images_on_images_and_stores(world, demo, tmp_path):
    manifest = tmp_path / "labelled.csv"
    manifest.write_text("path,label\n" + "".join(f"{world}/images/{n}.png,{label}\n"
                                                 for n, label in zip(NAMES, LABELS, strict=True)))
    store = EmbeddingStore.create_or_open(tmp_path / "l.zse", demo, precision="fp32", dtype="float32",
                                          classnames=LABELS)
    collection = zsclip.open_collection(manifest)[0]
    embed(store, collection.items, demo, OPTIONS)
    for data in (manifest, tmp_path / "l.zse"):
        flat = zsclip.evaluate(data, classifier=world / "flat.zsc", options=OPTIONS)
        built = zsclip.evaluate(data, demo, "photo", options=OPTIONS)
        assert flat.metrics["flat.zsc"]["acc1"] == built.metrics["photo"]["acc1"]
        tree = zsclip.evaluate(data, demo, "photo", labels_tree=world / "tree.yaml", unknown=EXAMPLES,
                               options=OPTIONS)
        assert set(tree.tree["modes"]) == {"flat", "top-down", "chils"} and tree.openset["mcm"]["num_unknown"] == 10
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "l.zse"), "--labels-tree",
                                       str(world / "tree.yaml"), "--unknown", str(EXAMPLES), "-t", "photo",
                                       "-o", str(out), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["modes"]["flat"]["levels"][0]["accuracy"] is not None and "openset" in record


def test_search_writes_a_file_from_a_store_and_from_images(world, tmp_path):
    for source in ("float32.zse", "images"):
        out = tmp_path / f"{source}.csv"
        result = CliRunner().invoke(main, ["search", str(world / source), "a red triangle", "-k", "3", "-o", str(out),
                                           "--model", "demo"])
        assert result.exit_code == 0, result.output
        lines = out.read_text().splitlines()
        assert lines[0] == "path,rank,score,error" and "red_triangle" in lines[1]


REFUSED = [
    (["--labels", "a,b", "--tree-mode", "chils"], "--tree-mode"),
    (["--labels", "a,b", "--beam", "2"], "--beam"),
    (["--classifier", "{world}/flat.zsc", "--labels", "a,b"], "classifier file"),
    (["--classifier", "{world}/flat.zsc", "--descriptions", "{world}/descriptions.json"], "classifier file"),
    (["--labels", "a,b", "--reject", "0.5", "--reject-calibrate", "{world}/images"], "not both"),
    (["--labels", "a,b", "--tpr", "0.9"], "--tpr"),
    (["--labels", "a,b", "--reject-label", "other"], "--reject-label"),
    (["--labels-tree", "{world}/tree.yaml", "--top-k", "2"], "--top-k"),
    (["--labels-tree", "{world}/tree.yaml", "--labels", "a,b"], "label tree"),
    (["--labels-tree", "{world}/tree.yaml", "--tree-mode", "chils", "--beam", "2"], "--beam"),
    (["--labels", "a,b", "-o", "{tmp}/x.txt"], "unknown format"),
    (["--labels", "a,b", "--ray-actors", "2"], "--ray-actors"),
]


@pytest.mark.parametrize("options,message", REFUSED)
def test_options_that_cannot_apply_are_refused_in_one_line(world, tmp_path, options, message):
    options = [o.format(world=world, tmp=tmp_path) for o in options]
    result = CliRunner().invoke(main, ["classify", str(world / "images"), *options, *CLI_COMMON])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("zsclip: error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_a_store_refuses_another_model_and_eval_refuses_a_csv_output(world, tmp_path):
    result = CliRunner().invoke(main, ["classify", str(world / "float32.zse"), "--labels", "a,b", "--model",
                                       "ViT-B-16"])
    assert result.exit_code == 2 and "holds embeddings of model demo, not ViT-B-16" in result.output
    result = CliRunner().invoke(main, ["eval", "--data", str(world / "images"), "-o", str(tmp_path / "r.csv")])
    assert result.exit_code == 2 and "name it .json" in result.output


HTTP_HEADS = {
    "labels": ({"labels": ",".join(LABELS), "top_k": "3"}, "labels"),
    "tree flat": ({"labels_tree": "TREE"}, "tree flat"),
    "tree top-down": ({"labels_tree": "TREE", "tree_mode": "top-down", "beam": "2"}, "tree top-down"),
    "tree file chils": ({"classifier": "tree", "tree_mode": "chils"}, "tree file chils"),
    "classifier file": ({"classifier": "flat"}, "classifier file"),
    "reject fixed": ({"labels": ",".join(LABELS), "reject": "0.3"}, "reject fixed"),
    "descriptions": ({"labels": ",".join(LABELS), "descriptions": "DESCRIPTIONS"}, "descriptions"),
    "multi-label fixed": ({"labels": ",".join(LABELS), "multi_label": "true", "threshold": "0.3"},
                          "multi-label fixed"),
}


@pytest.fixture(scope="module")
def http(world):
    pytest.importorskip("fastapi")
    from test_serve import _start, _stop

    process, url = _start("--classifier", str(world / "flat.zsc"), "--classifier", str(world / "tree.zsct"),
                          "--store", str(world / "float32.zse"))
    yield url
    _stop(process)


@pytest.mark.slow
@pytest.mark.parametrize("head", list(HTTP_HEADS))
def test_http_gives_the_same_answer(world, reference, http, head):
    import httpx

    fields, reference_head = HTTP_HEADS[head]
    fields = {k: (world / "tree.yaml").read_text() if v == "TREE" else (world / "descriptions.json").read_text()
              if v == "DESCRIPTIONS" else v for k, v in fields.items()}
    files = [("images", (f"{name}.png", (world / "images" / f"{name}.png").read_bytes(), "image/png"))
             for name in NAMES]
    response = httpx.post(f"{http}/v1/classify", data=fields, files=files, timeout=60)
    assert response.status_code == 200, response.text
    got = {}
    for result in response.json()["results"]:
        labels = [p["label"] for p in result["predictions"]][:1]
        scores = [p["score"] for p in result["predictions"]][:1]
        got[key(result["filename"])] = (labels, scores, result.get("record"), result.get("error"))
    same(reference[reference_head], got)


@pytest.mark.slow
def test_http_refuses_unknown_fields_and_a_tree_mode_without_a_tree(http):
    import httpx

    files = [("images", ("a.png", (EXAMPLES / "red_triangle.png").read_bytes(), "image/png"))]
    for fields, message in (({"labels": "a,b", "colour": "red"}, "unknown field"),
                            ({"labels": "a,b", "tree_mode": "chils"}, "tree_mode")):
        response = httpx.post(f"{http}/v1/classify", data=fields, files=files, timeout=60)
        assert response.status_code == 422 and message in response.json()["error"], response.text


@pytest.mark.slow
def test_http_search_gives_the_cli_results(world, http):
    import httpx

    reference = zsclip.search(world / "float32.zse", "a red triangle", top_k=3)
    response = httpx.post(f"{http}/v1/search", data={"text": "a red triangle", "top_k": "3"}, timeout=60)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["path"] for r in results] == [h.source for h in reference]
    assert [r["score"] for r in results] == pytest.approx([h.score for h in reference], abs=1e-5)
    files = {"image": ("q.png", (EXAMPLES / "blue_ring.png").read_bytes(), "image/png")}
    response = httpx.post(f"{http}/v1/search", files=files, data={"top_k": "1"}, timeout=60)
    assert response.status_code == 200 and key(response.json()["results"][0]["path"]) == "blue_ring", response.text


def test_embed_reads_labelled_shards_resumes_and_evaluates(world, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    for part in range(2):
        with tarfile.open(tmp_path / f"s-{part}.tar", "w") as archive:
            for name in NAMES[part * 5 : (part + 1) * 5]:
                for suffix, data in (("png", (EXAMPLES / f"{name}.png").read_bytes()),
                                     ("cls", str(NAMES.index(name)).encode())):
                    info = tarfile.TarInfo(f"{name}.{suffix}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    pattern, store = str(tmp_path / "s-{0..1}.tar"), str(tmp_path / "st.zse")
    first = CliRunner().invoke(main, ["embed", pattern, "--labelled", "--labels-file", str(labels), "-o", store,
                                      "--commit-every", "3", *CLI_COMMON])
    assert first.exit_code == 0 and "10 encoded" in first.stderr, first.output
    again = CliRunner().invoke(main, ["embed", pattern, "--labelled", "--labels-file", str(labels), "-o", store])
    assert again.exit_code == 0 and "0 encoded, 2 unchanged shards" in again.stderr, again.output
    manifest = tmp_path / "labelled.csv"
    manifest.write_text("path,label\n" + "".join(f"{world}/images/{n}.png,{label}\n"
                                                 for n, label in zip(NAMES, LABELS, strict=True)))
    from_store = zsclip.evaluate(store, template_sets="photo", options=OPTIONS)
    from_images = zsclip.evaluate(manifest, template_sets="photo", model="demo", options=OPTIONS)
    assert from_store.num_images == 10 and from_store.classnames == from_images.classnames
    assert from_store.metrics["photo"]["acc1"] == from_images.metrics["photo"]["acc1"]
    stored = answers_by_name(zsclip.classify(store, classifier=world / "flat.zsc", options=OPTIONS))
    images = answers_by_name(zsclip.classify(world / "images", classifier=world / "flat.zsc", options=OPTIONS))
    same(images, stored, 2e-3)  # float16 storage (the default)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["images", "shards", "store"])
@pytest.mark.parametrize("head", ["tree top-down", "reject calibrated tree", "classifier file",
                                  "multi-label calibrated on a store"])
def test_ray_gives_the_same_answer(world, reference, source, head):
    pytest.importorskip("ray")
    from zsclip.cluster import RaySettings

    kwargs, _ = heads(world)[head]
    rows = zsclip.classify(world / SOURCES[source], model="demo", options=OPTIONS,
                           ray=RaySettings(num_cpus=2), **kwargs)
    same(reference[head], answers_by_name(rows))


@pytest.mark.slow
def test_ray_eval_with_a_tree_unknowns_and_a_classifier_file_equals_the_local_eval(world, demo, tmp_path):
    pytest.importorskip("ray")
    from zsclip.cluster import RaySettings

    manifest = tmp_path / "labelled.csv"
    manifest.write_text("path,label\n" + "".join(f"{world}/images/{n}.png,{label}\n"
                                                 for n, label in zip(NAMES, LABELS, strict=True)))
    for kwargs in ({"labels_tree": world / "tree.yaml", "unknown": EXAMPLES}, {"classifier": world / "flat.zsc"}):
        local = zsclip.evaluate(manifest, demo, "photo", options=OPTIONS, **kwargs)
        remote = zsclip.evaluate(manifest, demo, "photo", options=OPTIONS, ray=RaySettings(num_cpus=2), **kwargs)
        assert remote.metrics == local.metrics and remote.tree == local.tree
        assert (remote.openset is None) == (local.openset is None)
        if local.openset:
            assert remote.openset["mcm"]["auroc"] == pytest.approx(local.openset["mcm"]["auroc"], abs=1e-9)
