"""`zsclip serve` speed work (issue 26): batches wait only for announced images, the traced CPU forward
gives the eager features, the lean classify path answers as the route does and keeps its limits.

The end-to-end cases share test_serve's module server (demo model, 2 MB body limit); the rest run in process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from test_serve import EXAMPLES, LABELS, TIMEOUT, _files, server  # noqa: F401 (server: the module's fixture)

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from zsclip.serve.batching import BatchQueue  # noqa: E402
from zsclip.serve.traced import traced_encoder  # noqa: E402


def test_a_lone_image_runs_at_once_and_a_batch_waits_only_for_announced_images():
    sizes: list[int] = []

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        sizes.append(len(pixels))
        return pixels.flatten(1)

    async def scenario() -> tuple[float, float]:
        queue = BatchQueue(forward, max_batch_size=8, max_wait_ms=5000).start()
        image = torch.zeros(1, 3, 2, 2)
        try:
            started = time.monotonic()
            await asyncio.wait_for(queue.submit(image), 3)  # nothing announced: no 5 s window
            lone = time.monotonic() - started
            with queue.expecting() as announced:  # one request on its way: the first image waits for it
                first = asyncio.ensure_future(queue.submit(image))
                await asyncio.sleep(0.3)
                assert not first.done()
                await asyncio.wait_for(queue.submit(image + 1, announced), 3)
            await asyncio.wait_for(first, 3)
            with queue.expecting():  # an announced request that never submits (refused, gone) releases the wait
                third = asyncio.ensure_future(queue.submit(image))
                await asyncio.sleep(0.2)
                assert not third.done()
            started = time.monotonic()
            await asyncio.wait_for(third, 3)
            released = time.monotonic() - started
        finally:
            queue.close()
        return lone, released

    lone, released = asyncio.run(scenario())
    assert lone < 1.0 and released < 1.0
    assert sizes == [1, 2, 1]  # the announced image joined the waiting one's forward pass


def test_the_traced_forward_gives_the_eager_features_and_is_used_only_where_checked(tiny_clip, monkeypatch):
    example = tiny_clip.image_transform()(Image.new("RGB", (40, 30)))
    twin = traced_encoder(tiny_clip, "fp32", example)
    assert twin is not tiny_clip and isinstance(twin._image_forward, torch.jit.ScriptModule)
    pixels = torch.randn(5, *example.shape)
    assert torch.equal(twin.encode_images(pixels, "fp32"), tiny_clip.encode_images(pixels, "fp32"))
    assert traced_encoder(tiny_clip, "bf16", example) is tiny_clip  # other precisions: eager, unchecked
    monkeypatch.setattr(torch.jit, "trace", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("untraceable")))
    assert traced_encoder(tiny_clip, "fp32", example) is tiny_clip


def _requests_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("zsclip_requests_total{")
               and 'route="/v1/classify"' in line and 'status="200"' in line)


def test_the_lean_path_answers_as_the_route_does_and_is_counted_under_its_route(server):  # noqa: F811
    names = ["blue_ring.png", "red_triangle.png"]
    fields = {"labels": LABELS, "top_k": "3"}
    before = _requests_counted(server)
    lean = httpx.post(f"{server}/v1/classify", files=_files(*names), data=fields, timeout=TIMEOUT)
    # a field the lean path leaves to the route (frames applies to videos only): the same request, FastAPI's route
    routed = httpx.post(f"{server}/v1/classify", files=_files(*names), data={**fields, "frames": "8"},
                        timeout=TIMEOUT)
    assert lean.status_code == routed.status_code == 200, (lean.text, routed.text)
    assert lean.json() == routed.json()
    assert list(lean.json()["results"][0]) == list(routed.json()["results"][0])  # same fields, same order
    assert _requests_counted(server) == before + 2


def test_the_lean_path_keeps_the_limits(server):  # noqa: F811
    # a chunked body (no Content-Length to refuse up front) over the 2 MB limit: 413 while it streams
    def body():
        yield b'--x\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n'
        for _ in range(48):
            yield b"\0" * 65536
        yield b"\r\n--x--\r\n"

    response = httpx.post(f"{server}/v1/classify", content=body(), timeout=TIMEOUT,
                          headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    too_many = httpx.post(f"{server}/v1/classify", files=_files(*["blue_ring.png"] * 33), data={"labels": LABELS},
                          timeout=TIMEOUT)
    assert too_many.status_code == 413 and "33 images" in too_many.json()["error"]
    bad = httpx.post(f"{server}/v1/classify", files=_files("blue_ring.png"), data={"labels": LABELS, "top_k": "0"},
                     timeout=TIMEOUT)
    assert bad.status_code == 422  # the route's refusal, with its message
    assert httpx.get(f"{server}/healthz", timeout=TIMEOUT).status_code == 200


def test_threads_with_a_gpu_device_is_refused_in_one_line():
    process = subprocess.run([sys.executable, "-m", "zsclip", "serve", "--device", "cuda", "--threads", "2"],
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 2 and process.stderr.strip().splitlines() == [
        "zsclip: error: --threads sets the CPU forward's threads: it does not apply with --device cuda"]



def test_the_common_request_skips_the_route_and_others_reach_it(tiny_clip, monkeypatch):
    from starlette.testclient import TestClient

    from zsclip.serve import ServeSettings, create_app
    from zsclip.serve import app as app_module

    routed = []
    answer = app_module.answer_images

    async def counted(*args, **kwargs):
        routed.append(1)
        return await answer(*args, **kwargs)

    monkeypatch.setattr(app_module, "answer_images", counted)  # the FastAPI route's call, not the lean path's
    with TestClient(create_app(ServeSettings(default_templates="photo"), encoder=tiny_clip)) as client:
        files = _files("blue_ring.png")
        lean = client.post("/v1/classify", files=files, data={"labels": "ring,star", "top_k": "1"})
        assert lean.status_code == 200 and routed == []
        full = client.post("/v1/classify", files=files, data={"labels": "ring,star", "top_k": "1", "frames": "4"})
        assert full.status_code == 200 and routed == [1]
        assert lean.json() == full.json()
