"""Evaluation collections: class-per-folder trees and CSV/JSONL manifests."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from zsclip.data.collections import image_folder, manifest
from zsclip.errors import InputError


@pytest.fixture
def tree(tmp_path):
    for folder, names in {"golden_retriever": ["a.jpg", "b.png"], "tabby_cat": ["c.jpg"], ".hidden": ["d.jpg"]}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            Image.new("RGB", (8, 8)).save(tmp_path / folder / name)
    (tmp_path / "tabby_cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_classes_from_sorted_folder_names(tree):
    collection = image_folder(tree)
    assert collection.classnames == ["golden retriever", "tabby cat"]
    assert [(item.name.split("/")[-1], item.target) for item in collection.items] == [
        ("a.jpg", 0), ("b.png", 0), ("c.jpg", 1)]


def test_image_folder_names_from_a_labels_list(tree):
    assert image_folder(tree, ["dog", "cat"]).classnames == ["dog", "cat"]
    with pytest.raises(InputError, match="3 class names given for 2 class folders"):
        image_folder(tree, ["dog", "cat", "bird"])


def test_csv_manifest_with_names_indices_relative_paths_and_bad_rows(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "m.csv").write_text("path,label\nimgs/1.jpg,dog\n/abs/2.jpg,cat\nimgs/3.jpg,1\nimgs/4.jpg,horse\n"
                                    "imgs/5.jpg,7\n,dog\n")
    collection = manifest(tmp_path / "m.csv")
    assert collection.classnames == ["dog", "cat", "horse"]
    items = collection.items
    assert items[0].name == str(tmp_path / "imgs" / "1.jpg") and items[0].target == 0 and items[0].error is None
    assert items[1].name == "/abs/2.jpg" and items[1].target == 1
    assert items[2].target == 1
    assert "out of range" in items[4].error and f"{tmp_path / 'm.csv'}:6" in items[4].error
    assert items[5].name == f"{tmp_path / 'm.csv'}:7" and "no path in this row" in items[5].error
    with_names = manifest(tmp_path / "m.csv", ["dog", "cat"])
    assert "'horse' is not one of the classes" in with_names.items[3].error


def test_jsonl_manifest(tmp_path):
    lines = [{"path": "x.jpg", "label": "dog"}, {"path": "y.jpg", "label": "cat"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    collection = manifest(tmp_path / "m.jsonl")
    assert collection.classnames == ["dog", "cat"] and [i.target for i in collection.items] == [0, 1]


def test_bad_jsonl_lines_are_error_rows(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.jpg", "label": "dog"}\n{broken\n[1, 2]\n')
    items = manifest(tmp_path / "m.jsonl").items
    assert items[0].error is None
    assert "m.jsonl:2: not valid JSON" in items[1].error and "m.jsonl:3: not an object" in items[2].error


@pytest.mark.parametrize("name, content, message", [
    ("m.csv", "file,class\na.jpg,dog\n", "header row"),
    ("m.jsonl", '{broken\n[1]\n', r"no line is a JSON object .* \(line 1: not valid JSON"),
    ("m.txt", "a.jpg dog\n", "use .csv"),
    ("m.csv", "path,label\na.jpg,0\n", "labels classes by index"),
])
def test_bad_manifests_are_one_line_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message):
        manifest(tmp_path / name)
