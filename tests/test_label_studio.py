"""Label Studio, for real: `zsclip classify --format label-studio` output imported into a Label Studio server
started here (see label_studio_server.py), read back through its REST API: every task with its prediction
and score, its image served from the path written in data.image; the least confident first when the Data
Manager orders by prediction score."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from label_studio_server import TOKEN, LabelStudio, copy_images, label_studio_bin
from serving import start_serve
from zsclip.cli import main

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMON = ["--model", "demo", "--precision", "fp32", "-j", "0", "-t", "photo"]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    binary = label_studio_bin()
    if binary is None:
        pytest.skip("no Label Studio: bash .ci/run installs it into .venv-ls (or set ZSCLIP_LABEL_STUDIO_BIN)")
    server = LabelStudio(binary, tmp_path_factory.mktemp("label-studio"))
    yield server
    server.stop()


def test_tasks_import_into_label_studio_with_every_prediction_and_score(label_studio, tmp_path):
    photos = copy_images(EXAMPLES, label_studio.document_root)
    out = tmp_path / "tasks.json"
    result = CliRunner().invoke(main, ["classify", str(photos), "--labels-file", str(EXAMPLES / "labels.txt"),
                                       *COMMON, "-o", str(out), "--format", "label-studio", "--image-root",
                                       str(label_studio.document_root)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    project = label_studio.create_project("zsclip", out.with_name("tasks.config.xml").read_text())
    response = label_studio.client.post(f"/api/projects/{project}/import", json=written)
    assert response.status_code == 201, response.text
    tasks = label_studio.tasks(project)
    assert len(tasks) == len(written) == len(list(photos.glob("*.png")))
    expected = {task["data"]["image"]: task["predictions"][0] for task in written}
    for task in tasks:
        (prediction,) = task["predictions"]
        mine = expected[task["data"]["image"]]
        assert prediction["score"] == pytest.approx(mine["score"])
        assert prediction["model_version"] == mine["model_version"]
        assert prediction["result"][0]["value"]["choices"] == mine["result"][0]["value"]["choices"]
        assert prediction["result"][0]["from_name"] == "choice"
    # Label Studio serves the image at the address written in data.image (its local storage for the folder)
    storage = label_studio.client.post("/api/storages/localfiles", json={
        "project": project, "path": str(photos), "title": "photos", "use_blob_urls": False})
    assert storage.status_code == 201, storage.text
    first = tasks[0]
    image = label_studio.client.get(first["data"]["image"])
    assert image.status_code == 200, image.text[:300]
    assert image.content == Path(first["data"]["path"]).read_bytes()
    # the Data Manager's review queue: ordered by prediction score, least confident first
    by_score = label_studio.client.get("/api/tasks", params={
        "project": project, "fields": "all", "query": json.dumps({"ordering": ["tasks:predictions_score"]})})
    assert by_score.status_code == 200, by_score.text
    scores = [task["predictions"][0]["score"] for task in by_score.json()["tasks"]]
    assert len(scores) == len(tasks) and scores == sorted(scores)
    # the loop closed: reviewers accept the predictions, correct one; Label Studio's JSON export is eval data
    for index, task in enumerate(tasks):
        result = task["predictions"][0]["result"]
        if index == 0:
            result[0]["value"]["choices"] = ["red circle" if result[0]["value"]["choices"] != ["red circle"]
                                             else "blue ring"]
        made = label_studio.client.post(f"/api/tasks/{task['id']}/annotations", json={"result": result})
        assert made.status_code == 201, made.text
    exported = label_studio.client.get(f"/api/projects/{project}/export", params={"exportType": "JSON"})
    assert exported.status_code == 200, exported.text[:300]
    export = tmp_path / "export.json"
    export.write_bytes(exported.content)
    metrics = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["eval", "--data", str(export), "--labels-file", str(EXAMPLES / "labels.txt"),
                                       *COMMON, "-o", str(metrics)])
    assert result.exit_code == 0, result.output
    measured = json.loads(metrics.read_text())
    assert measured["num_images"] == len(tasks)
    assert measured["metrics"]["acc1"] == pytest.approx((len(tasks) - 1) / len(tasks))


def start_zsclip_serve(*args: str) -> tuple[subprocess.Popen, str]:
    return start_serve("--precision", "fp32", *args, env={"HF_HUB_OFFLINE": "1"}, timeout=180,
                       stdout=subprocess.DEVNULL)


def test_zsclip_serve_is_a_label_studio_ml_backend(label_studio, tmp_path):
    """Label Studio connects zsclip serve as its model, asks it for predictions of its tasks, and keeps them:
    the project's Choices are the classes, the images come from Label Studio itself."""
    photos = label_studio.document_root / "backend"
    photos.mkdir()
    for path in sorted(EXAMPLES.glob("*.png")):
        shutil.copy(path, photos / path.name)
    labels = (EXAMPLES / "labels.txt").read_text().split("\n")
    config = ("<View><Image name=\"picture\" value=\"$img\"/><Choices name=\"kind\" toName=\"picture\">"
              + "".join(f"<Choice value=\"{label}\"/>" for label in labels if label) + "</Choices></View>")
    project = label_studio.create_project("backend", config)
    tasks = [{"img": f"/data/local-files/?d=backend/{path.name}"} for path in sorted(photos.glob("*.png"))]
    assert label_studio.client.post(f"/api/projects/{project}/import", json=tasks).status_code == 201
    storage = label_studio.client.post("/api/storages/localfiles", json={  # Label Studio serves the folder
        "project": project, "path": str(photos), "title": "backend", "use_blob_urls": False})
    assert storage.status_code == 201, storage.text
    reference = tmp_path / "reference.csv"
    result = CliRunner().invoke(main, ["classify", str(photos), "--labels-file", str(EXAMPLES / "labels.txt"),
                                       *COMMON, "-o", str(reference)])
    assert result.exit_code == 0, result.output
    expected = {Path(row["path"]).name: row for row in csv.DictReader(reference.open())}

    process, url = start_zsclip_serve("--label-studio-url", label_studio.url, "--label-studio-token", TOKEN,
                                      "--api-key", "backend-secret")
    try:
        # a request that names another host is not fetched
        outside = httpx.post(f"{url}/predict", auth=("zsclip", "backend-secret"), timeout=60, json={
            "tasks": [{"id": 1, "data": {"img": "http://example.invalid/x.png"}}], "label_config": config})
        assert outside.status_code == 200 and outside.json()["results"][0]["result"] == []
        assert "Label Studio this server was started with" in outside.json()["results"][0]["error"]
        # the images Label Studio serves, fetched with its token
        direct = httpx.post(f"{url}/predict", auth=("zsclip", "backend-secret"), timeout=120, json={
            "tasks": [{"id": 1, "data": tasks[0]}], "label_config": config})
        assert direct.status_code == 200 and direct.json()["results"][0]["result"], direct.text
        assert httpx.post(f"{url}/predict", json={"tasks": []}, timeout=10).status_code == 401
        connected = label_studio.client.post("/api/ml", json={
            "url": url, "project": project, "title": "zsclip", "auth_method": "BASIC_AUTH",
            "basic_auth_user": "zsclip", "basic_auth_pass": "backend-secret"})
        assert connected.status_code == 201, connected.text
        retrieved = label_studio.client.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                                                        "project": project},
                                             json={"selectedItems": {"all": True, "excluded": []}})
        assert retrieved.status_code == 200, retrieved.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    stored = label_studio.tasks(project)
    assert len(stored) == len(tasks)
    for task in stored:
        (prediction,) = task["predictions"]
        row = expected[task["data"]["img"].rsplit("/", 1)[-1]]
        (answer,) = prediction["result"]
        assert answer["from_name"] == "kind" and answer["to_name"] == "picture"
        assert answer["value"]["choices"] == [row["label"]]
        assert prediction["score"] == pytest.approx(float(row["score"]), abs=1e-4)
        assert prediction["model_version"].startswith("zsclip demo@")
