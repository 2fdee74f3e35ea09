"""Hugging Face datasets read with pyarrow, each written here exactly as ``datasets`` lays it out:
Parquet with an Image struct and a ClassLabel (names in the schema's ``huggingface`` metadata), a
``save_to_disk`` folder (Arrow IPC streams, dataset_info.json, state.json), and an imagefolder with
metadata.csv / metadata.jsonl. Each gives the eval and the rows of the same images as a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import zsclip
from zsclip.cli import main
from zsclip.data.hf import hf_layout, open_hf
from zsclip.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
IMAGES = sorted(EXAMPLES.glob("*.png"))
CLASSES = sorted({p.stem for p in IMAGES})  # folder names, "_" for spaces as HF names often are
OPTIONS = zsclip.RunOptions(precision="fp32", workers=0, batch_size=4)
CLI = ["--model", "demo", "--precision", "fp32", "-j", "0", "-b", "4"]
FEATURES = {"image": {"_type": "Image"}, "label": {"names": CLASSES, "_type": "ClassLabel"}}
SCHEMA = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64())],
                   metadata={"huggingface": json.dumps({"info": {"features": FEATURES}})})


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo")


def _records(broken: bool = False):
    records = [{"image": {"bytes": p.read_bytes(), "path": p.name}, "label": CLASSES.index(p.stem)} for p in IMAGES]
    if broken:
        records.append({"image": {"bytes": b"not an image", "path": "bad.png"}, "label": 0})
    return records


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    folder = root / "folder"
    for p in IMAGES:
        (folder / p.stem).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / p.stem / p.name)
    table = pa.Table.from_pylist(_records(), schema=SCHEMA)
    (root / "hub" / "data").mkdir(parents=True)
    pq.write_table(table, root / "hub" / "data" / "test-00000-of-00001.parquet", row_group_size=3)
    disk = root / "disk"
    disk.mkdir()
    with pa.OSFile(str(disk / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
        for batch in table.to_batches(max_chunksize=4):
            writer.write_batch(batch)
    (disk / "dataset_info.json").write_text(json.dumps({"features": FEATURES, "splits": {}}))
    (disk / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                 "_fingerprint": "0", "_format_columns": None, "_split": "test"}))
    csv_folder = root / "imagefolder_csv"
    jsonl_folder = root / "imagefolder_jsonl"
    for target in (csv_folder, jsonl_folder):
        (target / "images").mkdir(parents=True)
        for p in IMAGES:
            shutil.copy(p, target / "images" / p.name)
    (csv_folder / "metadata.csv").write_text("file_name,label\n" + "".join(f"images/{p.name},{p.stem}\n"
                                                                             for p in IMAGES))
    (jsonl_folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"images/{p.name}",
                                                                     "label": p.stem}) + "\n" for p in IMAGES))
    return root


def test_layouts_are_recognised(datasets):
    assert hf_layout(datasets / "hub") == "parquet"
    assert hf_layout(datasets / "hub" / "data" / "test-00000-of-00001.parquet") == "parquet"
    assert hf_layout(datasets / "disk") == "arrow"
    assert hf_layout(datasets / "imagefolder_csv") == hf_layout(datasets / "imagefolder_jsonl") == "imagefolder"
    assert hf_layout(datasets / "folder") is None
    table = open_hf(datasets / "hub")
    assert table.classnames == [c.replace("_", " ") for c in CLASSES]
    assert table.parts == [(0, (0, 1, 2, 3), 0)]  # 10 rows in row groups of 3: one part, its first row 0


@pytest.mark.parametrize("name", ["hub", *(pytest.param(name, marks=pytest.mark.slow)  # the same eval, other layouts
                                   for name in ("disk", "imagefolder_csv", "imagefolder_jsonl"))])
def test_eval_of_a_hf_dataset_equals_the_same_images_as_a_folder(datasets, demo, name, tmp_path):
    reference = zsclip.evaluate(datasets / "folder", demo, ["photo"], options=OPTIONS)
    result = zsclip.evaluate(datasets / name, demo, ["photo"], options=OPTIONS)
    assert result.metrics["photo"]["acc1"] == reference.metrics["photo"]["acc1"]
    assert result.metrics["photo"]["mean_per_class_recall"] == reference.metrics["photo"]["mean_per_class_recall"]
    cli = CliRunner().invoke(main, ["eval", "--data", str(datasets / name), *CLI, "-t", "photo",
                                    "-o", str(tmp_path / "eval.json")])
    assert cli.exit_code == 0, cli.output


def test_classify_rows_of_a_parquet_split_match_the_images(datasets, demo):
    labels = [c.replace("_", " ") for c in CLASSES]
    rows = list(zsclip.classify(datasets / "hub", labels, encoder=demo, options=OPTIONS))
    images = {Path(r.source).name: r for r in zsclip.classify(datasets / "folder", labels, encoder=demo,
                                                              options=OPTIONS)}
    assert [r.source.rsplit("#", 1)[1] for r in rows] == [str(i) for i in range(len(IMAGES))]
    for row, image in zip(rows, IMAGES, strict=True):
        assert row.labels[0] == images[image.name].labels[0]
        assert row.scores[0] == pytest.approx(images[image.name].scores[0], abs=1e-5)


def test_a_bad_row_is_an_error_row_and_the_rest_goes_on(tmp_path, demo):
    pq.write_table(pa.Table.from_pylist(_records(broken=True), schema=SCHEMA), tmp_path / "train.parquet")
    rows = list(zsclip.classify(tmp_path / "train.parquet", ["red", "blue"], encoder=demo, options=OPTIONS))
    assert [r.error is None for r in rows] == [True] * len(IMAGES) + [False]
    assert rows[-1].source.endswith(f"train.parquet#{len(IMAGES)}") and "not an image" in rows[-1].error


def test_embed_a_parquet_split_then_search_it(datasets, tmp_path):
    store = tmp_path / "hf.zse"
    result = CliRunner().invoke(main, ["embed", str(datasets / "hub"), *CLI, "-o", str(store)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "hits.jsonl"
    result = CliRunner().invoke(main, ["search", str(store), "a red circle", "-k", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "#" in json.loads(out.read_text().splitlines()[0])["path"]


def test_several_splits_are_refused_in_one_line(tmp_path):
    table = pa.Table.from_pylist(_records(), schema=SCHEMA)
    for split in ("train", "test"):
        pq.write_table(table, tmp_path / f"{split}-00000-of-00001.parquet")
    with pytest.raises(InputError, match="several splits"):
        open_hf(tmp_path)


def test_a_parquet_file_without_class_labels_is_refused_for_eval(tmp_path, demo):
    plain = pa.table({"image": [{"bytes": IMAGES[0].read_bytes(), "path": None}]})
    pq.write_table(plain, tmp_path / "x.parquet")
    with pytest.raises(InputError, match="no ClassLabel"):
        zsclip.evaluate(tmp_path / "x.parquet", demo, ["photo"], options=OPTIONS)
