"""`/v1/explain` and the page's heatmap (issue 35): a real server on 127.0.0.1 (the demo model), real HTTP
requests read back as a client would (json, Pillow), and the page in Debian's chromium."""

from __future__ import annotations

import io
import random

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from test_serve import TIMEOUT, _browser, _start, _stop  # noqa: E402 (after the importorskips)
from zsclip import shapes  # noqa: E402

LABELS = ",".join(shapes.classnames())


@pytest.fixture(scope="module")
def server():  # the name marks every test using it slow (conftest.SLOW_FIXTURES)
    process, url = _start("--max-images", "4")
    yield url
    _stop(process)


@pytest.fixture(scope="module")
def scene():
    value = shapes.sample_scene(random.Random(7), 2)
    buffer = io.BytesIO()
    shapes.render_scene(value, 96).save(buffer, format="PNG")
    return value, buffer.getvalue()


def _box(spec, size):
    return ((spec.centre[0] - spec.radius) * size, (spec.centre[1] - spec.radius) * size,
            (spec.centre[0] + spec.radius) * size, (spec.centre[1] + spec.radius) * size)


def test_explain_answers_a_grid_per_label_that_points_at_the_shape(server, scene):
    value, data = scene
    for spec in value.shapes:
        response = httpx.post(f"{server}/v1/explain", files=[("images", ("scene.png", data, "image/png"))],
                              data={"labels": LABELS, "text": spec.label}, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert (result["width"], result["height"]) == (96, 96) and result["predictions"]
        (heat,) = result["heatmaps"]
        grid = heat["grid"]
        assert heat["label"] == spec.label and len(grid) == 64 and len(grid[0]) == 64
        peak = max((v, x, y) for y, row in enumerate(grid) for x, v in enumerate(row))
        left, top, right, bottom = _box(spec, 64)
        assert left <= peak[1] + 0.5 <= right and top <= peak[2] + 0.5 <= bottom, spec.label
        assert heat["max"] >= peak[0] - 1e-4


def test_explain_png_is_the_overlay_of_the_top_label(server, scene):
    from PIL import Image

    _, data = scene
    response = httpx.post(f"{server}/v1/explain", files=[("images", ("scene.png", data, "image/png"))],
                          data={"labels": LABELS, "format": "png", "method": "gradcam"}, timeout=TIMEOUT)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as picture:
        assert picture.size == (96, 96)
    assert response.headers["x-zsclip-label"] in shapes.classnames()
    classified = httpx.post(f"{server}/v1/classify", files=[("images", ("scene.png", data, "image/png"))],
                            data={"labels": LABELS, "top_k": "1"}, timeout=TIMEOUT).json()
    assert classified["results"][0]["predictions"][0]["label"] == response.headers["x-zsclip-label"]


def test_explain_limits_and_bad_input_are_json_errors(server, scene):
    _, data = scene
    image = ("images", ("scene.png", data, "image/png"))
    too_many = httpx.post(f"{server}/v1/explain", files=[image] * 5, data={"labels": "a,b"}, timeout=TIMEOUT)
    assert too_many.status_code == 413 and "limit of 4" in too_many.json()["error"]
    unknown = httpx.post(f"{server}/v1/explain", files=[image], data={"labels": "a,b", "colour": "x"},
                         timeout=TIMEOUT)
    assert unknown.status_code == 422 and "colour" in unknown.json()["error"]
    two_png = httpx.post(f"{server}/v1/explain", files=[image, image], data={"labels": "a,b", "format": "png"},
                         timeout=TIMEOUT)
    assert two_png.status_code == 422 and "one overlay" in two_png.json()["error"]
    mixed = httpx.post(f"{server}/v1/explain", files=[image, ("images", ("bad.png", b"not an image", "image/png"))],
                       data={"labels": "red star,blue ring", "text": "something round"}, timeout=TIMEOUT)
    assert mixed.status_code == 200, mixed.text
    good, bad = mixed.json()["results"]
    assert [h["label"] for h in good["heatmaps"]] == ["something round"] and bad["error"] and "heatmaps" not in bad
    assert httpx.get(f"{server}/healthz", timeout=TIMEOUT).status_code == 200


def test_the_page_draws_the_heatmap_of_the_label_pointed_at(server, scene, tmp_path):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    value, data = scene
    path = tmp_path / "scene.png"
    path.write_bytes(data)
    with _browser() as driver:
        driver.get(f"{server}/")
        WebDriverWait(driver, 30).until(lambda d: "demo" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "files").send_keys(str(path))
        labels = driver.find_element(By.ID, "labels")
        labels.clear()
        labels.send_keys(", ".join(spec.label for spec in value.shapes) + ", white cross")
        driver.find_element(By.ID, "classify").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .prediction"))
        second = driver.find_elements(By.CSS_SELECTOR, "#results .prediction")[1]
        ActionChains(driver).move_to_element(second).perform()
        wanted = second.get_attribute("data-label")
        canvas = WebDriverWait(driver, 60).until(
            lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, "#results canvas.heat")
                            if c.is_displayed() and c.get_attribute("data-label") == wanted), None))
        assert int(canvas.get_attribute("width")) == 64 and int(canvas.get_attribute("height")) == 64
        drawn = driver.execute_script(
            "const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let opaque = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) opaque++; return opaque;", canvas)
        assert drawn > 0
