"""Multi-label classification and retrieval eval, each a plug-in to the job shape.

Metrics are checked against their references: average precision against scikit-learn's
``average_precision_score``, F1 / precision / recall against ``precision_recall_fscore_support``,
and retrieval recall@k against CLIP_benchmark 1.6.2's ``zeroshot_retrieval.evaluate`` run on the
demo model and the same scenes (when clip_benchmark is installed; its retrieval module needs only
torch). The head, its file, calibration and refusals are checked through Python and the CLI.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import zsclip
from zsclip.cli import main
from zsclip.heads import load_head_file
from zsclip.heads.multilabel import MultiLabelClassifier, choose_threshold
from zsclip.shapes import write_scenes
from zsclip.tasks.multilabel_metrics import average_precision, retrieval_recall, threshold_metrics

OPTIONS = zsclip.RunOptions(precision="fp32", workers=0, batch_size=8)
CLI_COMMON = ["--model", "demo", "--precision", "fp32", "-j", "0", "-b", "8"]


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    test = write_scenes(root / "test", 24, seed=11)
    calibration = write_scenes(root / "calibration", 24, seed=12)
    return {"test": test, "calibration": calibration, "labels": root / "test" / "labels.txt",
            "captions": root / "test" / "captions.csv", "jsonl": root / "test" / "labels.jsonl"}


# --- metrics against their references ---------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_average_precision_equals_scikit_learn(seed):
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(80, generator=g)
    if seed % 2:
        scores = (scores * 6).round() / 6  # ties
    truth = torch.rand(80, generator=g) < 0.3
    assert average_precision(scores, truth) == pytest.approx(
        sklearn.average_precision_score(truth.numpy(), scores.numpy()), abs=1e-12)
    assert average_precision(scores, torch.zeros(80, dtype=torch.bool)) is None


def test_threshold_metrics_equal_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(3)
    predicted, truth = torch.rand(60, 7, generator=g) < 0.4, torch.rand(60, 7, generator=g) < 0.3
    truth[:, 6] = False  # a label without positives: zero_division=0
    mine = threshold_metrics(predicted, truth, list("abcdefg"))
    for average in ("micro", "macro"):
        p, r, f, _ = sklearn.precision_recall_fscore_support(truth.numpy(), predicted.numpy(), average=average,
                                                             zero_division=0)
        assert mine[f"{average}_precision"] == pytest.approx(p)
        assert mine[f"{average}_recall"] == pytest.approx(r)
        assert mine[f"{average}_f1"] == pytest.approx(f)


def test_retrieval_recall_equals_clip_benchmark_on_random_features():
    reference = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(70, 8, generator=g), dim=-1)
    owner = torch.randint(0, 30, (70,), generator=g).tolist()
    mine = retrieval_recall(images, texts, owner, block=7)
    scores = texts @ images.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(70), owner] = True
    for k in (1, 5, 10):
        expected_image = (reference.batchify(reference.recall_at_k, scores, positive, 16, "cpu", k=k) > 0)
        expected_text = (reference.batchify(reference.recall_at_k, scores.T, positive.T, 16, "cpu", k=k) > 0)
        assert mine[f"image_retrieval_recall@{k}"] == pytest.approx(expected_image.float().mean().item())
        assert mine[f"text_retrieval_recall@{k}"] == pytest.approx(expected_text.float().mean().item())


def test_retrieval_eval_equals_clip_benchmark_zeroshot_retrieval(demo, scenes):
    """CLIP_benchmark 1.6.2's evaluate() on the demo model's open_clip module, the same images and captions."""
    reference = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    import csv

    from PIL import Image

    rows = list(csv.DictReader(scenes["captions"].open()))
    folder = scenes["captions"].parent
    images = list(dict.fromkeys(row["path"] for row in rows))
    captions = [[row["caption"] for row in rows if row["path"] == image] for image in images]
    pixels = torch.stack([demo._preprocess(Image.open(folder / image).convert("RGB")) for image in images])
    loader = [(pixels[i:i + 8], captions[i:i + 8]) for i in range(0, len(images), 8)]
    expected = reference.evaluate(demo.model, loader, demo.tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    record = zsclip.evaluate_retrieval(scenes["captions"], encoder=demo, options=OPTIONS)
    assert record["num_images"] == len(images) and record["num_captions"] == len(rows)
    for key, value in expected.items():
        assert record["metrics"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_retrieval_over_a_store_equals_over_images(demo, scenes, tmp_path):
    from zsclip.data.sources import expand_inputs
    from zsclip.store import EmbeddingStore, embed

    store = EmbeddingStore.create_or_open(tmp_path / "s.zse", demo, precision="fp32")
    embed(store, list(expand_inputs([str(scenes["captions"].parent / "images")])), demo, OPTIONS)
    over_images = zsclip.evaluate_retrieval(scenes["captions"], encoder=demo, options=OPTIONS)
    over_store = zsclip.evaluate_retrieval(tmp_path / "s.zse", scenes["captions"], encoder=demo, options=OPTIONS)
    assert over_store["metrics"] == pytest.approx(over_images["metrics"], abs=1e-6)
    result = CliRunner().invoke(main, ["eval", "--task", "retrieval", "--data", str(tmp_path / "s.zse"),
                                       "--captions", str(scenes["captions"]), "-o", str(tmp_path / "r.json"),
                                       *CLI_COMMON])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["task"] == "zeroshot_retrieval"
    assert written["metrics"] == pytest.approx(over_images["metrics"], abs=1e-6)


# --- data ----------------------------------------------------------------------------------------------

def test_multilabel_manifests_csv_and_jsonl_agree(scenes):
    from zsclip.data.collections import open_collection

    names = scenes["labels"].read_text().split("\n")[:-1]
    csv_collection, _ = open_collection(scenes["test"], [[n] for n in names])
    jsonl_collection, _ = open_collection(scenes["jsonl"], [[n] for n in names])
    assert csv_collection.multi_label and jsonl_collection.multi_label
    assert csv_collection.label_sets == jsonl_collection.label_sets
    assert all(2 <= len(labels) <= 3 for labels in csv_collection.label_sets)
    assert [item.target for item in csv_collection.items] == list(range(len(csv_collection.items)))


def test_unknown_label_in_a_multilabel_manifest_is_an_error_row(tmp_path):
    from zsclip.data.collections import multilabel_manifest

    (tmp_path / "m.csv").write_text("path,labels\na.png,red star;blue ring\nb.png,green moon\nc.png,\n")
    collection = multilabel_manifest(tmp_path / "m.csv", ["red star", "blue ring"])
    assert collection.items[0].error is None and collection.label_sets[0] == (0, 1)
    assert "green moon" in collection.items[1].error
    assert collection.items[2].error is None and collection.label_sets[2] == ()  # no label: a negative image


# --- the head ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_rows_list_every_label_over_its_threshold(demo, scenes):
    names = scenes["labels"].read_text().split("\n")[:-1]
    images = sorted((scenes["test"].parent / "images").glob("*.png"))[:6]
    rows = list(zsclip.classify(images, names, multi_label=True, multi_score="negative", threshold=0.55, encoder=demo,
                                options=OPTIONS))
    classifier = MultiLabelClassifier.build(demo, names, None, score="negative", threshold=0.55, cache=False,
                                            precision="fp32")
    from zsclip.job import ImageFiles
    from zsclip.job.plan import features

    expected = classifier.scores(torch.cat([b.features for b in features(ImageFiles(
        [zsclip.Source(str(p)) for p in images]), demo, OPTIONS)]))
    for row, values in zip(rows, expected, strict=True):
        clear = (values - 0.55).abs() > 1e-4  # scores a hair from the threshold may fall either way
        over = [names[i] for i in torch.argsort(values, descending=True).tolist() if values[i] >= 0.55 and clear[i]]
        assert [label for label in row.labels if clear[names.index(label)]] == over
        assert all(score >= 0.55 for score in row.scores) and row.scores == sorted(row.scores, reverse=True)
        assert row.scores == pytest.approx([float(values[names.index(label)]) for label in row.labels], abs=1e-5)
        assert row.record == {"labels": row.labels, "scores": row.scores}


def test_calibrated_threshold_reaches_the_target_precision():
    g = torch.Generator().manual_seed(5)
    truth = torch.rand(200, generator=g) < 0.3
    scores = truth.float() * 0.8 + torch.rand(200, generator=g)
    threshold, status = choose_threshold(scores, truth, 0.9)
    picked = scores >= threshold
    assert status == "ok" and float((picked & truth).sum() / picked.sum()) >= 0.9
    lower = scores[scores < threshold].max()  # the next lower cut misses the target: most recall at 0.9
    assert float((truth & (scores >= lower)).sum() / (scores >= lower).sum()) < 0.9
    best, _ = choose_threshold(scores, truth, None)
    f1 = threshold_metrics((scores >= best)[:, None], truth[:, None], ["x"])["micro_f1"]
    for other in scores.tolist():
        assert threshold_metrics((scores >= other)[:, None], truth[:, None], ["x"])["micro_f1"] <= f1 + 1e-12
    assert choose_threshold(scores, torch.zeros(200, dtype=torch.bool), 0.9) == (None, "no positives")


@pytest.mark.slow
def test_multilabel_file_round_trips_and_answers_the_same(demo, scenes, tmp_path):
    names = scenes["labels"].read_text().split("\n")[:-1]
    first = list(zsclip.classify(scenes["test"].parent / "images", names, multi_label=True,
                                 calibrate=scenes["calibration"], target_precision=0.8, encoder=demo, options=OPTIONS))
    from zsclip.job import HeadOptions, open_source, plan

    job = plan(open_source(str(scenes["test"].parent / "images")),
               HeadOptions(names, multi_label=True, calibrate=scenes["calibration"], target_precision=0.8),
               encoder=demo, run=OPTIONS)
    assert job.head.multilabel.score == "standardised"  # the default with calibration images
    job.head.multilabel.save(tmp_path / "tags.zsml")
    loaded = load_head_file(tmp_path / "tags.zsml")
    assert isinstance(loaded, MultiLabelClassifier) and torch.equal(loaded.thresholds, job.head.multilabel.thresholds)
    again = list(zsclip.classify(scenes["test"].parent / "images", classifier=tmp_path / "tags.zsml",
                                 encoder=demo, options=OPTIONS))
    assert [a.labels for a in again] == [f.labels for f in first]
    result = CliRunner().invoke(main, ["classify", str(scenes["test"].parent / "images"), "-c",
                                       str(tmp_path / "tags.zsml"), "-o", str(tmp_path / "rows.jsonl"), *CLI_COMMON])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [row["labels"] for row in rows] == [f.labels for f in first]


def test_tampered_multilabel_file_is_refused(demo, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    classifier = MultiLabelClassifier.build(demo, ["red star", "blue ring"], "photo", cache=False)
    path = classifier.save(tmp_path / "m.zsml")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    tensors["thresholds"] = torch.tensor([0.5, float("nan")])
    save_file(tensors, str(tmp_path / "bad.zsml"), metadata=metadata)
    with pytest.raises(zsclip.ClassifierFileError, match="thresholds"):
        load_head_file(tmp_path / "bad.zsml")


# --- multi-label stores ------------------------------------------------------------------------------------

def _by_name(rows) -> list[tuple[str, list[str], list[float]]]:
    return sorted((Path(row.source).name, row.labels, row.scores) for row in rows)


@pytest.mark.slow
def test_a_multilabel_store_evaluates_and_calibrates_as_its_images_with_no_image_decoded(demo, tmp_path,
                                                                                          monkeypatch):
    """embed --labelled of a CSV and of a JSONL multi-label manifest; then, with the images deleted, eval
    --multi-label over the store and classify of the store calibrated on a store equal the same over the images."""
    test = write_scenes(tmp_path / "test", 24, seed=11)
    calibration = write_scenes(tmp_path / "calibration", 24, seed=12)
    record = zsclip.evaluate_multilabel(test, calibrate=calibration, encoder=demo, options=OPTIONS)
    names = record["classnames"]
    rows = list(zsclip.classify(test.parent / "images", names, multi_label=True, calibrate=calibration,
                                encoder=demo, options=OPTIONS))
    for data, store in ((test, "test.zse"), (calibration.parent / "labels.jsonl", "calibration.zse")):
        result = CliRunner().invoke(main, ["embed", str(data), "--labelled", "-o", str(tmp_path / store),
                                           "--dtype", "float32", *CLI_COMMON])
        assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "test.zse" / "zsclip-store.json").read_text())
    assert manifest["multi_label"] is True and manifest["version"] == 3 and manifest["classnames"] == names
    for folder in ("test", "calibration"):
        shutil.rmtree(tmp_path / folder / "images")  # nothing below can decode an image
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "test.zse"), "--multi-label", "--calibrate",
                                       str(tmp_path / "calibration.zse"), "-o", str(tmp_path / "m.json"), *CLI_COMMON])
    assert result.exit_code == 0, result.output
    stored = json.loads((tmp_path / "m.json").read_text())
    assert stored["num_images"] == record["num_images"] == 24 and stored["num_failed"] == 0
    assert stored["thresholds"]["num_images"] == record["thresholds"]["num_images"]
    assert stored["metrics"] == pytest.approx(record["metrics"], abs=1e-5)
    assert stored["per_label_ap"] == pytest.approx(record["per_label_ap"], abs=1e-5)
    assert stored["per_label_threshold"] == pytest.approx(record["per_label_threshold"], abs=1e-5)
    from_store = list(zsclip.classify(tmp_path / "test.zse", names, multi_label=True,
                                      calibrate=tmp_path / "calibration.zse", encoder=demo, options=OPTIONS))
    assert all(row.error is None for row in from_store)
    for (name, labels, scores), (other, expected, expected_scores) in zip(_by_name(from_store), _by_name(rows),
                                                                          strict=True):
        assert name == other and labels == expected and scores == pytest.approx(expected_scores, abs=1e-5)
    # a classifier file over a store, calibrated on a store: standardised scores need no model at all
    zsclip.ZeroShotClassifier.build(demo, names, None, cache=False, precision="fp32").save(tmp_path / "flat.zsc")
    from zsclip.encoders import resolve as resolve_module

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(resolve_module, "resolve_model", no_model)
    from_file = list(zsclip.classify(tmp_path / "test.zse", classifier=tmp_path / "flat.zsc", multi_label=True,
                                     calibrate=tmp_path / "calibration.zse", options=OPTIONS))
    assert [labels for _, labels, _ in _by_name(from_file)] == [labels for _, labels, _ in _by_name(rows)]
    monkeypatch.undo()
    result = CliRunner().invoke(main, ["classify", str(tmp_path / "test.zse"), "--labels", ",".join(names),
                                       "--multi-label", "--calibrate", str(tmp_path / "calibration.zse"),
                                       "-o", str(tmp_path / "rows.jsonl"), *CLI_COMMON])
    assert result.exit_code == 0, result.output
    written = sorted((Path(r["path"]).name, r["labels"]) for r in map(json.loads, (tmp_path / "rows.jsonl").open()))
    assert written == [(name, labels) for name, labels, _ in _by_name(rows)]


@pytest.mark.slow
def test_a_multilabel_store_refuses_single_label_use_and_other_data(demo, tmp_path):
    test = write_scenes(tmp_path / "test", 6, seed=3)
    store = tmp_path / "s.zse"
    assert CliRunner().invoke(main, ["embed", str(test), "--labelled", "-o", str(store), *CLI_COMMON]).exit_code == 0
    with pytest.raises(zsclip.InputError, match="add --multi-label"):
        zsclip.evaluate(store, encoder=demo, options=OPTIONS)
    rows = list(zsclip.classify(store, ["red star", "blue ring"], encoder=demo, options=OPTIONS))  # labels unused
    assert len(rows) == 6 and all(row.error is None for row in rows)
    single = tmp_path / "single.csv"
    single.write_text("path,label\n" + "".join(f"{p},red star\n" for p in sorted((test.parent / "images").iterdir())))
    result = CliRunner().invoke(main, ["embed", str(single), "--labelled", "-o", str(store), *CLI_COMMON])
    assert result.exit_code != 0 and "other class labels" in result.output  # its classes differ first
    from zsclip.store import EmbeddingStore, StoreError

    with pytest.raises(StoreError, match="several labels per image"):
        EmbeddingStore.create_or_open(store, demo, precision="fp32",
                                      classnames=EmbeddingStore.open(store).classnames)
    plain = tmp_path / "plain.zse"
    assert CliRunner().invoke(main, ["embed", str(test.parent / "images"), "-o", str(plain),
                                     *CLI_COMMON]).exit_code == 0
    assert json.loads((plain / "zsclip-store.json").read_text())["version"] == 3  # packed (store/format.py)


@pytest.mark.slow
def test_damaged_label_sets_are_error_rows_naming_the_shard(demo, tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zsclip.store import EmbeddingStore
    from zsclip.store.format import schema

    test = write_scenes(tmp_path / "test", 3, seed=5)
    folder = tmp_path / "s.zse"
    assert CliRunner().invoke(main, ["embed", str(test), "--labelled", "-o", str(folder), "--dtype", "float32",
                                     *CLI_COMMON]).exit_code == 0
    manifest = json.loads((folder / "zsclip-store.json").read_text())
    count, dim = len(manifest["classnames"]), demo.embed_dim
    unit = [1.0] + [0.0] * (dim - 1)
    cases = {"none.png": None, "big.png": [count], "negative.png": [-1], "hole.png": [0, None],
             "long.png": list(range(count + 1)), "empty.png": [], "twice.png": [1, 0, 1]}
    columns = {"path": list(cases), "resolved": [f"/d/{name}" for name in cases], "deleted": [False] * len(cases),
               "embedding": [unit] * len(cases), "labels": list(cases.values())}
    shard_schema = schema(dim, "float32", multi_label=True)
    table = pa.table({f.name: columns.get(f.name, [None] * len(cases)) for f in shard_schema}, schema=shard_schema)
    pq.write_table(table, folder / "shard-00001-damaged.parquet")
    manifest["shards"].append({"file": "shard-00001-damaged.parquet", "rows": len(cases)})
    (folder / "zsclip-store.json").write_text(json.dumps(manifest))
    view, sets = {}, {}
    for batch in EmbeddingStore.open(folder).batches():
        assert len(batch.embeddings) == sum(error is None for error in batch.errors)
        assert np.isfinite(batch.embeddings).all()
        view.update(zip(batch.paths, batch.errors, strict=True))
        sets.update(zip(batch.paths, batch.label_sets, strict=True))
    expected = {"none.png": "no labels", "big.png": f"label {count} is not one of the store's {count} classes",
                "negative.png": "label -1 is not one of", "hole.png": "a null label",
                "long.png": f"{count + 1} labels, the store has {count} classes"}
    for path, problem in expected.items():
        assert view[path].startswith("store shard shard-00001-damaged.parquet, row ") and problem in view[path]
    assert view["empty.png"] is None and sets["empty.png"] == ()  # none of the labels: a negative image
    assert view["twice.png"] is None and sets["twice.png"] == (0, 1)
    record = zsclip.evaluate_multilabel(folder, threshold=0.5, encoder=demo, options=OPTIONS)
    assert record["num_images"] == 3 + 2 and record["num_failed"] == len(expected)


@pytest.mark.slow
def test_build_multi_label_writes_the_file_classify_would_use(demo, scenes, tmp_path):
    """build --multi-label --calibrate writes the head classify --multi-label --calibrate builds; without
    --calibrate, the fixed threshold; classify --classifier FILE then answers as classify did."""
    names = scenes["labels"].read_text().split("\n")[:-1]
    images = scenes["test"].parent / "images"
    for extra, kwargs in ((["--calibrate", str(scenes["calibration"]), "--target-precision", "0.8"],
                           {"calibrate": scenes["calibration"], "target_precision": 0.8}),
                          (["--threshold", "0.55"], {"threshold": 0.55})):
        out = tmp_path / "tags.zsml"
        result = CliRunner().invoke(main, ["build", "--labels-file", str(scenes["labels"]), "--multi-label", *extra,
                                           "-o", str(out), "--model", "demo", "--precision", "fp32"])
        assert result.exit_code == 0, result.output
        assert f"wrote {out}: {len(names)} labels" in result.stderr
        loaded = load_head_file(out)
        assert isinstance(loaded, MultiLabelClassifier)
        assert loaded.score == ("standardised" if "calibrate" in kwargs else "collection")
        direct = list(zsclip.classify(images, names, multi_label=True, encoder=demo, options=OPTIONS, **kwargs))
        from_file = list(zsclip.classify(images, classifier=out, encoder=demo, options=OPTIONS))
        assert [row.labels for row in from_file] == [row.labels for row in direct]
        for a, b in zip(from_file, direct, strict=True):
            assert a.scores == pytest.approx(b.scores, abs=1e-5)
    result = CliRunner().invoke(main, ["build", "--labels", "a,b", "--threshold", "0.5", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "add --multi-label" in result.output


def test_a_served_multilabel_file_answers_as_the_cli(demo, scenes, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from zsclip.serve import ServeSettings, create_app

    tags = MultiLabelClassifier.build(demo, ["red star", "blue ring", "green circle"], "photo", cache=False,
                                      threshold=0.3)
    tags.save(tmp_path / "tags.zsml")
    images = sorted((scenes["test"].parent / "images").glob("*.png"))[:4]
    out = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(main, ["classify", *map(str, images), "--classifier", str(tmp_path / "tags.zsml"),
                                       "-o", str(out), *CLI_COMMON])
    assert result.exit_code == 0, result.output
    expected = {Path(row["path"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    app = create_app(ServeSettings(model="demo", precision="fp32", classifier_files=(str(tmp_path / "tags.zsml"),),
                                   default_templates="photo"), encoder=demo)
    with TestClient(app) as client:
        files = [("images", (image.name, image.read_bytes(), "image/png")) for image in images]
        response = client.post("/v1/classify", data={"classifier": "tags"}, files=files)
    assert response.status_code == 200, response.text
    for item in response.json()["results"]:
        want = expected[item["filename"]]
        assert [p["label"] for p in item["predictions"]] == want["labels"]
        assert [p["score"] for p in item["predictions"]] == pytest.approx(want["scores"], abs=1e-5)


@pytest.mark.parametrize("threshold,effect", [(1.5, "no label to any image"), (0.0, "every label to every image"),
                                              (-2.0, "every label to every image"), (0.5, None)])
def test_a_fixed_threshold_outside_the_scores_range_is_warned_about(scenes, threshold, effect, tmp_path):
    image = next((scenes["test"].parent / "images").glob("*.png"))
    result = CliRunner().invoke(main, ["classify", str(image), "--labels", "red star,blue ring", "--multi-label",
                                       "--multi-score", "negative", "--threshold", str(threshold), "-o",
                                       str(tmp_path / "r.csv"), *CLI_COMMON])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("zsclip: warning: --threshold")]
    if effect is None:
        assert not warned
    else:
        assert len(warned) == 1 and effect in warned[0] and "negative score" in warned[0] and "[0, 1]" in warned[0]


# --- eval and refusals -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_multilabel_json_and_report(scenes, tmp_path):
    result = CliRunner().invoke(main, ["eval", "--data", str(scenes["test"]), "--labels-file", str(scenes["labels"]),
                                       "--multi-label", "--calibrate", str(scenes["calibration"]),
                                       "-o", str(tmp_path / "m.json"), "--report", str(tmp_path / "report"),
                                       *CLI_COMMON])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["task"] == "multilabel_classification" and record["score"] == "standardised"
    present = [ap for ap in record["per_label_ap"].values() if ap is not None]
    assert record["metrics"]["mAP"] == pytest.approx(sum(present) / len(present))
    assert {"softmax", "standardised"} <= set(record["score_comparison"])
    assert (tmp_path / "report" / "per_label_ap.png").is_file() and (tmp_path / "report" / "index.html").is_file()
    assert record["calibration"]["ece"] is None and "not a probability" in record["calibration"]["note"]
    assert not (tmp_path / "report" / "reliability.png").exists()  # a standardised cosine has no diagram


def test_label_calibration_equals_torchmetrics_and_torch():
    """The per-label probabilities' ECE is torchmetrics' binary calibration error (15 bins, l1) over every
    (image, label) pair; Brier and NLL are the mean squared error and binary cross-entropy."""
    from torchmetrics.functional.classification import binary_calibration_error

    from zsclip.calibration.measures import label_calibration

    g = torch.Generator().manual_seed(5)
    probabilities = torch.rand(200, 6, generator=g, dtype=torch.float64)
    truth = torch.rand(200, 6, generator=g, dtype=torch.float64) < probabilities ** 2  # over-confident
    mine = label_calibration(probabilities.numpy(), truth.numpy())
    reference = binary_calibration_error(probabilities.ravel().float(), truth.ravel().long(), n_bins=15, norm="l1")
    assert mine["ece"] == pytest.approx(float(reference), abs=1e-6)
    assert mine["brier"] == pytest.approx(float(((probabilities - truth.double()) ** 2).mean()))
    bce = torch.nn.functional.binary_cross_entropy(probabilities, truth.double())
    assert mine["nll"] == pytest.approx(float(bce), rel=1e-9)
    for label in range(6):
        column = binary_calibration_error(probabilities[:, label].float(), truth[:, label].long(), n_bins=15)
        assert mine["per_label_ece"][label] == pytest.approx(float(column), abs=1e-6)
    assert sum(b["count"] for b in mine["reliability"]) == probabilities.numel()


@pytest.mark.slow
def test_eval_multilabel_reports_the_calibration_of_probability_scores(demo, scenes, tmp_path):
    from zsclip.calibration.measures import label_calibration
    from zsclip.data.images import load_image

    result = CliRunner().invoke(main, ["eval", "--data", str(scenes["jsonl"]), "--labels-file", str(scenes["labels"]),
                                       "--multi-label", "--multi-score", "softmax", "-t", "photo",
                                       "-o", str(tmp_path / "m.json"), "--report", str(tmp_path / "report"),
                                       *CLI_COMMON])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m.json").read_text())
    assert "per-label probabilities: ECE" in result.stdout
    # the same probabilities computed here: the demo model's softmax over the labels, every image
    labels = zsclip.read_labels(scenes["labels"])
    classifier = zsclip.ZeroShotClassifier.build(demo, labels, "photo", cache=False)
    names = [synonyms[0] for synonyms in labels]
    rows = [json.loads(line) for line in scenes["jsonl"].read_text().splitlines() if line.strip()]
    paths = [str(scenes["jsonl"].parent / row["path"]) for row in rows]
    truth = torch.zeros(len(paths), len(labels), dtype=torch.bool)
    for index, row in enumerate(rows):
        truth[index, [names.index(label) for label in row["labels"]]] = True
    probabilities = classifier.logits(demo.encode_images(
        torch.stack([demo.preprocess(load_image(p)) for p in paths]), "fp32")).softmax(dim=-1)
    expected = label_calibration(probabilities.numpy(), truth.numpy())
    assert record["calibration"]["ece"] == pytest.approx(expected["ece"], abs=1e-5)
    assert record["calibration"]["brier"] == pytest.approx(expected["brier"], abs=1e-6)
    assert (tmp_path / "report" / "reliability.png").stat().st_size > 1000
    assert "calibration of the per-label probabilities" in (tmp_path / "report" / "index.html").read_text()


@pytest.mark.parametrize("arguments,message", [
    (["classify", "x.png", "--labels", "a,b", "--multi-label", "--labels-tree", "t.yaml"], "label tree"),
    (["classify", "x.png", "--labels", "a,b", "--threshold", "0.3"], "add --multi-label"),
    (["classify", "x.png", "--labels", "a,b", "--multi-label", "--threshold", "0.3", "--calibrate", "c.csv"],
     "not both"),
    (["classify", "x.png", "--labels", "a,b", "--multi-label", "--target-precision", "0.9"], "--calibrate"),
    (["classify", "x.png", "--labels", "a,b", "--multi-label", "--multi-score", "standardised"], "--calibrate"),
    (["classify", "x.png", "--labels", "a,b", "--multi-label", "--top-k", "2"], "--top-k"),
    (["classify", "x.png", "--labels", "a,b", "--multi-label", "--reject", "0.5"], "--reject"),
    (["eval", "--task", "retrieval", "--data", "c.csv", "--multi-label"], "--multi-label"),
    (["eval", "--data", "m.csv", "--multi-label", "--labels-tree", "t.yaml"], "--labels-tree"),
    (["eval", "--data", "m.csv", "--captions", "c.csv"], "--captions"),
])
def test_refused_in_one_line(arguments, message):
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_single_label_eval_of_a_multilabel_manifest_says_add_multi_label(scenes):
    with pytest.raises(zsclip.InputError, match="--multi-label"):
        zsclip.evaluate(scenes["test"], model="demo", options=OPTIONS)
