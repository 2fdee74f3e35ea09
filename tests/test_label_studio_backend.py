"""The Label Studio ML-backend routes of `zsclip serve`, against a stand-in Label Studio (a local HTTP server that
serves task images only with the right token): the config's Choices / Taxonomy are the classes, images come only
from the configured host, with its token, never from a host a request names; the API key as basic auth.
(The same routes against a real Label Studio: tests/test_label_studio.py, slow.)"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zsclip.serve.inputs import ClientError
from zsclip.serve.labelstudio import image_address, parse_label_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKEN = "ls-token-123"
LABELS = ["blue ring", "red triangle", "white star"]
CONFIG = ('<View><Image name="pic" value="$image"/><Choices name="kind" toName="pic">'
          + "".join(f'<Choice value="{label}"/>' for label in LABELS) + "</Choices></View>")


class _Images(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Authorization")))
        name = self.path.rsplit("=", 1)[-1].rsplit("/", 1)[-1]
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/x.png")
            self.end_headers()
            return
        if self.headers.get("Authorization") != f"Token {TOKEN}" or not (EXAMPLES / name).is_file():
            self.send_response(401 if self.headers.get("Authorization") != f"Token {TOKEN}" else 404)
            self.end_headers()
            return
        data = (EXAMPLES / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_label_studio():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def client(fake_label_studio):
    from fastapi.testclient import TestClient

    import zsclip
    from zsclip.serve import create_app
    from zsclip.serve.settings import ServeSettings

    settings = ServeSettings(default_templates="photo", api_key="secret", label_studio_url=fake_label_studio,
                             label_studio_token=TOKEN, precision="fp32")
    with TestClient(create_app(settings, encoder=zsclip.load_model("demo", device="cpu"))) as client:
        yield client


def test_config_choices_and_taxonomy_are_the_classes():
    project = parse_label_config(CONFIG, 100)
    assert (project.from_name, project.to_name, project.data_key, project.kind) == ("kind", "pic", "image", "single")
    assert list(project.labels) == LABELS
    multi = parse_label_config(CONFIG.replace('toName="pic"', 'toName="pic" choice="multiple"'), 100)
    assert multi.kind == "multi"
    tree = parse_label_config('<View><Image name="i" value="$image"/><Taxonomy name="t" toName="i">'
                              '<Choice value="ring"><Choice value="blue ring"/><Choice value="red ring"/></Choice>'
                              '<Choice value="star"><Choice value="white star"/></Choice></Taxonomy></View>', 100)
    assert tree.kind == "tree" and [n.name for n in tree.tree.nodes] == ["ring", "blue ring", "red ring", "star",
                                                                         "white star"]
    for bad, why in [("<View/>", "no Choices"), ("<View", "not valid XML"), (CONFIG, "over the limit"),
                     ('<!DOCTYPE x [<!ENTITY a "b">]>' + CONFIG, "DOCTYPE")]:
        with pytest.raises(ClientError, match=why):
            parse_label_config(bad, 2)


def test_images_are_fetched_only_from_the_configured_label_studio():
    base = "http://ls.local:8080"
    assert image_address("/data/upload/1/a.png", base) == "http://ls.local:8080/data/upload/1/a.png"
    assert image_address("http://ls.local:8080/data/x.png", base) == "http://ls.local:8080/data/x.png"
    for elsewhere in ("http://evil.example/x.png", "//evil.example/x.png", "https://ls.local:8080/x.png",
                      "file:///etc/passwd"):
        with pytest.raises(Exception, match="not on the Label Studio"):
            image_address(elsewhere, base)


def test_backend_predicts_the_projects_choices_with_images_from_label_studio(client, fake_label_studio):
    auth = ("label-studio", "secret")
    assert client.get("/health", auth=auth).json()["status"] == "UP"
    assert client.post("/predict", json={"tasks": [{"data": {"image": "/x"}}], "label_config": CONFIG}).status_code \
        == 401
    version = client.post("/setup", auth=auth, json={"schema": CONFIG, "hostname": "http://evil.example",
                                                      "access_token": "x"}).json()["model_version"]
    assert version.startswith("zsclip demo@")
    _Images.seen.clear()
    tasks = [{"id": i, "data": {"image": f"/data/local-files/?d={label.replace(' ', '_')}.png"}}
             for i, label in enumerate(LABELS)]
    tasks += [{"id": 9, "data": {"image": "http://evil.example/blue_ring.png"}},
              {"id": 10, "data": {"image": "/redirect"}}]
    response = client.post("/predict", auth=auth, json={"tasks": tasks, "label_config": CONFIG, "project": "1.1"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(tasks)
    for label, result in zip(LABELS, results, strict=False):
        (answer,) = result["result"]
        assert answer == {"from_name": "kind", "to_name": "pic", "type": "choices", "value": {"choices": [label]}}
        assert 0.5 < result["score"] <= 1 and result["model_version"] == version
    assert results[3]["result"] == [] and "not on the Label Studio" in results[3]["error"]
    assert results[4]["result"] == [] and "another host" in results[4]["error"]
    assert {authorization for _, authorization in _Images.seen} == {f"Token {TOKEN}"}  # only our host, with its token
    assert client.post("/webhook", auth=auth, json={"action": "ANNOTATION_CREATED"}).json()["status"] == "ignored"
