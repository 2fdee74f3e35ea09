"""Label trees in use (issue 14): the three modes on known weights, tree metrics, open-set scores
against scikit-learn, tree classifier files, and the CLI end to end on the demo model's world."""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score, roc_curve

import zsclip
from zsclip import shapes
from zsclip.cli import main
from zsclip.hierarchy import (
    Rejector,
    TreeClassifier,
    TreeMetrics,
    auroc,
    calibrate_threshold,
    fpr_at_tpr,
    from_data,
    mcm_score,
    read_tree,
)

TREE = {"animal": {"dog": ["labrador", "poodle"], "cat": None}, "vehicle": ["car", "truck"]}


def _tree_classifier(tree_data=TREE, scale: float = 10.0) -> TreeClassifier:
    """A tree classifier whose node vectors are the standard basis: an image feature picks nodes."""
    tree = from_data(tree_data)
    n = len(tree.nodes)
    classifier = zsclip.ZeroShotClassifier(torch.eye(n), [node.name for node in tree.nodes],
                                           [[node.name] for node in tree.nodes], logit_scale=scale)
    return TreeClassifier(tree, classifier)


def _feature(tc: TreeClassifier, weights: dict[str, float]) -> torch.Tensor:
    vector = torch.zeros(len(tc.tree.nodes))
    for name, value in weights.items():
        vector[tc.tree.find(name).index] = value
    return torch.nn.functional.normalize(vector, dim=0)[None]


def test_flat_mode_sums_leaf_probabilities_up_the_tree():
    tc = _tree_classifier()
    prediction = tc.predict(_feature(tc, {"labrador": 1.0, "poodle": 0.9}), "flat")
    names = [tc.tree.nodes[i].name for i in prediction.nodes[0].tolist()]
    assert names == ["animal", "dog", "labrador"]
    probabilities = prediction.node_probabilities[0]
    leaves = [tc.tree.find(n).index for n in ("labrador", "poodle")]
    assert probabilities[tc.tree.find("dog").index] == pytest.approx(float(probabilities[leaves].sum()))
    assert prediction.probabilities[0, 0] >= prediction.probabilities[0, 1] >= prediction.probabilities[0, 2]


def test_top_down_follows_the_coarse_decision_and_chils_reweights_by_parent():
    tc = _tree_classifier(scale=30.0)
    # the leaf "car" looks best on its own, but the image is clearly an animal at the top level
    feature = _feature(tc, {"animal": 1.0, "car": 0.8, "poodle": 0.6, "dog": 0.7})
    top_down = [tc.tree.nodes[i].name for i in tc.predict(feature, "top-down").nodes[0].tolist()]
    flat = [tc.tree.nodes[i].name for i in tc.predict(feature, "flat").nodes[0].tolist()]
    chils = [tc.tree.nodes[i].name for i in tc.predict(feature, "chils").nodes[0].tolist()]
    assert flat[-1] == "car" and top_down[:2] == ["animal", "dog"] and top_down[-1] == "poodle"
    assert chils[-1] == "poodle"  # CHiLS: the parent's zero-shot probability outweighs the leaf's


def test_tree_metrics_accuracy_and_mistake_severity():
    tc = _tree_classifier()
    tree = tc.tree
    metrics = TreeMetrics(tree)
    index = {node.name: node.index for node in tree.nodes}

    def path(*names):
        return [index[n] for n in names]

    predicted = torch.tensor([path("animal", "dog", "labrador"),   # right
                              path("animal", "dog", "poodle"),     # sibling: severity 1
                              path("vehicle", "truck", "truck")])  # other branch: severity 3
    metrics.update(predicted, [index["labrador"], index["labrador"], index["labrador"]])
    result = metrics.result()
    assert result["accuracy"] == {"level1": pytest.approx(2 / 3), "level2": pytest.approx(2 / 3),
                                  "level3": pytest.approx(1 / 3)}
    assert result["mistake_severity"] == pytest.approx((1 + 3) / 2)


def test_open_set_figures_match_scikit_learn():
    rng = np.random.default_rng(0)
    known, unknown = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 200)
    labels = np.r_[np.ones(300), np.zeros(200)]
    assert auroc(known, unknown) == pytest.approx(roc_auc_score(labels, np.r_[known, unknown]))
    fpr, tpr, _ = roc_curve(labels, np.r_[known, unknown])
    assert fpr_at_tpr(known, unknown, 0.95) == pytest.approx(float(fpr[np.searchsorted(tpr, 0.95)]), abs=0.01)
    threshold = calibrate_threshold(known, 0.95)
    assert np.mean(known >= threshold) == pytest.approx(0.95, abs=0.01)


def test_mcm_is_max_softmax_of_cosines_at_temperature_one():
    tc = _tree_classifier()
    leaves = tc.leaf_classifier
    feature = _feature(tc, {"car": 1.0, "truck": 0.5})
    expected = (feature @ leaves.weights).softmax(dim=-1).max(dim=-1).values
    assert torch.allclose(mcm_score(leaves, feature), expected)
    rejector = Rejector(float(expected) + 1e-3)
    assert not bool(rejector.accepts(rejector.scores(leaves, feature))[0])


def test_a_tree_classifier_file_round_trips(tmp_path):
    tc = _tree_classifier()
    back = TreeClassifier.load(tc.save(tmp_path / "tree.zsct"))
    feature = _feature(tc, {"poodle": 1.0})
    assert torch.equal(back.predict(feature, "chils").nodes, tc.predict(feature, "chils").nodes)
    assert [n.name for n in back.tree.nodes] == [n.name for n in tc.tree.nodes]


# --- the CLI on the demo model's world -----------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tree_world")
    known_shapes, unknown_shapes = ("circle", "square", "triangle", "star"), ("cross", "ring")
    tree = {shape: [f"{colour} {shape}" for colour in ("red", "blue", "green")] for shape in known_shapes}
    (root / "tree.json").write_text(json.dumps(tree))
    for colour in ("red", "blue", "green"):
        for shape in known_shapes + unknown_shapes:
            target = root / ("known" if shape in known_shapes else "unknown") / f"{colour} {shape}"
            target.mkdir(parents=True)
            for index, spec in enumerate(shapes.sample_specs(3, seed=zlib.crc32(f"{colour} {shape}".encode()))):
                spec = shapes.ShapeSpec(colour, shape, spec.background, spec.radius, spec.centre, spec.rotation)
                shapes.render(spec).save(target / f"{index}.png")
    return {"root": root, "tree": root / "tree.json", "known": root / "known", "unknown": root / "unknown"}


def test_classify_with_a_labels_tree_writes_every_level(world, tmp_path):
    out = tmp_path / "tree.csv"
    result = CliRunner().invoke(main, ["classify", str(world["known"]), "--labels-tree", str(world["tree"]),
                                       "--tree-mode", "chils", "--model", "demo", "-t", "photo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "level1", "level1_probability", "level2", "level2_probability", "error"]
    right = [r for r in rows if Path(r["path"]).parent.name == r["level2"]]
    assert len(right) / len(rows) > 0.8 and all(r["level2"].endswith(r["level1"]) for r in rows)
    terminal = CliRunner().invoke(main, ["classify", str(world["known"] / "red circle"), "--labels-tree",
                                         str(world["tree"]), "--model", "demo", "-t", "photo"])
    assert "level1  circle" in terminal.stdout and "level2  red circle" in terminal.stdout


def test_classify_rejects_unknown_shapes(world, tmp_path):
    out = tmp_path / "flat.jsonl"
    labels = ",".join(f"{c} {s}" for s in ("circle", "square", "triangle", "star") for c in ("red", "blue", "green"))
    result = CliRunner().invoke(main, ["classify", str(world["unknown"]), str(world["known"]), "--labels", labels,
                                       "--model", "demo", "-t", "photo", "--reject-calibrate", str(world["known"]),
                                       "--tpr", "0.9", "--reject-label", "unknown", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejected = {"known": [], "unknown": []}
    for row in rows:
        rejected[Path(row["path"]).parent.parent.name].append(row["predictions"][0]["label"] == "unknown")
    known_rate, unknown_rate = (sum(v) / len(v) for v in (rejected["known"], rejected["unknown"]))
    assert known_rate <= 0.2 and unknown_rate > known_rate  # calibrated at 90% TPR; unknowns rejected more often


def test_eval_with_a_tree_and_unknowns_reports_levels_and_open_set(world, tmp_path):
    out, report = tmp_path / "r.json", tmp_path / "report"
    result = CliRunner().invoke(main, ["eval", "--data", str(world["known"]), "--labels-tree", str(world["tree"]),
                                       "--unknown", str(world["unknown"]), "--model", "demo", "-t", "photo",
                                       "-o", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert set(record["modes"]) == {"flat", "top-down", "chils"}
    assert record["modes"]["flat"]["accuracy"]["level1"] >= record["modes"]["flat"]["accuracy"]["level2"]
    assert record["openset"]["mcm"]["auroc"] > 0.5 and record["openset"]["mcm"]["num_unknown"] == 18
    assert (report / "node_recall.png").stat().st_size > 1000 and "AUROC" in result.stdout
    page = (report / "index.html").read_text()
    assert "mistake severity" in page and "node_recall.png" in page and "AUROC" in page and "top-down" in page


def test_flat_labels_with_unknowns_keep_the_flat_metrics_and_add_the_open_set(world, tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["eval", "--data", str(world["known"]), "--unknown", str(world["unknown"]),
                                       "--model", "demo", "-t", "photo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "photo" in result.stdout and "acc5" in result.stdout and "open set mcm" in result.stdout
    record = json.loads(out.read_text())
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"} and record["openset"]["mcm"]["auroc"]


def test_read_tree_reports_a_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("animal:\n  dog:\n  dog:\n")
    with pytest.raises(zsclip.InputError):
        read_tree(bad)


def test_tree_rows_as_parquet(world, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "tree.parquet"
    result = CliRunner().invoke(main, ["classify", str(world["known"]), "--labels-tree", str(world["tree"]),
                                       "--model", "demo", "-t", "photo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["path", "level1", "level1_probability", "level2", "level2_probability", "error"]
    assert table.num_rows == 36 and str(table.schema.field("level1_probability").type) == "double"


def test_a_labels_tree_over_an_embedding_store(world, tmp_path):
    store = tmp_path / "s.zse"
    assert CliRunner().invoke(main, ["embed", str(world["known"]), "-m", "demo", "-o", str(store)]).exit_code == 0
    args = ["--labels-tree", str(world["tree"]), "--tree-mode", "top-down", "-t", "photo"]
    from_images = CliRunner().invoke(main, ["classify", str(world["known"]), *args, "--model", "demo",
                                            "-o", str(tmp_path / "a.csv")])
    from_store = CliRunner().invoke(main, ["classify", str(store), *args, "-o", str(tmp_path / "b.csv")])
    assert from_images.exit_code == from_store.exit_code == 0, from_store.output
    rows = [sorted((r["path"], r["level1"], r["level2"]) for r in csv.DictReader((tmp_path / n).open()))
            for n in ("a.csv", "b.csv")]
    agree = sum(a == b for a, b in zip(*rows, strict=True))
    assert agree >= len(rows[0]) - 1  # float16 storage may flip a near tie, at most
