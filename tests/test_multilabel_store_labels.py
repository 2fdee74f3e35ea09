"""A multi-label store keeps the label list it is read with (issue 32 item 7): the README's recipe (embed a
manifest with --labelled, then eval the store) reports the images' own metrics, whether the label list is
given when embedding or when evaluating the store (`eval STORE --labels-file` was refused)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from zsclip.cli import main
from zsclip.shapes import write_scenes

VARYING = ("dataset", "images_per_second", "failures")  # the data's name and the run's speed, not its answers


def _eval(data, out, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["eval", "--data", str(data), "--multi-label", "-o", str(out), "-m", "demo",
                                       "-j", "0", *extra])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    return {key: value for key, value in record.items() if key not in VARYING}


def _embed(manifest, out, *extra: str) -> None:
    result = CliRunner().invoke(main, ["embed", str(manifest), "--labelled", "--dtype", "float32", "-o", str(out),
                                       "-m", "demo", "-j", "0", *extra])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_eval_of_a_store_equals_eval_of_its_images_with_the_same_label_list(tmp_path):
    manifest = write_scenes(tmp_path / "scenes", 8, seed=3)
    labels = str(tmp_path / "scenes" / "labels.txt")  # all 48 labels; the 8 scenes hold some of them
    images = _eval(manifest, tmp_path / "images.json", "--labels-file", labels)
    assert len(images["classnames"]) == 48
    _embed(manifest, tmp_path / "plain.zse")
    stored = _eval(tmp_path / "plain.zse", tmp_path / "store.json", "--labels-file", labels)
    assert stored == images
    _embed(manifest, tmp_path / "listed.zse", "--labels-file", labels)  # the list kept by the store itself
    assert _eval(tmp_path / "listed.zse", tmp_path / "listed.json") == images


def test_a_label_list_is_still_refused_for_a_single_label_store(tmp_path):
    from zsclip import shapes

    for colour in ("red", "blue"):
        (tmp_path / "photos" / colour).mkdir(parents=True)
        shapes.render(shapes.ShapeSpec(colour, "star", "white", 0.3, (0.5, 0.5), 0.0)).save(
            tmp_path / "photos" / colour / "a.png")
    embedded = CliRunner().invoke(main, ["embed", str(tmp_path / "photos"), "--labelled", "-o",
                                         str(tmp_path / "s.zse"), "-m", "demo", "-j", "0"])
    assert embedded.exit_code == 0, embedded.output
    (tmp_path / "labels.txt").write_text("red\nblue\n")
    refused = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "s.zse"), "--labels-file",
                                        str(tmp_path / "labels.txt")])
    assert refused.exit_code == 2 and "leave out --labels-file" in refused.output
