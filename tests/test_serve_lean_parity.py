"""The lean classify path (serve/lean.py) parses like the FastAPI route (issue 38, item 4).

A property test: generated multipart bodies (valid ones, bodies cut anywhere, without a closing delimiter,
with odd part headers, oversized fields, fields the route refuses) go to the app as ``zsclip serve`` builds it
and to the same app without the lean layer (FastAPI's route answers everything); each pair of answers must be
the same, status and JSON. Both apps run in this process (Starlette's TestClient drives the real ASGI stack:
guard, lean layer, route, batching queue, model) with a tiny model, so a few hundred requests take seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG = (EXAMPLES / "blue_ring.png").read_bytes()
BOUNDARY = b"zsclip-b0undary"
#: over the route's 1 MiB text-field limit (Starlette's max_part_size), under the body limit below
OVERSIZED = b"ring," * (1024 * 1024 // 5 + 1)

TEXT_VALUES = [b"ring,star", b"ring\nstar\nmoon", b"ring|circle,star", b"", b" ", b"1", b"2", b"05", b" 2", b"0",
               b"-1", b"11", b"9999999", "\u0661".encode(), b"\xff\xfe", b"photo", b"a photo of a {}.", b"{} {}",
               b"no placeholder", b"0123456789abcdef", b",".join(b"l%d" % i for i in range(9)), b"true",
               OVERSIZED]
IMAGE_VALUES = [PNG, PNG[: len(PNG) // 2], b"", b"not an image"]
NAMES = [b"images", b"labels", b"templates", b"classifier", b"top_k", b"frames", b"bogus", b"", None]
FILENAMES = [None, b"a.png", b"", b"caf\xe9.png", b"b.png"]
EXTRA_HEADERS = [[], [b"Content-Type: image/png"], [b'content-disposition: form-data; name="top_k"'],
                 [b"X-Odd:  \t value"], [b"Content-Type: text/plain; charset=latin-1"], [b"NoColonHere"],
                 [b"Content-Transfer-Encoding: base64"]]


def _part(name: bytes | None, filename: bytes | None, data: bytes, extra: list[bytes] = ()) -> bytes:
    disposition = b"Content-Disposition: form-data"
    if name is not None:
        disposition += b'; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return b"\r\n".join([disposition, *extra]) + b"\r\n\r\n" + data


@st.composite
def _parts(draw) -> bytes:
    name, filename = draw(st.sampled_from(NAMES)), draw(st.sampled_from(FILENAMES))
    data = draw(st.sampled_from(IMAGE_VALUES if filename else TEXT_VALUES))
    return _part(name, filename, data, draw(st.sampled_from(EXTRA_HEADERS)))


@st.composite
def bodies(draw) -> tuple[bytes, bytes]:
    """(Content-Type, body): a classify form, valid or not in any of the ways above."""
    parts = []
    if draw(st.booleans()):  # a request the lean path answers, then whatever else is drawn
        parts += [_part(b"images", b"a.png", PNG), _part(b"labels", None, b"ring,star,moon")]
    parts += draw(st.lists(_parts(), max_size=3))
    parts = draw(st.permutations(parts))
    body = draw(st.sampled_from([b""] * 3 + [b"a preamble\r\n"]))  # python-multipart refuses a preamble
    body += b"".join(b"--" + BOUNDARY + b"\r\n" + part + b"\r\n" for part in parts)
    close = b"--" + BOUNDARY + b"--\r\n"
    ending = draw(st.sampled_from(["close"] * 4 + ["epilogue", "none", "cut", "half-close"]))
    if ending == "close":
        body += close
    elif ending == "epilogue":
        body += close + b"an epilogue"
    elif ending == "cut":  # anywhere: inside a header, a field's value, an image, the closing delimiter
        body = (body + close)[: draw(st.integers(0, len(body) + len(close) - 1))]
    elif ending == "half-close":
        body += b"--" + BOUNDARY + b"-"
    content_type = draw(st.sampled_from([b"multipart/form-data; boundary=" + BOUNDARY] * 4 + [
        b'multipart/form-data; boundary="' + BOUNDARY + b'"', b"Multipart/Form-Data; boundary=" + BOUNDARY,
        b"multipart/form-data; charset=utf-8; boundary=" + BOUNDARY, b"multipart/form-data",
        b"multipart/form-data; boundary=other"]))
    return content_type, body


CUT_IN_A_FIELD = (b"multipart/form-data; boundary=" + BOUNDARY,
                  b"--" + BOUNDARY + b"\r\n" + _part(b"images", b"a.png", PNG) + b"\r\n--" + BOUNDARY + b"\r\n"
                  + _part(b"labels", None, b"ring,star,mo"))


def test_the_lean_path_answers_every_body_as_the_route_does(tiny_clip, monkeypatch):
    from starlette.testclient import TestClient

    from zsclip.serve import Limits, ServeSettings, create_app
    from zsclip.serve import app as app_module
    from zsclip.serve import lean as lean_module

    limits = Limits(max_request_bytes=3 * 1024 * 1024 // 2, max_images=3, max_labels=8, max_top_k=10)
    served = create_app(ServeSettings(default_templates="photo", limits=limits), encoder=tiny_clip)

    class RouteOnly:  # the same app without the lean layer: every request reaches FastAPI's route
        def __init__(self, app, **_):
            self.app = app

        async def __call__(self, scope, receive, send):
            await self.app(scope, receive, send)

    answered = []  # requests the lean layer answered itself (the others it handed to the route)
    answer = lean_module.answer_images

    async def counted(*args, **kwargs):
        answered.append(1)
        return await answer(*args, **kwargs)

    monkeypatch.setattr(lean_module, "answer_images", counted)
    monkeypatch.setattr(app_module, "LeanClassify", RouteOnly)
    routed = create_app(ServeSettings(default_templates="photo", limits=limits), encoder=tiny_clip)
    seen = {}

    with TestClient(served) as lean, TestClient(routed) as route:

        @settings(max_examples=100, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(bodies())
        @example(CUT_IN_A_FIELD)
        def check(case: tuple[bytes, bytes]) -> None:
            content_type, body = case
            headers = {"content-type": content_type.decode("latin-1")}
            fast = lean.post("/v1/classify", content=body, headers=headers)
            full = route.post("/v1/classify", content=body, headers=headers)
            assert fast.status_code == full.status_code, (fast.text[:300], full.text[:300])
            assert fast.json() == full.json()
            seen[fast.status_code] = seen.get(fast.status_code, 0) + 1

        check()
        cut = lean.post("/v1/classify", content=CUT_IN_A_FIELD[1], headers={"content-type": CUT_IN_A_FIELD[0]})
    assert cut.status_code == 400 and "cut short" in cut.json()["error"]
    # the bodies reached both kinds of answer, and the lean layer answered some itself (not only handed them on)
    assert seen.get(200, 0) >= 5 and sum(n for status, n in seen.items() if status >= 400) >= 20, seen
    assert len(answered) >= 5
