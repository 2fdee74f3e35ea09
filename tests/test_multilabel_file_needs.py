"""A multi-label classifier file whose score needs what the file does not hold (issue 38 item 3) is refused
when it is read, in one line naming the file, before any output is opened: no ``.partial`` is left."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import zsclip
from zsclip import shapes
from zsclip.cli import main
from zsclip.heads.multilabel import MultiLabelClassifier


@pytest.fixture(scope="module")
def positive():
    return zsclip.ZeroShotClassifier.build(zsclip.load_model("demo"), ["red star", "blue ring"], "photo", cache=False)


@pytest.mark.parametrize("score, missing", [("standardised", "per-label statistics"),
                                            ("negative", "negative prompts")])
def test_a_file_without_what_its_score_needs_is_refused_before_output(positive, score, missing, tmp_path):
    # built as a file that lacks them would be read (the constructor's own check is for Python callers)
    head = MultiLabelClassifier(positive, "softmax", torch.full((2,), 0.5))
    head.score = score
    path = head.save(tmp_path / "tags.zsml")
    image = tmp_path / "one.png"
    shapes.render(shapes.sample_specs(1, seed=4)[0]).save(image)
    for command in (["classify", str(image), "-c", str(path), "-o", str(tmp_path / "rows.csv")],
                    ["eval", "--data", str(tmp_path / "m.csv"), "--multi-label", "-c", str(path), "-o",
                     str(tmp_path / "m.json")]):
        (tmp_path / "m.csv").write_text(f"path,labels\n{image},red star\n")
        result = CliRunner().invoke(main, [*command, "-j", "0"])
        assert result.exit_code == 2, result.output
        assert str(path) in result.output and missing in result.output and "Traceback" not in result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "one.png", "tags.zsml"]  # no output begun
