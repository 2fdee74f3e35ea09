"""Hugging Face layouts as the ``datasets`` library writes and reads them, through the ``zsclip`` command:
an unlabelled split (labels -1), an imagefolder of split folders (``DIR/train/metadata.csv``), a labels
file holding the ClassLabel's names in another order, a path-only image row, damaged row groups and a
truncated Arrow file, and a Parquet file of many row groups read in one pass.

Fixtures are written by ``datasets`` itself (``save_to_disk``, ``to_parquet``) and checked against
``datasets.load_dataset`` where the question is what a layout means; the damage is done to those files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from zsclip.cli import main
from zsclip.data import hf

datasets = pytest.importorskip("datasets")  # the dev extra installs it; the format's own writer and reader

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
IMAGES = sorted(EXAMPLES.glob("*.png"))
CLASSES = sorted({p.stem for p in IMAGES})  # "black_cross", ...: ClassLabel names as the Hub often has them
DISPLAY = [name.replace("_", " ") for name in CLASSES]
CLI = ["--model", "demo", "--precision", "fp32", "-j", "0", "-b", "4"]


def _run(*args: str):
    result = CliRunner().invoke(main, [*args])
    return result.exit_code, result.output


def _dataset(labels: list[int] | None = None):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    return datasets.Dataset.from_dict(
        {"image": [str(p) for p in IMAGES],
         "label": labels if labels is not None else [CLASSES.index(p.stem) for p in IMAGES]}, features=features)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The examples as a labelled and an unlabelled split, each saved to disk and as Parquet by ``datasets``."""
    root = tmp_path_factory.mktemp("hf_layouts")
    labelled, unlabelled = _dataset(), _dataset([-1] * len(IMAGES))
    labelled.save_to_disk(str(root / "labelled"))
    labelled.to_parquet(str(root / "labelled.parquet"))
    unlabelled.save_to_disk(str(root / "unlabelled"))
    unlabelled.to_parquet(str(root / "unlabelled.parquet"))
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _eval(data: Path, out: Path, *extra: str) -> dict:
    code, output = _run("eval", "--data", str(data), *CLI, "-t", "photo", "-o", str(out), *extra)
    assert code == 0, output
    return json.loads(out.read_text())


# --- an unlabelled split: classify and embed read it, eval says the labels are missing ----------------------

@pytest.mark.parametrize("name", ["unlabelled.parquet", pytest.param("unlabelled", marks=pytest.mark.slow)])
def test_an_unlabelled_split_is_classified_and_refused_by_eval_in_one_line(written, name, tmp_path):
    assert set(datasets.load_from_disk(str(written / "unlabelled"))["label"]) == {-1}  # how datasets marks it
    code, output = _run("classify", str(written / name), *CLI, "-l", "red triangle", "-l", "blue star",
                        "-o", str(tmp_path / "rows.csv"))
    rows = _rows(tmp_path / "rows.csv")
    assert code == 0, output
    assert len(rows) == len(IMAGES) and not any(row["error"] for row in rows)
    code, output = _run("eval", "--data", str(written / name), *CLI, "-o", str(tmp_path / "eval.json"))
    assert code != 0 and not (tmp_path / "eval.json").exists()
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unlabelled" in lines[0] and "-1" in lines[0], output


@pytest.mark.slow
def test_an_unlabelled_split_is_embedded(written, tmp_path):
    code, output = _run("embed", str(written / "unlabelled"), *CLI, "-o", str(tmp_path / "u.zse"))
    assert code == 0, output
    assert f"{len(IMAGES)} encoded" in output and "0 failed" in output


# --- a labels file holds the ClassLabel's names in another order: matched by name ---------------------------

def test_a_labels_file_in_another_order_keeps_every_image_in_its_class(written, tmp_path):
    own = _eval(written / "labelled", tmp_path / "own.json")
    reversed_names = tmp_path / "reversed.txt"
    reversed_names.write_text("".join(f"{name}\n" for name in reversed(DISPLAY)))
    given = _eval(written / "labelled", tmp_path / "given.json", "--labels-file", str(reversed_names))
    assert given["classnames"] == list(reversed(DISPLAY))
    assert own["metrics"]["acc1"] == given["metrics"]["acc1"] == 1.0
    # the same images in the same classes: each class's row of the confusion matrix, moved to its new place
    order = [DISPLAY.index(name) for name in given["classnames"]]
    assert given["confusion_matrix"] == [[own["confusion_matrix"][i][j] for j in order] for i in order]


@pytest.mark.parametrize("change", ["unknown", "left out"])
def test_a_labels_file_naming_other_classes_is_refused_in_one_line(written, tmp_path, change):
    names = list(DISPLAY)
    names = names + ["zebra"] if change == "unknown" else names[1:]
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{name}\n" for name in names))
    code, output = _run("eval", "--data", str(written / "labelled.parquet"), *CLI, "--labels-file", str(labels))
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, output
    assert ("'zebra'" in lines[0] and "lacks" in lines[0]) if change == "unknown" else (
        repr(DISPLAY[0]) in lines[0] and "leaves out" in lines[0]), output


# --- an imagefolder of split folders, as the HF docs lay it out ---------------------------------------------

def _imagefolder(root: Path, splits: tuple[str, ...], kind: str) -> Path:
    """``root/<split>/`` per split: images with a metadata.csv or metadata.jsonl (``kind``), or class folders."""
    for split in splits:
        folder = root / split
        folder.mkdir(parents=True)
        for image in IMAGES:
            target = folder / image.stem / image.name if kind == "folders" else folder / image.name
            target.parent.mkdir(exist_ok=True)
            shutil.copy(image, target)
        if kind == "jsonl":
            (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": p.name, "label": p.stem}) + "\n"
                                                           for p in IMAGES))
        elif kind == "csv":
            (folder / "metadata.csv").write_text("file_name,label\n" + "".join(f"{p.name},{p.stem}\n" for p in IMAGES))
    return root


def _load_imagefolder(root: Path, tmp_path: Path):
    return datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("kind", ["csv", "jsonl", "folders"])
def test_split_folders_are_refused_naming_each_split(tmp_path, kind):
    root = _imagefolder(tmp_path / "data", ("train", "test"), kind)
    assert set(_load_imagefolder(root, tmp_path)) == {"train", "test"}  # what datasets reads there
    code, output = _run("eval", "--data", str(root), *CLI)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, output
    assert str(root / "train") in lines[0] and str(root / "test") in lines[0], output


@pytest.mark.parametrize("kind", ["csv", pytest.param("jsonl", marks=pytest.mark.slow),
                                  pytest.param("folders", marks=pytest.mark.slow)])
def test_a_folder_of_one_split_is_read_as_that_split(tmp_path, kind):
    root = _imagefolder(tmp_path / "data", ("train",), kind)
    loaded = _load_imagefolder(root, tmp_path)["train"]
    labels = [loaded.features["label"].int2str(i) for i in loaded["label"]] if kind == "folders" else loaded["label"]
    assert sorted(labels) == CLASSES  # datasets reads one image per class, labelled from the metadata / folder
    result = _eval(root, tmp_path / "eval.json")
    assert result["classnames"] == DISPLAY and result["num_images"] == len(IMAGES)  # not one class "train"
    assert result["metrics"]["acc1"] == 1.0
    if kind != "folders":  # the split named directly reads its metadata the same way
        assert _eval(root / "train", tmp_path / "direct.json")["classnames"] == DISPLAY


# --- rows: a path-only image, damaged data -----------------------------------------------------------------

def _hub_schema() -> pa.Schema:
    features = {"image": {"_type": "Image"}, "label": {"names": CLASSES, "_type": "ClassLabel"}}
    return pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64())],
                     metadata={"huggingface": json.dumps({"info": {"features": features}})})


@pytest.mark.slow  # a CLI run each; the reading itself is quick-tested below
def test_a_path_only_row_is_read_from_the_data_files_folder_and_named_when_missing(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    shutil.copy(IMAGES[0], tmp_path / "data" / "images" / IMAGES[0].name)
    records = [{"image": {"bytes": None, "path": f"images/{IMAGES[0].name}"}, "label": 0},
               {"image": {"bytes": None, "path": "images/missing.png"}, "label": 0}]
    pq.write_table(pa.Table.from_pylist(records, schema=_hub_schema()), tmp_path / "data" / "split.parquet")
    code, output = _run("classify", str(tmp_path / "data" / "split.parquet"), *CLI, "-l", "red triangle",
                        "-l", "black cross", "-o", str(tmp_path / "rows.csv"))
    found, missing = _rows(tmp_path / "rows.csv")
    assert code == 1, output
    assert not found["error"] and found["label"] == DISPLAY[0]
    assert str(tmp_path / "data" / "images" / "missing.png") in missing["error"]


@pytest.mark.slow  # a CLI run each; the reading itself is quick-tested below
def test_a_damaged_row_group_costs_its_own_rows(tmp_path):
    table = pa.Table.from_pylist([{"image": {"bytes": p.read_bytes(), "path": p.name}, "label": CLASSES.index(p.stem)}
                                  for p in IMAGES], schema=_hub_schema())
    file = tmp_path / "split.parquet"
    pq.write_table(table, file, row_group_size=1)
    offset = pq.ParquetFile(file).metadata.row_group(5).column(0).data_page_offset
    data = bytearray(file.read_bytes())
    data[offset : offset + 32] = b"\xff" * 32  # the page header of row 5's image: not readable
    file.write_bytes(bytes(data))
    code, output = _run("classify", str(file), *CLI, "-l", "red", "-l", "blue", "-o", str(tmp_path / "rows.csv"))
    rows = _rows(tmp_path / "rows.csv")
    assert code == 1, output
    assert [row["path"].rsplit("#", 1)[1] for row in rows] == [str(i) for i in range(len(IMAGES))]
    assert [bool(row["error"]) for row in rows] == [i == 5 for i in range(len(IMAGES))]
    assert "rows 5..5" in rows[5]["error"]


@pytest.mark.slow  # a CLI run each; the reading itself is quick-tested below
def test_a_truncated_arrow_file_names_the_first_row_it_lost(written, tmp_path):
    disk = tmp_path / "disk"
    shutil.copytree(written / "labelled", disk)
    (arrow,) = disk.glob("*.arrow")
    table = pa.ipc.open_stream(arrow.read_bytes()).read_all()  # in memory: the file is rewritten below
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=4):  # rows 0-3, 4-7, 8-9: as datasets writes longer splits
            writer.write_batch(batch)
    with pa.OSFile(str(arrow)) as source:
        reader = pa.ipc.open_stream(source)
        next(iter(reader))
        first_batch_end = source.tell()
    arrow.write_bytes(arrow.read_bytes()[: first_batch_end + 100])  # cut inside the second batch
    code, output = _run("classify", str(disk), *CLI, "-l", "red", "-l", "blue", "-o", str(tmp_path / "rows.csv"))
    rows = _rows(tmp_path / "rows.csv")
    assert code == 1, output
    assert [bool(row["error"]) for row in rows] == [False] * 4 + [True]
    assert rows[4]["path"].endswith("#4") and "row 4" in rows[4]["error"]


# --- reading is linear in the row groups -------------------------------------------------------------------

def test_a_file_of_many_row_groups_is_opened_once_and_read_in_order(tmp_path, monkeypatch):
    """Every part once reopened its file (parsing a footer that grows with the groups) and re-counted the
    rows of every earlier group: quadratic. Now consecutive groups form parts and a file opens once."""
    table = pa.Table.from_pylist([{"image": {"bytes": b"x", "path": f"{i}.png"}, "label": i % len(CLASSES)}
                                  for i in range(600)], schema=_hub_schema())
    pq.write_table(table, tmp_path / "many.parquet", row_group_size=1)
    split = hf.open_hf(tmp_path / "many.parquet")
    assert len(split.parts) == 3  # 256 + 256 + 88 one-row groups
    opened = []
    real = pq.ParquetFile

    def counted(*args, **kwargs):
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", counted)
    hf._opened.cache_clear()
    rows = [row for part in split.parts for row in hf.table_rows(split, part)]
    assert len(opened) == 1
    assert [name.rsplit("#", 1)[1] for name, *_ in rows] == [str(i) for i in range(600)]
    assert [target for *_, target, _ in rows] == [i % len(CLASSES) for i in range(600)]


# --- tampered metadata beside the data (the adversarial suite runs a few in a subprocess) --------------------

@pytest.mark.parametrize("field, value, words", [
    ("_data_files", "data.arrow", ["state.json", "'_data_files' is a string"]),
    ("_data_files", [], ["state.json", "'_data_files' is an empty list"]),
    ("_data_files", [1], ["state.json", "'_data_files'[0] is a number"]),
    ("_data_files", [{"filename": 3}], ["state.json", "'_data_files'[0] is 3"]),
    ("_data_files", [{"filename": "/etc/passwd"}], ["state.json", "'_data_files'[0] is '/etc/passwd'"]),
    ("names", "red", ["dataset_info.json", "features.label.names is a string"]),
    ("names", [1, 2], ["dataset_info.json", "features.label.names is a list"]),
    ("features", [], ["dataset_info.json", "'features' is an empty list"]),
    ("image", "renamed", ["dataset_info.json", "Image column 'renamed'"]),
])
def test_tampered_save_to_disk_metadata_is_one_line_naming_the_field(written, tmp_path, field, value, words):
    split = tmp_path / "split"
    shutil.copytree(written / "labelled", split)
    state, info = json.loads((split / "state.json").read_text()), json.loads((split / "dataset_info.json").read_text())
    if field == "_data_files":
        state[field] = value
    elif field == "names":
        info["features"]["label"]["names"] = value
    elif field == "features":
        info["features"] = value
    else:
        info["features"][value] = info["features"].pop(field)
    (split / "state.json").write_text(json.dumps(state))
    (split / "dataset_info.json").write_text(json.dumps(info))
    code, output = _run("eval", "--data", str(split), *CLI)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, output
    assert all(word in lines[0] for word in words), output


def test_a_dataset_dict_whose_splits_are_not_names_is_one_line(written, tmp_path):
    (tmp_path / "dict").mkdir()
    (tmp_path / "dict" / "dataset_dict.json").write_text(json.dumps({"splits": "train"}))
    code, output = _run("eval", "--data", str(tmp_path / "dict"), *CLI)
    assert code == 2 and "dataset_dict.json: 'splits' is a string" in output, output


def test_one_metadata_file_listing_two_splits_is_refused(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for image in IMAGES:
            shutil.copy(image, root / split / image.name)
    (root / "metadata.csv").write_text("file_name,label\n" + "".join(
        f"{split}/{p.name},{p.stem}\n" for split in ("train", "test") for p in IMAGES))
    assert set(_load_imagefolder(root, tmp_path)) == {"train", "test"}  # two splits to datasets, not one
    code, output = _run("eval", "--data", str(root), *CLI)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "splits test, train" in lines[0], output
