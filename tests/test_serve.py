"""`zsclip serve` (issue 16): a real server process on 127.0.0.1, real HTTP requests, a real browser.

One server (the demo model) serves the module; every request and wait is bounded in time. The
browser test drives Debian's chromium through chromedriver (selenium), never a downloaded binary.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LABELS = ",".join(p.stem.replace("_", " ") for p in sorted(EXAMPLES.glob("*.png")))
TIMEOUT = httpx.Timeout(30.0)

from serving import start_serve as _start  # noqa: E402 (after the importorskips); other tests import them here
from serving import stop_serve as _stop  # noqa: E402


@pytest.fixture(scope="module")
def server():
    process, url = _start("--max-batch-size", "16", "--max-wait-ms", "50", "--max-request-mb", "2",
                          "--max-labels", "100")
    yield url
    _stop(process)


def _files(*names: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (name, (EXAMPLES / name).read_bytes(), "image/png")) for name in names]


def test_classify_answers_with_the_right_labels(server):
    names = [p.name for p in sorted(EXAMPLES.glob("*.png"))]
    response = httpx.post(f"{server}/v1/classify", files=_files(*names), data={"labels": LABELS, "top_k": "2"},
                          timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["filename"] for r in body["results"]] == names
    for result in body["results"]:
        assert result["predictions"][0]["label"] == result["filename"][:-4].replace("_", " ")
        assert len(result["predictions"]) == 2


def test_a_bad_image_is_an_error_item_and_the_rest_is_answered(server):
    files = _files("blue_ring.png") + [("images", ("junk.png", b"not a png", "image/png"))]
    body = httpx.post(f"{server}/v1/classify", files=files, data={"labels": LABELS}, timeout=TIMEOUT).json()
    assert body["results"][0]["predictions"][0]["label"] == "blue ring"
    assert body["results"][1]["error"] and body["results"][1]["predictions"] is None


@pytest.mark.parametrize("data, files, status", [
    ({"labels": "only"}, "one", 422),  # the service refuses one label (the CLI warns): no softmax over one class
    ({"labels": ""}, "one", 422),
    ({"labels": ",".join(f"c{i}" for i in range(101))}, "one", 422),
    ({"labels": "a,b", "templates": "{:>999999999}"}, "one", 422),
    ({"labels": "a,b"}, "none", 422),
    ({"labels": "a,b"}, "huge", 413),
])
def test_bad_requests_get_a_json_4xx_and_the_server_goes_on(server, data, files, status):
    upload = {"one": _files("blue_ring.png"), "none": [],
              "huge": [("images", ("big.png", b"\0" * (3 << 20), "image/png"))]}[files]
    response = httpx.post(f"{server}/v1/classify", files=upload or None, data=data, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    if status != 200:
        assert "error" in response.json()
    assert httpx.get(f"{server}/healthz", timeout=TIMEOUT).status_code == 200


def test_a_registered_label_set_is_reused_by_id(server):
    created = httpx.post(f"{server}/v1/classifiers", data={"labels": "blue ring|ring of blue,red triangle"},
                         timeout=TIMEOUT)
    assert created.status_code == 200, created.text
    classifier_id = created.json()["id"]
    body = httpx.post(f"{server}/v1/classify", files=_files("red_triangle.png"),
                      data={"classifier": classifier_id}, timeout=TIMEOUT).json()
    assert body["classifier"] == classifier_id and body["results"][0]["predictions"][0]["label"] == "red triangle"
    assert classifier_id in httpx.get(f"{server}/v1/classifiers", timeout=TIMEOUT).text


def test_concurrent_requests_share_forward_passes_with_the_same_answers(server):
    names = [p.name for p in sorted(EXAMPLES.glob("*.png"))] * 3
    alone = {name: httpx.post(f"{server}/v1/classify", files=_files(name), data={"labels": LABELS},
                              timeout=TIMEOUT).json()["results"][0]["predictions"] for name in set(names)}

    def one(name: str):
        response = httpx.post(f"{server}/v1/classify", files=_files(name), data={"labels": LABELS}, timeout=TIMEOUT)
        return name, response.json()["results"][0]["predictions"]

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        answers = list(pool.map(one, names))
    for name, predictions in answers:
        assert [p["label"] for p in predictions] == [p["label"] for p in alone[name]]
        assert predictions[0]["score"] == pytest.approx(alone[name][0]["score"], abs=1e-4)
    metrics = httpx.get(f"{server}/metrics", timeout=TIMEOUT).text
    batches = float(next(line.split()[-1] for line in metrics.splitlines()
                         if line.startswith("zsclip_batch_size_count")))
    images = float(next(line.split()[-1] for line in metrics.splitlines()
                        if line.startswith("zsclip_batch_size_sum")))
    assert images / batches > 1.2  # on average, several requests' images went through one forward pass


def test_info_health_and_metrics(server):
    info = httpx.get(f"{server}/v1/info", timeout=TIMEOUT).json()
    assert info["model"] == "demo" and info["limits"]["max_labels"] == 100
    assert httpx.get(f"{server}/readyz", timeout=TIMEOUT).status_code == 200
    assert "zsclip_requests" in httpx.get(f"{server}/metrics", timeout=TIMEOUT).text


@pytest.mark.slow  # starts its own real server
def test_an_api_key_is_required_when_set():
    process, url = _start("--api-key", "s3cret")
    try:
        files = _files("blue_ring.png")
        assert httpx.post(f"{url}/v1/classify", files=files, data={"labels": "a,b"}, timeout=TIMEOUT).status_code == 401
        ok = httpx.post(f"{url}/v1/classify", files=files, data={"labels": "a,b"}, headers={"X-API-Key": "s3cret"},
                        timeout=TIMEOUT)
        assert ok.status_code == 200
        assert httpx.get(f"{url}/healthz", timeout=TIMEOUT).status_code == 200  # probes need no key
    finally:
        _stop(process)


def test_the_server_binds_loopback_by_default(server):
    host = server.split("//")[1].split(":")[0]
    assert host == "127.0.0.1"
    process = subprocess.run([sys.executable, "-m", "zsclip", "serve", "--help"], capture_output=True, text=True,
                             timeout=60)
    assert "--host TEXT" in process.stdout and "[default: 127.0.0.1]" in process.stdout


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def _browser():
    """A headless Debian chromium driven through chromedriver (selenium), quit on exit."""
    webdriver = pytest.importorskip("selenium.webdriver")
    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium and chromium-driver")
def test_the_web_page_classifies_an_upload_in_a_real_browser(server, tmp_path):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with _browser() as driver:
        driver.get(f"{server}/")
        WebDriverWait(driver, 30).until(lambda d: "demo" in d.find_element(By.ID, "model").text)
        assert not driver.find_element(By.ID, "key-field").is_displayed()  # this server has no key
        driver.find_element(By.ID, "files").send_keys(str(EXAMPLES / "blue_ring.png"))
        labels = driver.find_element(By.ID, "labels")
        labels.clear()
        labels.send_keys("red triangle, blue ring, green star")
        driver.find_element(By.ID, "classify").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .prediction .label"))
        first = driver.find_elements(By.CSS_SELECTOR, "#results .prediction .label")[0].text
        assert first == "blue ring"
        assert "1 classified" in driver.find_element(By.ID, "status").text


def test_serve_without_the_extra_is_one_line(monkeypatch):
    from click.testing import CliRunner

    from zsclip.cli import main
    from zsclip.cli import serve as serve_module

    monkeypatch.setattr(serve_module, "missing_serve_modules", lambda: ["fastapi", "uvicorn"])
    result = CliRunner().invoke(main, ["serve", "--model", "demo"])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        'zsclip: error: zsclip serve needs the serve extra: pip install "zsclip[serve]" (missing: fastapi, uvicorn)']


def test_multi_label_fields_give_every_label_over_the_threshold(server):
    names = [p.name for p in sorted(EXAMPLES.glob("*.png"))][:3]
    response = httpx.post(f"{server}/v1/classify", files=_files(*names),
                          data={"labels": LABELS, "multi_label": "true", "multi_score": "softmax", "threshold": "0.2"},
                          timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["head"]["head"] == "multilabel" and body["head"]["score"] == "softmax"
    for result in body["results"]:
        assert all(p["score"] >= 0.2 for p in result["predictions"])
        assert result["record"]["labels"] == [p["label"] for p in result["predictions"]]
    refused = httpx.post(f"{server}/v1/classify", files=_files(names[0]),
                         data={"labels": LABELS, "multi_label": "true", "top_k": "2"}, timeout=TIMEOUT)
    assert refused.status_code == 422 and "top_k" in refused.json()["error"]  # the form field, not the CLI flag
    assert "--top-k" not in refused.json()["error"] and "--multi-label" not in refused.json()["error"]
