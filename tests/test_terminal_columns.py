"""Terminal answers in aligned columns (issue 38): a label tree's levels and a multi-label answer's labels
are padded to the longest name in the answer, so the scores line up under each other, as the flat top-k
table's do. Run through the `zsclip classify` command on the demo model."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from zsclip.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMON = ["--model", "demo", "--precision", "fp32", "-j", "0"]


def _blocks(output: str) -> list[list[str]]:
    """The printed answers: an unindented input line, then its indented lines."""
    blocks: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith(" "):
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
    return [block for block in blocks if block]


def _images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("red_triangle", "blue_ring", "green_star"):
        shutil.copy(EXAMPLES / f"{name}.png", folder / f"{name}.png")
    return folder


def test_tree_levels_line_up_whatever_the_level_and_class_name_lengths(tmp_path):
    tree = tmp_path / "tree.yaml"
    tree.write_text("triangle:\n  - red triangle\n  - yellow triangle\nring:\n  - blue ring\n"
                    "star with five points:\n  - green star\n  - white star\n")
    result = CliRunner().invoke(main, ["classify", str(_images(tmp_path)), "--labels-tree", str(tree), *COMMON])
    assert result.exit_code == 0, result.output
    blocks = _blocks(result.stdout)
    assert len(blocks) == 3
    for block in blocks:
        assert len(block) == 2  # two levels
        assert len({line.index("%") for line in block}) == 1, block  # probabilities in one column
        names = [line.split()[1] for line in block]  # the level name's column starts alike too
        assert len({line.index(name) for line, name in zip(block, names, strict=True)}) == 1, block


def test_multi_label_scores_line_up_under_each_other(tmp_path):
    labels = "green star,star,a shape with a rather long name,red triangle,blue ring"
    result = CliRunner().invoke(main, ["classify", str(_images(tmp_path)), "--labels", labels, "--multi-label",
                                       "--multi-score", "softmax", "--threshold", "0.0001", *COMMON])
    assert result.exit_code == 0, result.output
    blocks = _blocks(result.stdout)
    assert any(len(block) > 1 for block in blocks), result.stdout  # several labels over the low threshold
    for block in blocks:
        ends = {len(line) for line in block}
        assert len(ends) == 1, block  # names padded alike, scores in one fixed width
