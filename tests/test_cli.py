"""`zsclip classify` / `build` / `models` end to end: real files, real decoding, a real HTTP server."""

from __future__ import annotations

import csv
import functools
import http.server
import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from zsclip.cli import main

LABELS = "red|crimson,green,blue"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Good images in several modes and formats, one nested, one large JPEG."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested").mkdir()
    Image.new("RGB", (1600, 1200), (220, 20, 20)).save(folder / "large.jpg", quality=90)
    Image.new("RGBA", (64, 48), (20, 20, 220, 120)).save(folder / "alpha.png")
    Image.new("L", (50, 50), 128).save(folder / "grey.png")
    Image.new("P", (40, 40)).save(folder / "palette.gif")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(folder / "nested" / "cmyk.jpg")
    Image.new("I;16", (40, 40), 30000).save(folder / "nested" / "sixteen.png")
    (folder / "notes.txt").write_text("not an image and not an image extension: skipped by folder search")
    return folder


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, photos) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    jpeg = (photos / "large.jpg").read_bytes()
    files = {
        "empty": folder / "empty.jpg",
        "truncated": folder / "truncated.jpg",
        "not_an_image": folder / "text.jpg",
        "bomb": folder / "bomb.png",
        "broken_link": folder / "link.jpg",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(jpeg[: len(jpeg) // 3])
    files["not_an_image"].write_text("hello, I am text")
    Image.new("1", (3000, 2000)).save(files["bomb"])  # 6 megapixels in a few kB
    os.symlink(folder / "does-not-exist.jpg", files["broken_link"])
    return files


@pytest.fixture(scope="module")
def http_server(photos):
    handler = functools.partial(_QuietHandler, directory=str(photos))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _classify(model_dir: str, *args: str, input: str | None = None):
    return _run("classify", *args, "--model", model_dir, "--labels", LABELS, "--templates", "photo",
                "--workers", "0", "--max-pixels", "5000000", input=input)


def test_folder_to_csv_has_one_row_per_image_with_top_k(tiny_clip_dir, photos, tmp_path):
    out = tmp_path / "results.csv"
    result = _classify(tiny_clip_dir, str(photos), "--top-k", "2", "--output", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "label", "score", "label_2", "score_2", "error"]
    assert sorted(Path(r["path"]).name for r in rows) == ["alpha.png", "cmyk.jpg", "grey.png", "large.jpg",
                                                          "palette.gif", "sixteen.png"]
    for row in rows:
        assert row["label"] in {"red", "green", "blue"} and row["label_2"] in {"red", "green", "blue"}
        assert 1 >= float(row["score"]) >= float(row["score_2"]) >= 0 and row["error"] == ""
    assert "classified 6 of 6" in result.stderr


def test_jsonl_and_json_outputs_hold_the_same_predictions(tiny_clip_dir, photos, tmp_path):
    jsonl, as_json = tmp_path / "r.jsonl", tmp_path / "r.json"
    assert _classify(tiny_clip_dir, str(photos), "--output", str(jsonl)).exit_code == 0
    assert _classify(tiny_clip_dir, str(photos), "--output", str(as_json)).exit_code == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    whole = json.loads(as_json.read_text())
    assert lines == whole and len(whole) == 6
    first = whole[0]
    assert set(first) == {"path", "predictions", "error"} and first["error"] is None
    assert len(first["predictions"]) == 3 and set(first["predictions"][0]) == {"label", "score"}
    scores = [p["score"] for p in first["predictions"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-4)


def test_terminal_table_without_output(tiny_clip_dir, photos):
    result = _classify(tiny_clip_dir, str(photos / "large.jpg"), "--top-k", "2")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].endswith("large.jpg") and lines[1].strip().startswith("1. ") and "%" in lines[1]
    assert lines[2].strip().startswith("2. ")


def test_every_bad_input_is_reported_and_skipped_next_to_good_images(tiny_clip_dir, photos, bad_files,
                                                                       http_server, tmp_path):
    out = tmp_path / "mixed.jsonl"
    inputs = [str(photos / "large.jpg"), *map(str, bad_files.values()), str(tmp_path / "missing.jpg"),
              f"{http_server}/alpha.png", f"{http_server}/nope.png", "http://127.0.0.1:9/refused.jpg",
              str(photos / "grey.png")]
    result = _classify(tiny_clip_dir, *inputs, "--output", str(out))
    assert result.exit_code == 1
    records = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(records) == inputs  # input order, one row each
    good = [str(photos / "large.jpg"), f"{http_server}/alpha.png", str(photos / "grey.png")]
    for path in good:
        assert records[path]["error"] is None and len(records[path]["predictions"]) == 3
    reasons = {
        str(bad_files["empty"]): "empty file",
        str(bad_files["truncated"]): "truncated",
        str(bad_files["not_an_image"]): "not an image",
        str(bad_files["bomb"]): "over the limit",
        str(bad_files["broken_link"]): "no such file",
        str(tmp_path / "missing.jpg"): "no such file",
        f"{http_server}/nope.png": "HTTP 404",
        "http://127.0.0.1:9/refused.jpg": "unreachable",
    }
    for path, reason in reasons.items():
        assert reason in records[path]["error"] and records[path]["predictions"] == []
        assert f"skipped {path}: " in result.stderr
    assert "classified 3 of 11 images; 8 failed" in result.stderr


def test_decoding_in_worker_processes_gives_the_same_results(tiny_clip_dir, photos, bad_files, tmp_path):
    inline, workers = tmp_path / "inline.jsonl", tmp_path / "workers.jsonl"
    inputs = [str(photos), str(bad_files["truncated"])]
    assert _classify(tiny_clip_dir, *inputs, "--batch-size", "2", "--output", str(inline)).exit_code == 1
    result = _run("classify", *inputs, "--model", tiny_clip_dir, "--labels", LABELS, "--templates", "photo",
                  "--workers", "2", "--batch-size", "2", "--output", str(workers))
    assert result.exit_code == 1
    assert inline.read_text() == workers.read_text()


def test_glob_patterns_and_stdin(tiny_clip_dir, photos, tmp_path):
    out = tmp_path / "glob.csv"
    assert _classify(tiny_clip_dir, f"{photos}/**/*.jpg", "--output", str(out)).exit_code == 0
    assert sorted(Path(r["path"]).name for r in csv.DictReader(out.open())) == ["cmyk.jpg", "large.jpg"]
    stdin_out = tmp_path / "stdin.csv"
    paths = f"{photos / 'grey.png'}\n\n{photos / 'alpha.png'}\n"
    assert _classify(tiny_clip_dir, "-", "--output", str(stdin_out), input=paths).exit_code == 0
    assert [Path(r["path"]).name for r in csv.DictReader(stdin_out.open())] == ["grey.png", "alpha.png"]


@pytest.mark.slow
def test_real_entry_point_with_stdin_paths(tiny_clip_dir, photos, tmp_path):
    out = tmp_path / "e2e.jsonl"
    env = dict(os.environ, ZSCLIP_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "zsclip.cli", "classify", "-", "--model", tiny_clip_dir, "--labels", LABELS,
               "--templates", "photo", "--output", str(out)]
    result = subprocess.run(command, input=f"{photos / 'large.jpg'}\n{photos / 'nope.jpg'}\n", text=True,
                            capture_output=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["error"] is None for r in records] == [True, False]
    assert "Traceback" not in result.stderr


def test_output_is_written_atomically(tiny_clip_dir, photos, tmp_path, monkeypatch):
    from zsclip.tasks.classify import Prediction

    out = tmp_path / "results.csv"
    out.write_text("previous complete results\n")

    def explode(*args, **kwargs):
        yield Prediction("first.jpg", ["red"], [0.9])
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("zsclip.tasks.classify"), "answers", explode)  # read when it runs
    result = _classify(tiny_clip_dir, str(photos), "--output", str(out))
    assert result.exit_code == 130 and len(result.stderr.strip().splitlines()) == 1  # one interruption line
    assert "interrupted after 1 of" in result.stderr and f"the rows so far are in {out}.partial" in result.stderr
    assert out.read_text() == "previous complete results\n"  # never replaced by a half file
    partial = tmp_path / "results.csv.partial"
    assert "first.jpg" in partial.read_text()


@pytest.mark.parametrize("args, message", [
    ([], "no labels"),
    (["--labels", "dog,dog"], "given twice"),
    (["--labels", "dog,cat", "--templates", "nonsense-set"], "unknown template set"),
    (["--labels", "dog,cat", "--model", "ViT-B-33"], "unknown open_clip model"),
    (["--labels", "dog,cat", "--output", "results.xlsx"], "unknown format"),
    (["--labels", "dog,cat", "--model", "ViT-B-33", "--output", "r.xlsx"], "unknown format"),  # before any load
    (["--labels", "dog,cat", "--labels-file", "x.txt"], "not both"),
])
def test_usage_errors_exit_2_with_one_line(tiny_clip_dir, photos, args, message):
    model = [] if "--model" in args else ["--model", tiny_clip_dir]
    result = _run("classify", str(photos), *model, *args)
    assert result.exit_code == 2
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and message in error_lines[0] and error_lines[0].startswith("zsclip: error:")


def test_build_then_classify_with_the_classifier_file(tiny_clip_dir, tiny_clip_other_dir, photos, tmp_path):
    classifier = tmp_path / "colours.zsc"
    built = _run("build", "--labels", LABELS, "--templates", "photo", "--model", tiny_clip_dir,
                 "--output", str(classifier))
    assert built.exit_code == 0 and classifier.is_file()
    from_file, from_labels = tmp_path / "file.csv", tmp_path / "labels.csv"
    result = _run("classify", str(photos), "--classifier", str(classifier), "--workers", "0",
                  "--output", str(from_file))  # model taken from the classifier's provenance
    assert result.exit_code == 0, result.stderr
    assert _classify(tiny_clip_dir, str(photos), "--output", str(from_labels)).exit_code == 0
    assert from_file.read_text() == from_labels.read_text()
    refused = _run("classify", str(photos), "--classifier", str(classifier), "--model", tiny_clip_other_dir)
    assert refused.exit_code == 2 and "rebuild it with this model" in refused.stderr


def test_models_lists_registry_and_cached_classifiers(tiny_clip_dir, isolated_cache):
    assert _run("build", "--labels", LABELS, "--templates", "photo", "--model", tiny_clip_dir,
                "--output", str(isolated_cache.parent / "x.zsc")).exit_code == 0
    result = _run("models")
    assert result.exit_code == 0
    assert "--model ViT-B-32" in result.stdout and "laion2b_s34b_b79k" in result.stdout
    assert "--model demo" in result.stdout and "MB, offline" in result.stdout
    assert "cached classifiers" in result.stdout and "3 classes (red, green, blue)" in result.stdout


def test_downloads_are_capped_in_size(http_server):
    from zsclip.data.images import ImageReadError, fetch_url

    assert len(fetch_url(f"{http_server}/large.jpg")) > 10_000
    with pytest.raises(ImageReadError, match="over the 10000-byte limit"):
        fetch_url(f"{http_server}/large.jpg", max_bytes=10_000)


def test_no_inputs_is_a_usage_error_and_writes_nothing(tiny_clip_dir, tmp_path):
    out = tmp_path / "results.csv"
    result = _classify(tiny_clip_dir, "-", "--output", str(out), input="\n\n")
    assert result.exit_code == 2 and "no inputs to classify" in result.stderr
    assert list(tmp_path.iterdir()) == []
