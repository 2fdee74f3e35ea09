"""Round 3 hardening of the command surface (issue 22, classes 12-14): checks before work, errors
that name their input, thresholds outside the score's range."""

import time
from pathlib import Path

from click.testing import CliRunner

from zsclip import shapes
from zsclip.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_adapt_refuses_a_folder_output_before_encoding_anything(tmp_path):
    shapes.write_dataset(tmp_path / "shots", per_class=2, seed=3, label="shape")
    (tmp_path / "out").mkdir()
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["adapt", "--data", str(tmp_path / "shots" / "manifest.csv"), "--model", "demo",
                                       "--method", "linear", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "is a folder" in result.stderr, result.output
    assert time.perf_counter() - start < 20  # refused up front, not after the shots were encoded and fitted
    (tmp_path / "out" / "x").write_text("taken")
    result = CliRunner().invoke(main, ["adapt", "--data", str(tmp_path / "shots" / "manifest.csv"), "--model", "demo",
                                       "--method", "finetune", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not an empty folder" in result.stderr, result.output


def test_search_with_an_unreadable_image_names_it(tmp_path):
    empty = tmp_path / "query.png"
    empty.write_bytes(b"")
    result = CliRunner().invoke(main, ["search", str(EXAMPLES), "--image", str(empty), "--model", "demo"])
    assert result.exit_code == 2 and "query.png" in result.stderr and "empty file" in result.stderr, result.output


def test_a_fixed_threshold_outside_the_scores_range_is_warned_about():
    labels = "red triangle,blue ring,green star,white star,black cross,orange ring,purple circle,yellow triangle"
    result = CliRunner().invoke(main, ["classify", str(EXAMPLES), "--labels", labels, "--reject", "0.1",
                                       "--model", "demo", "-t", "photo"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning and "rejects nothing" in warning[0] and "[0.125, 1]" in warning[0]
    assert "--reject-calibrate" in warning[0]
