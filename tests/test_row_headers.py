"""One header rule for every row writer: each CSV read back with the csv module has exactly its
header's fields in every row, each value under its own column, for every head x media kind (photos,
whole videos, --segment videos) and for search; JSONL keys and Parquet columns are the same fields.

Timed rows (video clips) once carried start and end values under a header without them, so a tree's,
a multi-label head's and search's columns were all shifted one place in a spreadsheet."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

import zsclip
from zsclip import shapes
from zsclip.cli import main

av = pytest.importorskip("av")

LABELS = ["red circle", "blue square", "green star"]
CLI = ["--model", "demo", "--precision", "fp32", "-j", "0", "-b", "8"]
TREE = "round:\n  - red circle\nangular:\n  - blue square\n  - green star\n"
HEADS = {  # head -> (options, its columns after path / start, end)
    "flat": (["--labels", ",".join(LABELS), "-t", "photo", "-k", "2"], ["label", "score", "label_2", "score_2"]),
    "classifier file": (["--classifier", "{world}/flat.zsc", "-k", "1"], ["label", "score"]),
    "tree": (["--labels-tree", "{world}/tree.yaml", "-t", "photo"],
             ["level1", "level1_probability", "level2", "level2_probability"]),
    "reject": (["--labels-tree", "{world}/tree.yaml", "-t", "photo", "--reject", "0.3"],
               ["level1", "level1_probability", "level2", "level2_probability", "openset_score"]),
    "multi-label": (["--labels", ",".join(LABELS), "-t", "photo", "--multi-label", "--threshold", "0.2"],
                    ["labels", "scores"]),
}
MEDIA = {  # media kind -> (input folder, options, timed, expected (name, start, end) rows)
    "photos": ("photos", [], False, [("a.png", None, None), ("b.png", None, None)]),
    "whole videos": ("mixed", ["--frames", "2"], True, [("a.png", None, None), ("clip.mp4", 0.0, 2.0)]),
    "segments": ("mixed", ["--segment", "1", "--frames", "1"], True,
                 [("a.png", None, None), ("clip.mp4", 0.0, 1.0), ("clip.mp4", 1.0, 2.0)]),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rows")
    rng = random.Random(5)
    red, blue = (shapes.sample_spec(rng, [pair]) for pair in [("red", "circle"), ("blue", "square")])
    for folder in ("photos", "mixed"):
        (root / folder).mkdir()
        shapes.render(red).save(root / folder / "a.png")
    shapes.render(blue).save(root / "photos" / "b.png")
    shapes.write_video(root / "mixed" / "clip.mp4", shapes.video_frames(red, 2, 4, change_to=blue), 4)
    (root / "tree.yaml").write_text(TREE)
    zsclip.ZeroShotClassifier.build(zsclip.load_model("demo"), LABELS, "photo", cache=False).save(root / "flat.zsc")
    return root


def _classify(world: Path, head: str, media: str, out: Path) -> tuple[list[str], bool, list]:
    options, columns = HEADS[head]
    folder, media_options, timed, spans = MEDIA[media]
    options = [option.replace("{world}", str(world)) for option in options]
    result = CliRunner().invoke(main, ["classify", str(world / folder), *options, *CLI, *media_options,
                                       "--cache-dir", str(world / "cache"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return ["path", *(["start", "end"] if timed else []), *columns, "error"], timed, spans


def _check_values(row: dict, head: str) -> None:
    """Each value is the kind its column names (a shifted row puts a number under a label and so on)."""
    for column, value in row.items():
        if column in ("path", "error", "start", "end"):
            continue
        if column.startswith("label") and column != "labels" or column in ("level2",):
            assert value in LABELS or value == "unknown", (column, value)
        elif column == "level1":
            assert value in ("round", "angular", "unknown"), (column, value)
        elif column == "labels":
            assert set(filter(None, value.split(";"))) <= set(LABELS), value
        elif column == "scores":
            assert all(0 <= float(v) <= 1 for v in filter(None, value.split(";"))), value
        elif column == "openset_score" or column.startswith("score") or column.endswith("_probability"):
            assert value == "" and column.endswith("_probability") or 0 <= float(value) <= 1, (column, value)
        else:
            raise AssertionError(f"unexpected column {column}")


def _spans(rows: list[dict], timed: bool) -> list:
    def seconds(value):
        return None if value in ("", None) else float(value)

    return [(Path(r["path"]).name, seconds(r.get("start")) if timed else None, seconds(r.get("end")) if timed
             else None) for r in rows]


QUICK = {("tree", "segments"), ("multi-label", "whole videos")}  # the rest of the matrix runs with the slow tests


@pytest.mark.parametrize(("head", "media"), [
    pytest.param(head, media, marks=() if (head, media) in QUICK else pytest.mark.slow)
    for head in HEADS for media in MEDIA])
def test_every_csv_row_has_its_header_s_fields(world, tmp_path, head, media):
    out = tmp_path / "rows.csv"
    header, timed, spans = _classify(world, head, media, out)
    with out.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == header
    for row in rows:  # DictReader puts surplus values under None and fills missing ones with None
        assert list(row) == header and None not in row.values(), row
        assert row["error"] == "", row
        _check_values(row, head)
    assert _spans(rows, timed) == spans


@pytest.mark.slow
@pytest.mark.parametrize("extension", [".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize("head", list(HEADS))
def test_json_keys_and_parquet_columns_are_the_same_fields(world, tmp_path, head, extension):
    out = tmp_path / f"rows{extension}"
    header, timed, spans = _classify(world, head, "segments", out)
    if head in ("flat", "classifier file"):  # top-k rows: the ranked columns are one list
        header = ["path", "start", "end", "predictions" if extension != ".parquet" else "labels",
                  *([] if extension != ".parquet" else ["scores"]), "error"]
    if extension == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column_names == header
        rows = table.to_pylist()
    else:
        text = out.read_text(encoding="utf-8")
        rows = json.loads(text) if extension == ".json" else [json.loads(line) for line in text.splitlines()]
        assert all(list(row) == header for row in rows), rows
    assert _spans(rows, timed) == spans


@pytest.mark.slow
def test_search_csv_has_start_and_end_in_its_header(world, tmp_path):
    store = tmp_path / "clips.zse"
    embed = CliRunner().invoke(main, ["embed", str(world / "mixed"), *CLI, "--segment", "1", "--frames", "1",
                                      "-o", str(store)])
    assert embed.exit_code == 0, embed.output
    out = tmp_path / "hits.csv"
    result = CliRunner().invoke(main, ["search", str(store), "a blue square", "-k", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with out.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["path", "start", "end", "rank", "score", "error"]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3] and all(-1 <= float(r["score"]) <= 1 for r in rows)
    assert sorted(_spans(rows, True), key=str) == sorted(MEDIA["segments"][3], key=str)
    assert rows[0]["path"].endswith("clip.mp4") and (rows[0]["start"], rows[0]["end"]) == ("1.000", "2.000")
    # a store of photos only: no span columns at all
    photos = tmp_path / "photos.zse"
    assert CliRunner().invoke(main, ["embed", str(world / "photos"), *CLI, "-o", str(photos)]).exit_code == 0
    result = CliRunner().invoke(main, ["search", str(photos), "a blue square", "-k", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with out.open(newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["path", "rank", "score", "error"]
