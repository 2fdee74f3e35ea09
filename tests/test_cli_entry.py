"""The command line as a user meets it (issue 32 items 1 and 12, issue 38 item 6), through the real
``zsclip`` command:

- an option left at its default is not "given": ``eval --classifier FILE`` evaluates every kind of
  classifier file (it was always refused: ``--templates`` had a default), an existing store keeps its
  dtype on ``embed``, and an option that cannot apply is refused only when the user gave it;
- ``search`` reports what it could not read as classify does (a line each, error rows, exit 1), and a
  missing INPUT is said before any model loads;
- checks before the model: ``serve --store missing`` and ``embed`` with nothing new load no model.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from zsclip.cli import main
from zsclip.shapes import write_dataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _zsclip(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line]


@pytest.fixture
def no_model(monkeypatch):
    """Loading any model fails the test: what must be decided before the model loads."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    import zsclip.encoders
    import zsclip.encoders.resolve

    monkeypatch.setattr(zsclip.encoders.resolve, "resolve_model", refuse)
    monkeypatch.setattr(zsclip.encoders, "load_model", refuse)
    monkeypatch.setattr(zsclip, "load_model", refuse)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """One image per colour-shape pair (48), labelled by shape (6 classes), and its labelled store."""
    root = tmp_path_factory.mktemp("shapes")
    write_dataset(root / "data", per_class=1, seed=1, label="shape")
    data = root / "data"
    with (data / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (data / "tagged.csv").open("w", newline="") as handle:  # a 'labels' column: a label set per image
        writer = csv.writer(handle)
        writer.writerow(["path", "labels"])
        writer.writerows([row["path"], row["label"]] for row in rows)
    result = _zsclip("embed", data / "manifest.csv", "--labelled", "--model", "demo", "-o", root / "shapes.zse",
                     "--workers", "0")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def classifier_files(shapes) -> dict[str, Path]:
    """A classifier file of each kind the quick loop evaluates: built with `zsclip build`, the others
    from Python on one loaded model (the slow test below makes linear, Tip-Adapter and fine-tuned files
    with `zsclip adapt`)."""
    import torch

    import zsclip
    from zsclip.classifier.tip_adapter import TipAdapterClassifier
    from zsclip.heads.multilabel import MultiLabelClassifier
    from zsclip.hierarchy import TreeClassifier, parse_tree

    labels = shapes / "data" / "labels.txt"
    files = {"built": shapes / "built.zsc"}
    result = _zsclip("build", "--labels-file", labels, "-t", "photo", "-o", files["built"], "--model", "demo")
    assert result.exit_code == 0, result.output
    demo = zsclip.load_model("demo")
    names = [line.strip() for line in labels.read_text().splitlines() if line.strip()]
    flat = zsclip.ZeroShotClassifier.load(files["built"])
    keys = torch.nn.functional.normalize(flat.weights.T.float(), dim=1)  # one cache entry per class: its own vector
    files["tip-adapter"] = TipAdapterClassifier(
        flat.weights, flat.classnames, flat.synonyms, flat.logit_scale, None, flat.provenance, cache_keys=keys,
        cache_values=torch.arange(len(names)), alpha=1.0, beta=2.0).save(shapes / "tip.zsc")
    files["multi-label"] = MultiLabelClassifier.build(demo, names, "photo", score="negative", threshold=0.5,
                                                      cache=False).save(shapes / "tags.zsml")
    tree = parse_tree("shapes:\n" + "".join(f"  {name}:\n" for name in names), "yaml")
    files["tree"] = TreeClassifier.build(demo, tree, "photo", cache=False).save(shapes / "tree.zsct")
    return files


@pytest.mark.parametrize("kind", ["built", "tip-adapter", "tree"])
def test_eval_evaluates_every_kind_of_classifier_file_from_the_command_line(shapes, classifier_files, kind, tmp_path,
                                                                            no_model):
    """From a labelled store (no model: the files hold their classes and prompts), every kind evaluates."""
    output = tmp_path / "metrics.json"
    result = _zsclip("eval", "--data", shapes / "shapes.zse", "--classifier", classifier_files[kind], "-o", output)
    assert result.exit_code == 0, result.output
    record = json.loads(output.read_text())
    if kind == "tree":  # accuracy per level of the tree, for each mode
        levels = record["modes"]["flat"]["levels"]
        assert levels[-1]["accuracy"] > 0.5, levels
    else:
        assert record["metrics"]["acc1"] > 0.5, record["metrics"]  # the demo model knows shapes: chance is 1/6


@pytest.mark.slow
def test_eval_multi_label_takes_a_multi_label_classifier_file(shapes, classifier_files, tmp_path):
    tagged = shapes / "data" / "tagged.csv"
    with tagged.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    output = tmp_path / "tags.json"
    result = _zsclip("eval", "--data", tagged, "--multi-label", "--classifier", classifier_files["multi-label"],
                     "-o", output, "--workers", "0")
    assert result.exit_code == 0, result.output
    record = json.loads(output.read_text())
    assert 0 < record["metrics"]["mAP"] <= 1 and record["num_images"] == len(rows)
    assert record["score_comparison"]["softmax"] > 0.5, record["score_comparison"]  # the file's labels line up


def test_eval_of_a_classifier_file_on_images_and_templates_given_with_it_refused(shapes, classifier_files):
    data = shapes / "data"
    result = _zsclip("eval", "--data", data / "manifest.csv", "--classifier", classifier_files["built"], "--workers",
                     "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("built.zsc") and "acc1" in result.stdout
    for manifest, extra in (("tagged.csv", ["--multi-label", "--classifier", classifier_files["multi-label"]]),
                            ("manifest.csv", ["--classifier", classifier_files["built"]])):
        refused = _zsclip("eval", "--data", data / manifest, *extra, "--templates", "photo")
        assert refused.exit_code == 2 and len(_lines(refused.stderr)) == 1, refused.output
        assert "templates" in refused.stderr
    retrieval = _zsclip("eval", "--task", "retrieval", "--data", data / "manifest.csv", "--templates", "photo")
    assert retrieval.exit_code == 2 and "--templates does not apply to --task retrieval" in retrieval.stderr


def test_finetune_only_options_are_refused_with_the_other_methods_and_only_when_given(shapes, tmp_path):
    data = shapes / "data"
    for option, value in (("--steps", "100"), ("--lr", "0.0001")):  # even at its default value: given
        result = _zsclip("adapt", "--data", data / "manifest.csv", option, value, "-o", tmp_path / "a.zsc")
        assert result.exit_code == 2 and f"{option} applies to --method finetune" in result.stderr, result.output
        assert not (tmp_path / "a.zsc").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["linear", "tip-adapter", "finetune"])
def test_eval_evaluates_what_adapt_writes(shapes, tmp_path, method):
    data = shapes / "data"
    output = tmp_path / ("tuned" if method == "finetune" else "adapted.zsc")
    steps = ["--steps", "2"] if method == "finetune" else []
    made = _zsclip("adapt", "--data", data / "manifest.csv", "--labels-file", data / "labels.txt", "-t", "photo",
                   "--method", method, *steps, "--model", "demo", "-o", output, "--workers", "0")
    assert made.exit_code == 0, made.output
    model, classifier = ((f"local-dir:{output}", output / "classifier.zsc") if method == "finetune"
                         else ("demo", output))
    result = _zsclip("eval", "--data", data / "manifest.csv", "--model", model, "--classifier", classifier,
                     "-o", tmp_path / "m.json", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["acc1"] > 0.5


def test_embed_rerun_keeps_the_stores_dtype_and_loads_no_model_for_nothing_new(shapes, tmp_path, monkeypatch):
    store = tmp_path / "exact.zse"
    made = _zsclip("embed", EXAMPLES, "--model", "demo", "--dtype", "float32", "-o", store, "--workers", "0")
    assert made.exit_code == 0, made.output
    import zsclip.encoders.resolve

    loads = []
    real = zsclip.encoders.resolve.resolve_model
    monkeypatch.setattr(zsclip.encoders.resolve, "resolve_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    again = _zsclip("embed", EXAMPLES, "-o", store)  # the README's rerun: no --model, no --dtype
    assert again.exit_code == 0, again.output
    assert "0 encoded, 10 unchanged" in again.stderr and loads == []
    other = _zsclip("embed", EXAMPLES, "-o", store, "--dtype", "float16")  # given, and not the store's: refused
    assert other.exit_code == 2 and "float32" in other.stderr, other.output
    shutil.copy(EXAMPLES / "red_triangle.png", tmp_path / "new.png")
    grown = _zsclip("embed", EXAMPLES, tmp_path / "new.png", "-o", store, "--workers", "0")
    assert grown.exit_code == 0 and "1 encoded, 10 unchanged" in grown.stderr, grown.output
    assert len(loads) == 1  # a new file: the store's model loads, once


def test_search_reports_every_input_it_could_not_read(shapes, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(EXAMPLES / "red_triangle.png", folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "empty.jpg").write_bytes(b"")
    output = tmp_path / "hits.csv"
    result = _zsclip("search", folder, "red triangle", "--model", "demo", "-o", output, "--workers", "0")
    assert result.exit_code == 1, result.output
    skipped = [line for line in _lines(result.stderr) if line.startswith("zsclip: skipped")]
    assert len(skipped) == 2 and any("broken.png" in line for line in skipped) and any(
        "empty.jpg" in line for line in skipped), result.stderr
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["path"]).name for row in rows] == ["good.png", "broken.png", "empty.jpg"]
    assert rows[0]["rank"] == "1" and not rows[0]["error"]
    assert all(row["error"] and not row["rank"] and not row["score"] for row in rows[1:])
    terminal = _zsclip("search", folder, "red triangle", "--model", "demo", "--workers", "0")
    assert terminal.exit_code == 1 and terminal.stdout.count("good.png") == 1
    assert len([line for line in _lines(terminal.stderr) if line.startswith("zsclip: skipped")]) == 2


@pytest.mark.parametrize("target", ["missing.zse", "missing_folder/", "nothing*.png"])
def test_search_names_a_missing_input_before_any_model_loads(tmp_path, target, no_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _zsclip("search", target, "a red star", "-o", "hits.jsonl")  # the default model: never loaded
    assert result.exit_code == 1, result.output
    assert _lines(result.stderr)[0].startswith(f"zsclip: skipped {target}: "), result.stderr
    rows = [json.loads(line) for line in Path("hits.jsonl").read_text().splitlines()]
    assert [row["path"] for row in rows] == [target] and rows[0]["error"]
    if target == "missing.zse":
        assert "no such store" in result.stderr


def test_a_store_answers_search_with_exit_0_and_a_bad_query_image_is_one_line(shapes, tmp_path):
    store = shapes / "shapes.zse"
    result = _zsclip("search", store, "a red star", "-k", "3")
    assert result.exit_code == 0 and len(_lines(result.stdout)) == 3, result.output
    for name in ("missing.png", "broken.png"):
        if name == "broken.png":
            (tmp_path / name).write_bytes(b"GIF89a")
        refused = _zsclip("search", store, "--image", tmp_path / name)
        assert refused.exit_code == 2 and len(_lines(refused.stderr)) == 1 and name in refused.stderr


def test_serve_names_a_missing_store_or_classifier_file_before_loading_the_model(tmp_path, no_model):
    pytest.importorskip("fastapi")
    for args, named in ((["--store", tmp_path / "missing.zse"], "no such store"),
                        (["--classifier", tmp_path / "missing.zsc"], "missing.zsc")):
        result = _zsclip("serve", *args, "--port", "0")  # the default model: never loaded
        assert result.exit_code == 2 and len(_lines(result.stderr)) == 1 and named in result.stderr, result.output
