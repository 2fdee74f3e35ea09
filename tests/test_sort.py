"""`zsclip sort`: class folders, _review/ with its least-confident-first list, _unknown/, _errors.csv; copies or
hard links, never moves or overwrites; resumable after a kill, each image placed once."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from zsclip import shapes
from zsclip.cli import main

COMMON = ["--model", "demo", "--precision", "fp32", "-j", "0", "-t", "photo"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sort")
    shapes.write_dataset(root, per_class=1, seed=3)
    images = root / "images"
    (images / "unreadable.png").write_bytes(b"not an image")
    return root


def sort(*args: str, code: int = 1):
    result = CliRunner().invoke(main, ["sort", *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def placed_files(into: Path) -> dict[str, list[Path]]:
    """original name -> every copy of it under ``into`` (a copy keeps its name, or gets a _N suffix)."""
    found: dict[str, list[Path]] = {}
    for path in into.rglob("*.png"):
        found.setdefault(path.name, []).append(path)
    return found


def test_sort_places_accepted_review_and_errors(photos, tmp_path):
    into = tmp_path / "sorted"
    reference = tmp_path / "reference.csv"
    CliRunner().invoke(main, ["classify", str(photos / "images"), "--labels-file", str(photos / "labels.txt"),
                              *COMMON, "-k", "2", "-o", str(reference)])
    rows = {Path(r["path"]).name: r for r in csv.DictReader(reference.open()) if not r["error"]}
    threshold = sorted(float(row["score"]) for row in rows.values())[len(rows) // 2]  # half of them accepted
    result = sort(str(photos / "images"), "--labels-file", str(photos / "labels.txt"), *COMMON, "--into", str(into),
                  "--accept", f"{threshold - 5e-7:.6f}")
    assert "unreadable" in result.output
    accepted = {name for name, row in rows.items() if float(row["score"]) >= threshold}
    assert 0 < len(accepted) < len(rows)  # both kinds happen on this set
    for name, row in rows.items():
        folder = row["label"] if name in accepted else "_review"
        assert (into / folder / name).read_bytes() == (photos / "images" / name).read_bytes()
        assert (photos / "images" / name).exists()  # copied, never moved
    assert sum(len(v) for v in placed_files(into).values()) == len(rows)
    review = list(csv.DictReader((into / "_review.csv").open()))
    assert {Path(r["file"]).name for r in review} == set(rows) - accepted
    for entry in review:  # the calibrated (temperature-scaled) confidences classify reports
        assert entry["score"] == rows[Path(entry["file"]).name]["score"]
    scores = [float(r["score"]) for r in review]
    assert scores == sorted(scores)  # least confident first
    for r in review:
        row = rows[Path(r["file"]).name]
        assert r["runner_up"] == row["label_2"]
        assert float(r["margin"]) == pytest.approx(float(row["score"]) - float(row["score_2"]), abs=1e-5)
    errors = list(csv.DictReader((into / "_errors.csv").open()))
    assert [Path(r["path"]).name for r in errors] == ["unreadable.png"] and errors[0]["error"]


@pytest.mark.slow
def test_rejected_images_go_to_unknown_and_a_clash_gets_a_suffix(photos, tmp_path):
    into = tmp_path / "sorted"
    (into / "_unknown").mkdir(parents=True)
    (into / "_unknown" / "red_circle_0000.png").write_bytes(b"a file of the user's")
    sort(str(photos / "images"), "--labels", "red circle,blue square", *COMMON, "--reject", "0.99",
         "--into", str(into), "--accept", "0.5", "--files", "hardlink")
    unknown = sorted(p.name for p in (into / "_unknown").iterdir())
    assert len(unknown) > 2
    assert (into / "_unknown" / "red_circle_0000.png").read_bytes() == b"a file of the user's"  # never overwritten
    assert "red_circle_0000_1.png" in unknown
    linked = into / "_unknown" / "red_circle_0000_1.png"
    assert os.path.samefile(linked, photos / "images" / "red_circle_0000.png")  # a hard link


@pytest.mark.slow
def test_an_image_placed_before_a_kill_is_adopted_not_placed_twice(photos, tmp_path):
    """The state a kill leaves between placing a file and journalling it, and a torn last journal line."""
    into = tmp_path / "sorted"
    args = [str(photos / "images"), "--labels-file", str(photos / "labels.txt"), *COMMON, "--into", str(into),
            "--accept", "0.0"]
    sort(*args)
    journal = into / ".zsclip-sort.jsonl"
    lines = journal.read_text().splitlines()
    victim = json.loads(lines[-1])
    assert victim["bucket"] == "class"
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # torn, unrecorded
    sort(*args)
    copies = placed_files(into)[Path(victim["to"]).name]
    assert copies == [into / victim["to"]]  # adopted where it was, not copied again


@pytest.mark.slow
def test_sort_killed_midway_resumes_and_places_each_image_once(photos, tmp_path):
    into, images = tmp_path / "sorted", tmp_path / "images"
    images.mkdir()
    for path in sorted((photos / "images").iterdir())[:24]:
        os.link(path, images / path.name)
    command = [sys.executable, "-m", "zsclip", "sort", str(images), "--labels-file",
               str(photos / "labels.txt"), *COMMON, "-b", "2", "--into", str(into), "--accept", "0.9"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    journal = into / ".zsclip-sort.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 3:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = journal.read_text().count("\n")
    total = len(list(images.iterdir()))
    assert 3 <= done < total
    resumed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert resumed.returncode == 0, resumed.stderr
    assert "placed by an earlier run" in resumed.stderr
    copies = placed_files(into)
    assert set(copies) == {p.name for p in images.iterdir()}
    assert all(len(paths) == 1 for paths in copies.values())  # each placed once
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len({r["path"] for r in records}) == total == len(records)
    assert not list(into.rglob(".zsclip-*.partial"))


@pytest.mark.parametrize("args,message", [
    (["--labels", "a,b", "--into", "{tmp}/s"], "give --accept"),
    (["--labels", "a,b", "--into", "{tmp}/s", "--accept", "1.5"], "between 0 and 1"),
    (["--labels", "a,b", "--into", "{tmp}/s", "--accept-precision", "0.9"], "calibrated"),
    (["--labels", "a,b", "--into", "{tmp}/missing/s", "--accept", "0.9"], "does not exist"),
])
def test_sort_refuses_what_cannot_apply(photos, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = sort(str(photos / "images"), "--model", "demo", *args, code=2)
    assert message in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> tuple[Path, Path]:
    """A classifier file calibrated by `zsclip calibrate` on labelled held-out shapes (the demo model is unsure
    of them, so some answers are accepted and some not), and a separate folder of such images to sort."""
    root = tmp_path_factory.mktemp("sort-calibrated")
    shapes.write_dataset(root / "calib", 4, 31, "held-out", "both", size=32, style="outline")
    shapes.write_dataset(root / "test", 2, 32, "held-out", "both", size=32, style="outline")
    output = root / "shapes.zsc"
    result = CliRunner().invoke(main, ["calibrate", "--data", str(root / "calib" / "manifest.csv"), "--labels-file",
                                       str(root / "calib" / "labels.txt"), *COMMON, "-o", str(output)])
    assert result.exit_code == 0, result.output
    return output, root / "test" / "images"


def test_sort_accept_precision_places_exactly_what_classify_accepts(calibrated, tmp_path):
    """`sort -c FILE --accept-precision P` puts into class folders exactly the images whose
    `classify -c FILE --accept-precision P` row says accepted=true (same calibration, same threshold), the
    rest into _review/, and prints classify's threshold line."""
    classifier, images = calibrated
    fast = [a for a in COMMON if a not in ("-t", "photo")]  # the file holds its prompts
    rows_file, into = tmp_path / "rows.csv", tmp_path / "sorted"
    classify = CliRunner().invoke(main, ["classify", str(images), "-c", str(classifier), "--accept-precision", "0.6",
                                         *fast, "-o", str(rows_file)])
    assert classify.exit_code == 0, classify.output
    rows = {Path(r["path"]).name: r for r in csv.DictReader(rows_file.open())}
    accepted = {name for name, row in rows.items() if row["accepted"] == "true"}
    assert {row["accepted"] for row in rows.values()} <= {"true", "false"}
    assert 0 < len(accepted) < len(rows)  # both kinds happen on this set
    result = sort(str(images), "-c", str(classifier), *fast, "--into", str(into), "--accept-precision", "0.6", code=0)
    classify_lines = [line for line in classify.stderr.splitlines() if "accept-or-review" in line or "warning" in line]
    assert classify_lines and all(line in result.stderr.splitlines() for line in classify_lines)
    assert "32 calibration images" in result.stderr
    copies = placed_files(into)
    assert set(copies) == set(rows)
    for name, row in rows.items():
        [path] = copies[name]
        folder = row["label"] if name in accepted else "_review"
        assert path.parent == into / folder, (name, row)
    review = list(csv.DictReader((into / "_review.csv").open()))
    assert {Path(r["file"]).name for r in review} == set(rows) - accepted
    for entry in review:  # the calibrated (temperature-scaled) confidences classify reports
        assert entry["score"] == rows[Path(entry["file"]).name]["score"]


def test_sort_accept_precision_refuses_an_uncalibrated_classifier(tmp_path):
    images = tmp_path / "images"
    shapes.write_dataset(tmp_path, 1, 3, size=32)
    plain = tmp_path / "plain.zsc"
    built = CliRunner().invoke(main, ["build", "--labels", "red,blue", "--model", "demo", "--precision", "fp32",
                                    "-o", str(plain)])
    assert built.exit_code == 0, built.output
    for args, message in ((["-c", str(plain), "--accept-precision", "0.9"], "calibrate"),
                          (["-c", str(plain), "--accept-precision", "0.9", "--accept", "0.5"], "not both")):
        result = sort(str(images), "--model", "demo", "--into", str(tmp_path / "s"), *args, code=2)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "s").exists()


def test_the_python_sort_places_what_the_command_places(photos, tmp_path):
    """``zsclip.sort`` (the library call under the command) places every image where `zsclip sort` does."""
    import zsclip

    by_command, by_library = tmp_path / "command", tmp_path / "library"
    sort(str(photos / "images"), "--labels-file", str(photos / "labels.txt"), *COMMON, "--into", str(by_command),
         "--accept", "0.5")
    summary = zsclip.sort(str(photos / "images"), by_library, accept=0.5,
                          labels=zsclip.read_labels(photos / "labels.txt"),
                          templates="photo", model="demo", options=zsclip.RunOptions(precision="fp32", workers=0))
    assert isinstance(summary, zsclip.SortSummary) and summary.errors == 1
    placed = {p.relative_to(by_command) for p in by_command.rglob("*.png")}
    assert placed and placed == {p.relative_to(by_library) for p in by_library.rglob("*.png")}
    assert summary.accepted + summary.review + summary.unknown == len(placed)
