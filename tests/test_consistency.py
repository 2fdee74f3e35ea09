"""One behaviour wherever it shows (issue 38, item 9): the service's default top_k is the command line's,
and a kept ``.partial`` file gets the mode the user's umask gives a new file, as a finished one does."""

from __future__ import annotations

import importlib
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from zsclip.cli import main
from zsclip.options import DEFAULT_TOP_K
from zsclip.outputs.atomic import AtomicFile

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LABELS = "red triangle,blue ring,green star,yellow square,black circle"


def test_the_service_answers_as_many_labels_as_the_command_line_by_default(tiny_clip, tiny_clip_dir, tmp_path):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from zsclip.serve import ServeSettings, create_app

    output = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(main, ["classify", str(EXAMPLES / "blue_ring.png"), "--model", tiny_clip_dir,
                                       "--labels", LABELS, "-t", "photo", "-o", str(output)])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in output.read_text().splitlines()]
    with TestClient(create_app(ServeSettings(default_templates="photo"), encoder=tiny_clip)) as client:
        image = [("images", ("blue_ring.png", (EXAMPLES / "blue_ring.png").read_bytes(), "image/png"))]
        lean = client.post("/v1/classify", files=image, data={"labels": LABELS})  # the lean path
        routed = client.post("/v1/classify", files=image, data={"labels": LABELS, "scale": "100"})  # the route's
    assert len(row["predictions"]) == DEFAULT_TOP_K < 5
    for response in (lean, routed):
        assert response.status_code == 200, response.text
        assert len(response.json()["results"][0]["predictions"]) == DEFAULT_TOP_K
        assert response.json()["head"]["top_k"] == DEFAULT_TOP_K


def test_a_kept_partial_file_gets_the_umask_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        kept = AtomicFile(tmp_path / "rows.csv")
        kept.file.write("path,label\n")
        partial = kept.abandon()
        finished = AtomicFile(tmp_path / "done.csv")
        finished.file.write("path,label\n")
        done = finished.commit()
    finally:
        os.umask(previous)
    assert partial.name == "rows.csv.partial"
    assert stat.S_IMODE(partial.stat().st_mode) == stat.S_IMODE(done.stat().st_mode) == 0o640


def _interrupt_on(calls: int):
    """A function wrapper that raises KeyboardInterrupt (as Ctrl-C does) on its ``calls``-th call."""
    seen = []

    def wrap(function):
        def wrapped(*args, **kwargs):
            seen.append(1)
            if len(seen) == calls:
                raise KeyboardInterrupt
            return function(*args, **kwargs)

        return wrapped

    return wrap


def test_an_interrupted_classify_is_one_line_with_what_is_kept_and_how_to_go_on(tmp_path, monkeypatch):
    classify_task = importlib.import_module("zsclip.tasks.classify")  # the module, not the function

    opened = classify_task.open_sink

    def open_sink(*args, **kwargs):
        sink = opened(*args, **kwargs)
        sink.write = _interrupt_on(3)(sink.write)
        return sink

    monkeypatch.setattr(classify_task, "open_sink", open_sink)
    output = tmp_path / "rows.csv"
    images = [str(path) for path in sorted(EXAMPLES.glob("*.png"))[:4]]
    result = CliRunner().invoke(main, ["classify", *images, "--model", "demo", "--labels", LABELS, "-t", "photo",
                                       "-o", str(output), "--workers", "0"])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines() == [
        f"zsclip: interrupted after 3 of 4 inputs: the rows so far are in {output}.partial ({output} is written only "
        "when a run completes); run the same command again to classify them all"]
    assert not output.exists() and len((tmp_path / "rows.csv.partial").read_text().splitlines()) == 3  # header + 2


def test_an_interrupted_embed_says_what_the_store_keeps_and_the_same_command_goes_on(tmp_path, monkeypatch):
    embed_module = importlib.import_module("zsclip.store.embed")

    store = tmp_path / "shapes.zse"
    images = [str(path) for path in sorted(EXAMPLES.glob("*.png"))[:3]]
    command = ["embed", *images, "-o", str(store), "--model", "demo", "--commit-every", "1", "--workers", "0"]
    with monkeypatch.context() as patched:
        patched.setattr(embed_module._ShardWriter, "add", _interrupt_on(3)(embed_module._ShardWriter.add))
        result = CliRunner().invoke(main, command)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines() == [
        f"zsclip: interrupted: {store} keeps 2 rows committed so far (every --commit-every images); run the same "
        "command again to go on from there"]
    again = CliRunner().invoke(main, command)
    assert again.exit_code == 0, again.output
    assert "1 encoded, 2 unchanged" in again.stderr


@pytest.mark.parametrize("task", ["multi-label", "retrieval"])
def test_every_eval_prints_its_evaluated_line(tmp_path, task):
    names = ["blue_ring.png", "blue_star.png", "green_circle.png"]
    for name in names:
        (tmp_path / name).write_bytes((EXAMPLES / name).read_bytes())
    if task == "multi-label":
        data = tmp_path / "labels.jsonl"
        data.write_text("".join(json.dumps({"path": n, "labels": [n[:-4].replace("_", " ")]}) + "\n" for n in names))
        extra = ["--multi-label", "-t", "photo"]
    else:
        data = tmp_path / "captions.csv"
        data.write_text("path,caption\n" + "".join(f"{n},a {n[:-4].replace('_', ' ')}\n" for n in names))
        extra = ["--task", "retrieval"]
    result = CliRunner().invoke(main, ["eval", "-d", str(data), "--model", "demo", "--workers", "0", *extra])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("zsclip: evaluated 3 images")], result.stderr


@pytest.mark.parametrize("command", ["classify", "eval", "embed", "search", "build", "models", "adapt"])
def test_every_help_lists_its_input_kinds_and_exit_statuses(command):
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "130 interrupted (Ctrl-C), 141 stdout closed by its reader" in text
    if command in ("classify", "eval", "embed", "search"):
        assert "videos (.mp4, .mkv" in text
    if command in ("classify", "eval", "embed"):
        assert "Hugging Face datasets (a Parquet split, a save_to_disk folder" in text
