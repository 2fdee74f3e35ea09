"""`zsclip serve` under hostile clients (issue 22, items 5-9): a real server on 127.0.0.1, raw sockets.

One server with an API key, a 2 s header deadline and a small connection limit serves the module;
every socket has a timeout and every wait is bounded.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import threading
import time

import pytest

from test_serve import EXAMPLES, TIMEOUT, _browser, _chromium, _files, _start, _stop

httpx = pytest.importorskip("httpx")

KEY = "s3cret"
AUTH = {"X-API-Key": KEY}
HEADER_TIMEOUT = 2.0
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def guarded():
    process, url = _start("--api-key", KEY, "--header-timeout", str(HEADER_TIMEOUT),
                          "--max-connections", str(MAX_CONNECTIONS), "--request-timeout", "20")
    yield url
    _stop(process)


def _address(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].split(":")
    return host, int(port)


def _connect(url: str) -> socket.socket:
    sock = socket.create_connection(_address(url), timeout=10)
    sock.settimeout(10)
    return sock


def _read_until_closed(sock: socket.socket, deadline_s: float = 10) -> bytes:
    data, end = b"", time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


# --- 5: the key is checked from the headers, before the body -------------------------------------
def test_without_the_key_a_stalled_upload_gets_401_at_once_and_the_connection_closes(guarded):
    sock = _connect(guarded)
    try:
        # 20 MB announced (under the 32 MB body limit), not one byte of it sent: the answer cannot have
        # waited for, spooled or parsed the body
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Length: 20000000\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        started = time.monotonic()
        response = _read_until_closed(sock)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert response.startswith(b"HTTP/1.1 401 "), response[:200]
    assert b"connection: close" in response.lower() and b"X-API-Key" in response
    assert elapsed < 3, f"401 took {elapsed:.1f} s"


def test_without_the_key_a_sent_upload_is_refused_with_401_not_a_form_error(guarded):
    response = httpx.post(f"{guarded}/v1/classify", data={"top_k": "not a number"}, timeout=TIMEOUT)
    assert response.status_code == 401 and "API key" in response.json()["error"]
    wrong = httpx.get(f"{guarded}/v1/info", headers={"Authorization": "Bearer nope"}, timeout=TIMEOUT)
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/v1/info", "/v1/classifiers", "/v1/classifiers/x", "/metrics", "/v2/unknown"])
def test_every_api_route_needs_the_key(guarded, path):
    assert httpx.get(f"{guarded}{path}", timeout=TIMEOUT).status_code == 401
    assert httpx.get(f"{guarded}{path}", headers=AUTH, timeout=TIMEOUT).status_code in (200, 404)
    bearer = httpx.get(f"{guarded}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT)
    assert bearer.status_code in (200, 404)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/", "/static/style.css", "/static/app.js"])
def test_probes_and_the_page_stay_open(guarded, path):
    assert httpx.get(f"{guarded}{path}", timeout=TIMEOUT).status_code == 200


# --- 6: metrics series do not grow with what clients send -----------------------------------------
def _series(url: str) -> set[str]:
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=TIMEOUT).text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_made_up_methods_and_paths_do_not_add_metric_series(guarded):
    def junk(client: httpx.Client, start: int, count: int) -> None:
        for i in range(start, start + count):
            headers = AUTH if i % 2 else {}
            client.request(f"M{i}X", f"{guarded}/made/up/{i}?q={i}", headers=headers)
            client.get(f"{guarded}/v1/classifiers/id{i}", headers=headers)
            client.request(f"Q{i}", f"{guarded}/v1/info", headers=headers)

    with httpx.Client(timeout=TIMEOUT) as client:
        junk(client, 0, 20)
        before = _series(guarded)
        junk(client, 20, 40)  # 120 more made-up methods, paths and ids: none adds a series
        after = _series(guarded)
    assert after == before, sorted(after - before)[:10]
    requests = [s for s in after if s.startswith("zsclip_requests_total")]
    assert any('method="other"' in s for s in requests) and any('route="other"' in s for s in requests)
    assert all("M1" not in s and "made" not in s and "id1" not in s for s in after)


def test_metric_labels_come_from_fixed_sets():
    from zsclip.serve.guard import _method_label, _status_label

    assert _method_label("GET") == "GET" and _method_label("BREW") == "other" and _method_label("get") == "other"
    assert [_status_label(s) for s in (200, 429, 418, 302, 599, 999)] == ["200", "429", "4xx", "3xx", "5xx", "other"]


# --- 7: slow clients --------------------------------------------------------------------------------
def _trickle_headers(url: str, outcome: dict) -> None:
    """One header line a second, never the blank line that ends the headers."""
    sock = _connect(url)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        for i in range(12):
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                try:
                    outcome["response"] = sock.recv(4096)
                except ConnectionResetError:
                    outcome["response"] = b""
                break
            sock.sendall(f"X-Slow-{i}: {'x' * 20}\r\n".encode())
    except OSError:  # the server closed the connection while we wrote
        outcome["response"] = b""
    finally:
        outcome["after"] = time.monotonic() - started
        sock.close()


def test_a_client_sending_headers_slowly_is_cut_off_while_others_are_served(guarded):
    outcomes = [{} for _ in range(3)]
    slow = [threading.Thread(target=_trickle_headers, args=(guarded, o)) for o in outcomes]
    for thread in slow:
        thread.start()
    latencies = []
    with httpx.Client(timeout=TIMEOUT) as client:
        while any(thread.is_alive() for thread in slow) and len(latencies) < 200:
            started = time.monotonic()
            assert client.get(f"{guarded}/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
    for thread in slow:
        thread.join(timeout=20)
    for outcome in outcomes:
        assert "after" in outcome, "the slow client was not disconnected"
        assert HEADER_TIMEOUT - 0.5 < outcome["after"] < HEADER_TIMEOUT + 3, outcome
        assert outcome["response"] == b"" or outcome["response"].startswith(b"HTTP/1.1 408 "), outcome
    assert len(latencies) >= 5 and max(latencies) < 1.0, latencies


def test_connections_over_the_limit_get_503_until_idle_ones_are_cut(guarded):
    idle = [_connect(guarded) for _ in range(MAX_CONNECTIONS)]
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            assert client.get(f"{guarded}/healthz").status_code == 503
        time.sleep(HEADER_TIMEOUT + 1)  # the idle connections never sent headers: they are closed
        assert all(_read_until_closed(sock, 5) == b"" for sock in idle)
        assert httpx.get(f"{guarded}/healthz", timeout=TIMEOUT).status_code == 200
    finally:
        for sock in idle:
            sock.close()


# --- 8: form text is UTF-8 ----------------------------------------------------------------------------
def test_form_fields_that_are_not_utf8_are_a_400_naming_the_field(guarded):
    latin1 = httpx.post(f"{guarded}/v1/classify", headers=AUTH, timeout=TIMEOUT,
                        files=[("labels", (None, "café,dog".encode("latin-1"))), *_files("blue_ring.png")])
    assert latin1.status_code == 400 and "'labels'" in latin1.json()["error"] and "UTF-8" in latin1.json()["error"]
    encoded = httpx.post(f"{guarded}/v1/classifiers", headers={**AUTH, "Content-Type":
                         "application/x-www-form-urlencoded"}, content=b"labels=caf%E9,dog", timeout=TIMEOUT)
    assert encoded.status_code == 400 and "'labels'" in encoded.json()["error"]
    declared = httpx.post(f"{guarded}/v1/classifiers", timeout=TIMEOUT, content=b"--b\r\nContent-Disposition: "
                          b"form-data; name=\"labels\"\r\n\r\na,b\r\n--b--\r\n",
                          headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b; charset=latin-1"})
    assert declared.status_code == 400 and "UTF-8" in declared.json()["error"]
    filename = httpx.post(f"{guarded}/v1/classify", timeout=TIMEOUT, content=b"--b\r\nContent-Disposition: "
                          b"form-data; name=\"images\"; filename=\"\xff.png\"\r\n\r\nx\r\n--b--\r\n",
                          headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"})
    assert filename.status_code == 400 and "file name in field 'images'" in filename.json()["error"]
    ok = httpx.post(f"{guarded}/v1/classifiers", headers=AUTH, data={"labels": "café,dög"}, timeout=TIMEOUT)
    assert ok.status_code == 200 and ok.json()["classes"] == ["café", "dög"]


# --- 9: the page asks for the key only when the server has one ------------------------------------------
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium and chromium-driver")
def test_the_page_shows_the_key_field_and_classifies_once_the_key_is_given(guarded):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with _browser() as driver:
        driver.get(f"{guarded}/")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "key-field").is_displayed())
        assert driver.find_element(By.ID, "model").text == "API key needed"
        key = driver.find_element(By.ID, "apikey")
        key.send_keys(KEY)
        driver.find_element(By.ID, "labels").click()  # leaving the field fires its change event
        WebDriverWait(driver, 30).until(lambda d: "demo" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "files").send_keys(str(EXAMPLES / "red_triangle.png"))
        labels = driver.find_element(By.ID, "labels")
        labels.clear()
        labels.send_keys("red triangle, blue ring")
        driver.find_element(By.ID, "classify").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .prediction .label"))
        assert driver.find_elements(By.CSS_SELECTOR, "#results .prediction .label")[0].text == "red triangle"


# --- 9: a busy port, a model whose input is not 224 px -------------------------------------------------
def test_a_busy_port_is_one_line_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        process = subprocess.run([sys.executable, "-m", "zsclip", "serve", "--model", "demo", "--port", str(port)],
                                 capture_output=True, text=True, timeout=60)
    assert process.returncode == 2, process.stderr
    assert process.stderr.splitlines() == [
        f"zsclip: error: port {port} on 127.0.0.1 is already in use (another server?): stop it or choose another "
        "--port"]
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_a_32_pixel_transformers_model_starts_and_classifies(tmp_path):
    pytest.importorskip("transformers")
    from starlette.testclient import TestClient

    import zsclip
    from zsclip.serve import ServeSettings, create_app
    from zsclip.testing.tiny_hf import IMAGE_SIZE, save_tiny_clip

    assert IMAGE_SIZE != 224
    encoder = zsclip.load_model(f"transformers:{save_tiny_clip(tmp_path / 'tiny')}", device="cpu")
    assert encoder.image_size == IMAGE_SIZE  # transformers' SizeDict is read, not skipped
    app = create_app(ServeSettings(model="transformers", default_templates="photo"), encoder=encoder)
    with TestClient(app) as client:  # startup warms the model up: it failed on 224 px input
        assert client.get("/readyz").status_code == 200
        response = client.post("/v1/classify", data={"labels": "ring,star"}, files=_files("blue_ring.png"))
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][0]["predictions"]) == 2


# --- 15: a closed pipe on stdout ------------------------------------------------------------------------
@pytest.mark.slow
def test_classify_into_a_closed_pipe_exits_141_quietly(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        (images / f"{i:03d}.png").write_bytes((EXAMPLES / "blue_ring.png").read_bytes())
    process = subprocess.Popen([sys.executable, "-m", "zsclip", "classify", str(images), "--model", "demo",
                                "--labels", "ring,star,cross"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    process.stdout.close()  # the reader is gone before the first line, as `| head -0` would be
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 141, stderr.decode()
    assert b"error" not in stderr and b"Traceback" not in stderr and b"Exception ignored" not in stderr


@pytest.mark.slow
def test_classify_piped_into_head_keeps_the_lines_head_read(tmp_path):
    command = (f"{sys.executable} -m zsclip classify {EXAMPLES} --model demo --labels-file {EXAMPLES / 'labels.txt'}"
               " | head -2; echo status=${PIPESTATUS[0]}")
    # its own session and no stdin: the pipeline's signals and reads stay inside it, never reach pytest
    process = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    lines = process.stdout.splitlines()
    assert len(lines) == 3 and lines[-1] in ("status=0", "status=141"), process.stdout + process.stderr
    assert "error" not in process.stderr


# --- issue 38, item 4: a request framed two ways is answered once and its connection closed --------------
@pytest.mark.parametrize("path", ["/v1/classify", "/healthz"])
def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(guarded, path):
    # framed by Transfer-Encoding (as h11 does) the body ends at "0"; framed by Content-Length (as a proxy in
    # front might) it goes on: the GET behind it must not be read as a second request on this connection
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    sock = _connect(guarded)
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n"
                     "Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n".encode()
                     + body)
        response = _read_until_closed(sock)  # returns once the server closes (or after 10 s)
    finally:
        sock.close()
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), response[:300]
    assert b"connection: close" in head.lower()
    assert b"Content-Length and Transfer-Encoding" in rest and b"HTTP/1.1" not in rest, response  # one answer only
    assert httpx.get(f"{guarded}/healthz", timeout=TIMEOUT).status_code == 200  # and the server serves on
