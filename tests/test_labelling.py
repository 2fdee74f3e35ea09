"""Labelling sinks through `zsclip classify --format ...`: Label Studio tasks + config, a FiftyOne image
classification dataset, a Hugging Face imagefolder. Each output is read back as its tool reads it (JSON and
XML by their documented shapes, `datasets.load_dataset("imagefolder")`) and compared with the CSV rows of
the same run: the same label and score per image, for every head (flat, multi-label, tree, reject)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from PIL import Image

from zsclip.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = [p.stem for p in sorted(EXAMPLES.glob("*.png"))]
LABELS = [name.replace("_", " ") for name in NAMES]
COMMON = ["--model", "demo", "--precision", "fp32", "-j", "0", "-t", "photo"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelling")
    images = root / "photos"
    images.mkdir()
    for name in NAMES:
        shutil.copy(EXAMPLES / f"{name}.png", images / f"{name}.png")
    (images / "broken.png").write_bytes(b"not an image")
    shapes = sorted({label.split()[1] for label in LABELS})
    (root / "tree.yaml").write_text("".join(f"{shape}:\n" + "".join(f"  - {label}\n" for label in LABELS
                                                                   if label.endswith(shape)) for shape in shapes))
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root


def run(*args: str, code: int | None = 1):
    result = CliRunner().invoke(main, ["classify", *args], catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def reference(world) -> dict[str, dict]:
    """The flat head's answers written as CSV: what each labelling format must agree with."""
    out = world / "reference.csv"
    run(str(world / "photos"), "--labels-file", str(world / "labels.txt"), *COMMON, "-o", str(out))
    return {Path(row["path"]).stem: row for row in csv.DictReader(out.open()) if not row["error"]}


def read_tasks(path: Path) -> tuple[list[dict], ElementTree.Element]:
    tasks = json.loads(path.read_text())
    config = ElementTree.fromstring(path.with_name(f"{path.stem}.config.xml").read_text())
    return tasks, config


def test_label_studio_tasks_carry_each_images_prediction_and_a_matching_config(world, reference, tmp_path):
    head = ["--labels-file", str(world / "labels.txt")]
    out = tmp_path / "tasks.json"
    result = run(str(world / "photos"), *head, *COMMON, "-o", str(out), "--format", "label-studio",
                 "--image-root", str(world))
    assert "broken.png" in result.output  # the unreadable file is reported, and gets no task
    tasks, config = read_tasks(out)
    assert len(tasks) == len(NAMES)
    choices = config.find("Choices")
    assert config.find("Image").get("value") == "$image" and choices.get("toName") == "image"
    assert [c.get("value") for c in choices.findall("Choice")] == LABELS
    for task in tasks:
        image = task["data"]["image"]
        assert image.startswith("/data/local-files/?d=photos/")
        stem = Path(unquote(image.split("?d=")[1])).stem
        assert (world / unquote(image.split("?d=")[1])).is_file()  # relative to --image-root
        (prediction,) = task["predictions"]
        (answer,) = prediction["result"]
        assert answer["from_name"] == choices.get("name") and answer["to_name"] == "image"
        assert answer["type"] == "choices" and answer["value"]["choices"] == [reference[stem]["label"]]
        assert prediction["score"] == pytest.approx(float(reference[stem]["score"]), abs=1e-5)
        assert prediction["model_version"].startswith("zsclip demo@") and len(prediction["model_version"]) > 15


@pytest.mark.slow
def test_label_studio_multi_label_tree_and_reject_heads(world, tmp_path):
    photos = str(world / "photos")
    # multi-label: several choices in one result, a config that allows them
    out = tmp_path / "multi.json"
    run(photos, "--labels-file", str(world / "labels.txt"), "--multi-label", "--multi-score", "negative",
        "--threshold", "0.05", *COMMON,
        "-o", str(out), "--format", "label-studio")
    tasks, config = read_tasks(out)
    assert config.find("Choices").get("choice") == "multiple"
    reference = {}
    jsonl = tmp_path / "multi.jsonl"
    run(photos, "--labels-file", str(world / "labels.txt"), "--multi-label", "--multi-score", "negative",
        "--threshold", "0.05", *COMMON,
        "-o", str(jsonl))
    for line in jsonl.read_text().splitlines():
        row = json.loads(line)
        if not row["error"]:
            reference[Path(row["path"]).name] = row
    assert any(len(row["labels"]) > 1 for row in reference.values())  # the case is real
    for task in tasks:
        row = reference[Path(task["data"]["path"]).name]
        result = task["predictions"][0]["result"]
        assert (result[0]["value"]["choices"] if result else []) == row["labels"]
    # a label tree: Taxonomy, each answer's path from the top level
    out = tmp_path / "tree.json"
    run(photos, "--labels-tree", str(world / "tree.yaml"), *COMMON, "-o", str(out), "--format", "label-studio")
    tasks, config = read_tasks(out)
    taxonomy = config.find("Taxonomy")
    tops = {c.get("value"): [g.get("value") for g in c.findall("Choice")] for c in taxonomy.findall("Choice")}
    assert tops["star"] == [label for label in LABELS if label.endswith("star")]
    for task in tasks:
        (answer,) = task["predictions"][0]["result"]
        ((top, leaf),) = answer["value"]["taxonomy"]
        assert answer["type"] == "taxonomy" and leaf in tops[top]
    # rejection: the reject label is a choice of the config and the answer of refused images
    out = tmp_path / "reject.json"
    run(photos, "--labels-file", str(world / "labels.txt"), "--reject", "0.99", "--reject-label", "none of these",
        *COMMON, "-o", str(out), "--format", "label-studio")
    tasks, config = read_tasks(out)
    assert config.find("Choices").findall("Choice")[-1].get("value") == "none of these"
    refused = [t for t in tasks if t["predictions"][0]["result"][0]["value"]["choices"] == ["none of these"]]
    assert refused and all(t["predictions"][0]["score"] < 0.99 for t in refused)


def read_fiftyone(folder: Path) -> dict[str, tuple[str, float] | list]:
    """FiftyOne's documented FiftyOneImageClassificationDataset layout, read as its importer does: each id
    names data/<id>.<ext>; a target's label indexes ``classes``."""
    document = json.loads((folder / "labels.json").read_text())
    classes, out = document["classes"], {}
    files = {p.stem: p for p in (folder / "data").iterdir()}
    for uid, target in document["labels"].items():
        assert files[uid].is_file()
        source = files[uid].read_bytes()
        name = next(n for n in NAMES if (EXAMPLES / f"{n}.png").read_bytes() == source)
        if isinstance(target, list):
            out[name] = [(classes[t["label"]], t["confidence"]) for t in target]
        else:
            out[name] = (classes[target["label"]], target["confidence"])
    assert len(files) == len(document["labels"])
    return out


def test_fiftyone_dataset_holds_copies_and_labels_in_its_documented_layout(world, reference, tmp_path):
    head = ["--labels-file", str(world / "labels.txt")]
    out = tmp_path / "dataset"
    run(str(world / "photos"), *head, *COMMON, "-o", str(out), "--format", "fiftyone", "--files", "hardlink")
    labels = read_fiftyone(out)
    assert set(labels) == set(NAMES)
    for name, (label, confidence) in labels.items():
        assert label == reference[name]["label"]
        assert confidence == pytest.approx(float(reference[name]["score"]), abs=1e-5)
    # hard links: the same file, never a move
    linked = next((out / "data").iterdir())
    assert os.path.samefile(linked, world / "photos" / linked.name) and (world / "photos" / linked.name).exists()
    # the output is never overwritten
    again = run(str(world / "photos"), *head, *COMMON, "-o", str(out), "--format", "fiftyone", code=2)
    assert "already exists" in again.output


@pytest.mark.slow
def test_fiftyone_multi_label_targets_are_lists(world, tmp_path):
    out = tmp_path / "dataset"
    run(str(world / "photos"), "--labels-file", str(world / "labels.txt"), "--multi-label", "--multi-score", "negative",
        "--threshold", "0.05", *COMMON, "-o", str(out), "--format", "fiftyone")
    labels = read_fiftyone(out)
    assert all(isinstance(targets, list) for targets in labels.values())
    assert any(len(targets) > 1 for targets in labels.values())
    assert all(scores == sorted(scores, reverse=True) for scores in
               ([c for _, c in targets] for targets in labels.values()))


@pytest.mark.slow
def test_imagefolder_loads_with_hugging_face_datasets(world, reference, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the dev extra installs datasets")
    head = ["--labels-file", str(world / "labels.txt")]
    out = tmp_path / "meta"
    run(str(world / "photos"), *head, *COMMON, "-o", str(out), "--format", "imagefolder")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert len(loaded) == len(NAMES)
    rows = {Path(json.loads(line)["file_name"]).stem: json.loads(line)
            for line in (out / "metadata.jsonl").read_text().splitlines()}
    sizes = {Image.open(EXAMPLES / f"{name}.png").size for name in NAMES}
    assert {example["image"].size for example in loaded} <= sizes  # the images decode
    assert sorted(loaded["label"]) == sorted(reference[name]["label"] for name in NAMES)
    for name in NAMES:
        assert rows[name]["label"] == reference[name]["label"]
        assert rows[name]["score"] == pytest.approx(float(reference[name]["score"]), abs=1e-5)
    assert sorted(loaded["score"]) == pytest.approx(sorted(r["score"] for r in rows.values()))


@pytest.mark.parametrize("args,message", [
    (["-o", "{tmp}/d", "--format", "fiftyone", "--image-prefix", "http://x/"], "--image-prefix applies to"),
    (["-o", "{tmp}/t.json", "--format", "label-studio", "--files", "copy"], "--files applies to"),
    (["--format", "label-studio"], "add --output"),
    (["-o", "{tmp}/t.csv", "--format", "label-studio"], "with .json"),
    (["-o", "{tmp}/t.json", "--format", "csv"], "writes .csv files"),
    (["-o", "{tmp}/missing/d", "--format", "imagefolder"], "does not exist"),
    (["-o", "{tmp}/t.json", "--format", "label-studio", "--image-root", "{tmp}"], "is not under --image-root"),
])
def test_options_that_cannot_apply_are_refused_while_parsing(world, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run(str(world / "photos"), "--labels", "a,b", "--model", "demo", *args, code=2)
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_videos_are_one_task_each_and_clip_rows_are_refused(tmp_path):
    pytest.importorskip("av", reason="videos need the video extra (PyAV)")
    from zsclip import shapes

    videos = tmp_path / "videos"
    videos.mkdir()
    import random

    spec = shapes.sample_spec(random.Random(0), [("red", "star")])
    shapes.write_video(videos / "red_star.mp4", shapes.video_frames(spec, 2, 4), 4)
    out = tmp_path / "tasks.json"
    run(str(videos), "--labels", "red star,blue ring", *COMMON, "-o", str(out), "--format", "label-studio", code=0)
    tasks, config = read_tasks(out)
    assert config.find("Video").get("value") == "$video"
    ((task),) = tasks
    assert task["data"]["video"].endswith("red_star.mp4")
    assert task["predictions"][0]["result"][0]["to_name"] == "video"
    assert task["predictions"][0]["result"][0]["value"]["choices"] == ["red star"]
    refused = run(str(videos), "--labels", "red star,blue ring", *COMMON, "--segment", "1", "-o",
                  str(tmp_path / "t2.json"), "--format", "label-studio", code=2)
    assert "add --per-video" in refused.output
