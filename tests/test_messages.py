"""Messages that say what happened, in the words of the entry point that shows them (issue 38, item 8):
the service names its form fields (not the command line's flags), ``/v1/classifiers`` and classify answers
report a multi-label head's own scoring, and a mistyped ``--pretrained`` tag gets close matches."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from zsclip.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _files(*names: str) -> list:
    return [("images", (name, (EXAMPLES / name).read_bytes(), "image/png")) for name in names]


@pytest.fixture(scope="module")
def multilabel_file(tiny_clip, tmp_path_factory) -> Path:
    from zsclip.heads.multilabel import MultiLabelClassifier

    classifier = MultiLabelClassifier.build(tiny_clip, [["ring"], ["star"], ["square"]], "photo", score="negative")
    return classifier.save(tmp_path_factory.mktemp("multilabel") / "shapes.zsc")


@pytest.fixture(scope="module")
def client(tiny_clip, multilabel_file):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from zsclip.serve import ServeSettings, create_app

    settings = ServeSettings(default_templates="photo", classifier_files=(str(multilabel_file),))
    with TestClient(create_app(settings, encoder=tiny_clip)) as test_client:
        yield test_client


@pytest.mark.parametrize("fields,named", [
    ({"labels": "ring,star", "tpr": "0.5"}, "tpr applies to reject_calibrate"),
    ({"labels": "ring,star", "reject_score": "max-prob"}, "reject_score and reject_label apply to open-set rejection"),
    ({"labels": "ring,star", "threshold": "0.3"}, "threshold applies to multi-label classification: add multi_label"),
])
def test_http_errors_name_form_fields_not_cli_flags(client, fields, named):
    response = client.post("/v1/classify", files=_files("blue_ring.png"), data=fields)
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert named in message and "--" not in message and "CLI" not in message, message


def test_a_multi_label_head_reports_its_own_scoring(client, multilabel_file):
    listed = {entry["id"]: entry for entry in client.get("/v1/classifiers").json()}
    assert listed["shapes"]["scoring"] == "multi-label negative"
    assert client.get("/v1/classifiers/shapes").json()["scoring"] == "multi-label negative"
    from_file = client.post("/v1/classify", files=_files("blue_ring.png"), data={"classifier": "shapes"})
    assert from_file.status_code == 200 and from_file.json()["scoring"] == "multi-label negative", from_file.text
    asked = client.post("/v1/classify", files=_files("blue_ring.png"),
                        data={"labels": "ring,star", "multi_label": "true", "multi_score": "negative"})
    assert asked.status_code == 200 and asked.json()["scoring"] == "multi-label negative", asked.text
    flat = client.post("/v1/classify", files=_files("blue_ring.png"), data={"labels": "ring,star"})
    assert flat.json()["scoring"] == "softmax"


def test_a_mistyped_pretrained_tag_gets_close_matches():
    result = CliRunner().invoke(main, ["classify", str(EXAMPLES / "blue_ring.png"), "--model", "ViT-B-32",
                                       "--pretrained", "laion2b_s34b_b97k", "--labels", "ring,star"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "pretrained='laion2b_s34b_b97k' is neither a known tag" in line
    assert "did you mean laion2b_s34b_b79k?" in line and "its tags are openai," in line
