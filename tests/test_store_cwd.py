"""A store answers the same from any folder (issue 32 item 3): its rows keep the names given when they were
embedded (often relative, e.g. ``images/a.png``), and files are matched to them by the absolute path the
store recorded, never by those names resolved against the folder a later command runs in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from zsclip.cli import main
from zsclip.shapes import write_scenes


@pytest.mark.slow
def test_retrieval_over_a_store_gives_the_same_answer_from_another_folder(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    write_scenes(work, 8, seed=5)
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    embedded = CliRunner().invoke(main, ["embed", "images", "-o", "scenes.zse", "-m", "demo", "-j", "0"])
    assert embedded.exit_code == 0, embedded.output
    here = CliRunner().invoke(main, ["eval", "--task", "retrieval", "--data", "scenes.zse", "--captions",
                                     "captions.csv", "-o", str(tmp_path / "here.json"), "-j", "0"])
    assert here.exit_code == 0, here.output
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    there = subprocess.run([sys.executable, "-m", "zsclip", "eval", "--task", "retrieval", "--data",
                            os.path.join("..", "work", "scenes.zse"), "--captions",
                            os.path.join("..", "work", "captions.csv"), "-o", str(tmp_path / "there.json"), "-j", "0"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert there.returncode == 0, there.stderr
    here, there = (json.loads((tmp_path / name).read_text()) for name in ("here.json", "there.json"))
    assert here["num_images"] == there["num_images"] == 8 and there["num_failed"] == 0
    assert there["metrics"] == here["metrics"]
