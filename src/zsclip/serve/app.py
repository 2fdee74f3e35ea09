"""The HTTP service: ``create_app(settings)`` builds the FastAPI app that ``zsclip serve`` runs.

Request path of ``POST /v1/classify``: the multipart body is bounded (guard.py), the label set is
looked up or built once (classifiers.py) while the uploads are decoded and preprocessed on a
thread pool (never on the event loop), the pixels join the batching queue (batching.py) whose
single model thread runs them together with other requests' images, and the scores go back as
JSON with a prediction or an error per image. The server only ever reads the bytes a client sent:
it never opens a path or fetches a URL that a request names.
"""

# no `from __future__ import annotations`: FastAPI reads the route closures' annotations at runtime

import asyncio
import contextlib
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Annotated

import torch
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..encoders.base import Encoder
from ..job.heads import HeadOptions
from ..options import DEFAULT_TOP_K
from ..precision import resolve_precision
from ..prompts import TEMPLATE_SETS
from .batching import BatchQueue, QueueClosed, QueueFull
from .classifiers import ClassifierRegistry
from .forms import StrictFormRoute
from .guard import RequestGuard
from .inputs import CLASSIFY_FIELDS, ClientError, parse_descriptions, parse_tree
from .lean import LeanClassify
from .metrics import ServeMetrics
from .settings import ServeSettings
from .traced import traced_encoder
from .work import (
    ServerState,
    answer_images,
    decode_upload,
    frames_of,
    make_head,
    pooled,
    resolve_classifier,
    shown_name,
)

log = logging.getLogger("zsclip.serve")
STATIC_DIR = Path(str(resources.files("zsclip.serve") / "static"))


# --- response models (they are the OpenAPI schema at /docs) ----------------------------------------
class Prediction(BaseModel):
    label: str
    score: float


class ImageResult(BaseModel):
    index: int
    filename: str | None = None
    start: float | None = None  # an uploaded video: the span its answer covers, in seconds
    end: float | None = None
    predictions: list[Prediction] | None = None
    record: dict | None = None
    error: str | None = None
    accepted: bool | None = None  # with accept_precision: the answer reaches the calibrated threshold


class ClassifyResponse(BaseModel):
    model: str
    classifier: str
    scoring: str
    head: dict | None = None
    results: list[ImageResult]


class SearchHit(BaseModel):
    rank: int
    path: str
    score: float
    start: float | None = None  # a video clip's span, in seconds
    end: float | None = None


class SearchResponse(BaseModel):
    model: str
    results: list[SearchHit]


class ClassifierInfo(BaseModel):
    id: str
    source: str
    num_classes: int
    num_templates: int
    model: str | None = None
    scoring: str
    created: str
    classes: list[str] | None = None
    templates: list[str] | None = None


class ErrorBody(BaseModel):
    error: str
    status: int
    details: list | dict | None = None


ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in {
    400: "No image could be decoded", 401: "Missing or wrong API key", 404: "Unknown classifier id",
    413: "Body, image count or pixels over a limit", 422: "Bad parameters", 429: "Queue full: retry shortly",
    503: "Timed out, shutting down, or not ready"}.items()}


def create_app(settings: ServeSettings | None = None, encoder: Encoder | None = None) -> FastAPI:
    """The service as an ASGI app. ``encoder``: an already-loaded model (else loaded at startup from
    ``settings.model``); classifier files in ``settings`` are loaded at startup (errors stop it)."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    limits = settings.limits

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state = await asyncio.to_thread(_start, settings, encoder, metrics)
        app.state.zsclip = state
        log.info("zsclip serve ready: model %s on %s", state.encoder.name, state.encoder.device)
        try:
            yield
        finally:
            # uvicorn has stopped accepting and waited for in-flight requests; the queue finishes its work
            state.shutting_down = True
            await asyncio.to_thread(state.queue.close, limits.request_timeout_s)
            state.registry.close()
            state.decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="zsclip", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Zero-shot image classification with CLIP-family models. Send images and "
                              "labels; concurrent requests share batched forward passes.")
    app.router.route_class = StrictFormRoute  # form text is strict UTF-8 (a 400 naming the field), see forms.py
    app.state.metrics = metrics
    _install_error_handlers(app)

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's --api-key")
    bearer = HTTPBearer(auto_error=False, description="the server's --api-key as a bearer token")

    async def require_key(key: Annotated[str | None, Depends(key_header)],
                          token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.api_key is None:
            return
        given = key if key is not None else (token.credentials if token is not None else None)
        if given is None or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ClientError(401, "missing or wrong API key: send it in the X-API-Key header "
                                   "(or Authorization: Bearer KEY)")

    async def state(request: Request) -> ServerState:  # async: FastAPI would run a plain def on a thread
        current: ServerState | None = getattr(request.app.state, "zsclip", None)
        if current is None or current.shutting_down:
            raise ClientError(503, "the server is starting or shutting down: retry shortly")
        return current

    Auth = Depends(require_key)  # noqa: N806 (a FastAPI dependency marker)
    State = Annotated[ServerState, Depends(state)]

    if settings.label_studio_url is not None:  # the Label Studio ML-backend routes (serve/labelstudio.py)
        from .labelstudio import install

        install(app, settings, state)

    # --- health -------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: model loaded, queue running, not shutting down",
             responses={503: ERRORS[503]})
    async def readyz(request: Request) -> JSONResponse:
        current: ServerState | None = getattr(request.app.state, "zsclip", None)
        if current is None or current.shutting_down or not current.queue.alive:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "model": current.encoder.name, "queue_depth": current.queue.depth})

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", dependencies=[Auth],
             response_class=Response)
    async def prometheus(request: Request) -> Response:
        current: ServerState | None = getattr(request.app.state, "zsclip", None)
        if current is not None:
            metrics.queue_depth.set(current.queue.depth)
            metrics.classifiers.set(len(current.registry))
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # --- API ----------------------------------------------------------------------------------
    @app.get("/v1/info", tags=["api"], summary="Model, template sets and limits", dependencies=[Auth])
    async def info(current: State) -> dict:
        return {"model": current.encoder.name, "device": str(current.encoder.device),
                "precision": resolve_precision(settings.precision, current.encoder.device),
                "runtime": getattr(current.encoder, "runtime", "torch"),
                "template_sets": list(TEMPLATE_SETS),
                "default_templates": settings.default_templates if isinstance(settings.default_templates, str)
                else f"custom ({len(settings.default_templates)} templates)", "limits": limits.public(),
                "max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                "classifiers": [e.describe(with_classes=False) for e in current.registry.entries()],
                "version": __version__}

    @app.post("/v1/classify", tags=["api"], response_model=ClassifyResponse, dependencies=[Auth],
              responses=ERRORS, summary="Classify images by labels, a label tree or a classifier id")
    async def classify(
        request: Request,
        current: State,
        images: Annotated[list[UploadFile], File(description="one or more image files (PNG, JPEG, ...)")],
        labels: Annotated[list[str] | None, Form(description='"cat,dog" or one per line; synonyms: "dog|puppy"')]
        = None,
        classifier: Annotated[str | None, Form(description="a classifier id instead of labels")] = None,
        templates: Annotated[list[str] | None, Form(
            description=f"a set ({', '.join(TEMPLATE_SETS)}) or templates with one {{}}, one per line")] = None,
        top_k: Annotated[int | None, Form(ge=1, description=f"labels per image (flat labels; default {DEFAULT_TOP_K})")]
        = None,
        labels_tree: Annotated[str | None, Form(description="a label tree as YAML (or tree_format json / text)")]
        = None,
        tree_format: Annotated[str | None, Form(description="yaml (default), json or text")] = None,
        tree_mode: Annotated[str | None, Form(description="flat (default), top-down or chils")] = None,
        beam: Annotated[int | None, Form(ge=1, le=1000, description="top-down: nodes kept per level")] = None,
        descriptions: Annotated[str | None, Form(description="JSON: class -> sentences (CuPL)")] = None,
        reject: Annotated[float | None, Form(description="open set: a fixed threshold")] = None,
        reject_calibrate: Annotated[list[UploadFile] | None, File(
            description="open set: images of the named classes; the threshold keeps tpr of them")] = None,
        tpr: Annotated[float | None, Form(gt=0, lt=1, description="with reject_calibrate (default 0.95)")] = None,
        reject_score: Annotated[str | None, Form(description="mcm (default) or max-prob")] = None,
        reject_label: Annotated[str | None, Form(description="the label rejected images get (default none)")]
        = None,
        scale: Annotated[float | None, Form(description="a fixed temperature (> 0)")] = None,
        multi_label: Annotated[bool | None, Form(description="every label over its own threshold")] = None,
        multi_score: Annotated[str | None, Form(description="with multi_label: collection (default for softmax "
                                                            "models: each label's cosine standardised over the "
                                                            "request's images; under 16 images softmax), negative, "
                                                            "sigmoid (SigLIP's default), softmax")] = None,
        threshold: Annotated[float | None, Form(description="with multi_label: one threshold for every label")]
        = None,
        frames: Annotated[int | None, Form(ge=1, description="videos: frames sampled per video (default 8)")]
        = None,
        accept_precision: Annotated[float | None, Form(
            gt=0, lt=1, description="a calibrated classifier id (zsclip calibrate): each result's accepted says "
                                    "whether its top-1 confidence reaches the threshold for this precision")] = None,
    ) -> ClassifyResponse:
        unknown = sorted(set((await request.form()).keys()) - CLASSIFY_FIELDS)
        if unknown:
            raise ClientError(422, f"unknown field {unknown[0][:40]!r}: the fields are "
                                   f"{', '.join(sorted(CLASSIFY_FIELDS))}")
        calibration = [u for u in reject_calibrate or () if u.filename or u.size]
        if len(images) + len(calibration) > limits.max_images:
            raise ClientError(413, f"{len(images) + len(calibration)} images in one request, over the limit of "
                                   f"{limits.max_images}: split them over several requests")
        if top_k is not None and top_k > limits.max_top_k:
            raise ClientError(422, f"top_k {top_k} is over the limit of {limits.max_top_k}")
        if frames is not None and frames > limits.max_video_frames:
            raise ClientError(422, f"frames {frames} is over the limit of {limits.max_video_frames}")
        tree = parse_tree(labels_tree, tree_format, limits)
        described = parse_descriptions(descriptions)
        options = HeadOptions(labels=None, classifier=None, templates=None, descriptions=None, labels_tree=tree,
                              tree_mode=tree_mode, beam=beam, reject=reject,
                              reject_calibrate=calibration or None, tpr=tpr, reject_score=reject_score,
                              reject_label=reject_label, top_k=top_k, scale=scale, multi_label=multi_label or None,
                              multi_score=multi_score, threshold=threshold, accept_precision=accept_precision)
        with current.queue.expecting() as announced:  # the batch forming now may wait for these images
            entry_task = asyncio.ensure_future(resolve_classifier(current, labels, classifier, templates, tree,
                                                                  described))
            try:
                sent = [(upload.filename, await upload.read()) for upload in images]
                decoded = await asyncio.gather(*(decode_upload(current, name, data, frames or limits.video_frames)
                                                 for name, data in sent))
                shown = [(upload.filename, await upload.read()) for upload in calibration]
                known = await asyncio.gather(*(decode_upload(current, name, data) for name, data in shown))
                entry = await entry_task
            finally:
                if not entry_task.done():
                    entry_task.cancel()
            head = await make_head(current, entry, options, known)
            content = await answer_images(current, metrics, entry, head,
                                          [shown_name(upload.filename) for upload in images], decoded, announced)
        return ClassifyResponse(**content)

    @app.post("/v1/explain", tags=["api"], dependencies=[Auth], responses=ERRORS,
              summary="Heatmaps: where the model saw each label (JSON grids, or one overlay PNG)")
    async def explain(
        request: Request,
        current: State,
        images: Annotated[list[UploadFile], File(description="one or more image files (PNG, JPEG, ...)")],
        labels: Annotated[list[str] | None, Form(description='"cat,dog" or one per line; synonyms: "dog|puppy"')]
        = None,
        classifier: Annotated[str | None, Form(description="a classifier id instead of labels")] = None,
        templates: Annotated[list[str] | None, Form(description="a set or templates, one per line")] = None,
        top_k: Annotated[int | None, Form(ge=1, description="explain this many top labels (default 1)")] = None,
        labels_tree: Annotated[str | None, Form(description="a label tree: its chosen path is explained")] = None,
        tree_format: Annotated[str | None, Form(description="yaml (default), json or text")] = None,
        tree_mode: Annotated[str | None, Form(description="flat (default), top-down or chils")] = None,
        beam: Annotated[int | None, Form(ge=1, le=1000, description="top-down: nodes kept per level")] = None,
        text: Annotated[list[str] | None, Form(description="explain these labels or any text instead")] = None,
        method: Annotated[str | None, Form(description="patch (default) or gradcam")] = None,
        upscale: Annotated[int | None, Form(description="enlarge the model's input for a finer map (1-8)")] = None,
        format: Annotated[str | None, Form(description="json (default: a grid per label) or png (one overlay)")]
        = None,
    ) -> Response:
        from .explain import EXPLAIN_FIELDS, explain_request

        unknown = sorted(set((await request.form()).keys()) - EXPLAIN_FIELDS)
        if unknown:
            raise ClientError(422, f"unknown field {unknown[0][:40]!r}: the fields are "
                                   f"{', '.join(sorted(EXPLAIN_FIELDS))}")
        tree = parse_tree(labels_tree, tree_format, limits)
        answer = await explain_request(current, images, labels=labels, classifier=classifier, templates=templates,
                                       top_k=top_k, tree=tree, tree_mode=tree_mode, beam=beam, texts=text,
                                       method=method, upscale=upscale, answer_format=format)
        if isinstance(answer, tuple):
            return Response(answer[0], media_type="image/png", headers=answer[1])
        return JSONResponse(answer)

    @app.post("/v1/search", tags=["api"], response_model=SearchResponse, dependencies=[Auth], responses=ERRORS,
              summary="The server's store's images nearest to a text or an image (zsclip serve --store)")
    async def search(
        current: State,
        text: Annotated[str | None, Form(description="what to find, e.g. a dog on a beach")] = None,
        image: Annotated[UploadFile | None, File(description="or an image to find similar ones")] = None,
        top_k: Annotated[int, Form(ge=1, description="results")] = 10,
    ) -> SearchResponse:
        from ..tasks.search import store_hits

        if current.store is None:
            raise ClientError(404, "this server has no store to search: start it with zsclip serve --store STORE")
        if (text is None or not text.strip()) == (image is None):
            raise ClientError(422, "send a text or an image to search with (one of them)")
        if top_k > limits.max_top_k:
            raise ClientError(422, f"top_k {top_k} is over the limit of {limits.max_top_k}")
        if image is not None:
            pixels = await decode_upload(current, image.filename, await image.read(), limits.video_frames)
            if isinstance(pixels, str):
                raise ClientError(400, f"the image cannot be decoded: {pixels}")
            query = pooled(await current.queue.submit(frames_of(pixels)), [pixels])[0]
        else:
            if len(text) > limits.max_label_chars:
                raise ClientError(422, f"the text is over {limits.max_label_chars} characters")
            query = await asyncio.to_thread(lambda: current.encoder.encode_text([text], precision="fp32")[0])
        hits = await asyncio.to_thread(lambda: store_hits(current.store, query, top_k))  # its index when it has one
        return SearchResponse(model=current.encoder.name,
                              results=[SearchHit(rank=h.rank, path=h.source, score=h.score, start=h.start, end=h.end)
                                       for h in hits])

    @app.post("/v1/classifiers", tags=["api"], response_model=ClassifierInfo, dependencies=[Auth],
              responses=ERRORS, summary="Build (or find) the classifier for labels + templates; returns its id")
    async def create_classifier(
        current: State,
        labels: Annotated[list[str], Form(description='"cat,dog" or one per line; synonyms: "dog|puppy"')],
        templates: Annotated[list[str] | None, Form(
            description=f"a set ({', '.join(TEMPLATE_SETS)}) or templates with one {{}}, one per line")] = None,
    ) -> ClassifierInfo:
        entry = await resolve_classifier(current, labels, None, templates)
        return ClassifierInfo(**entry.describe())

    @app.get("/v1/classifiers", tags=["api"], dependencies=[Auth], summary="Classifiers this server holds",
             response_model_exclude_none=True)
    async def list_classifiers(current: State) -> list[ClassifierInfo]:
        return [ClassifierInfo(**e.describe(with_classes=False)) for e in current.registry.entries()]

    @app.get("/v1/classifiers/{classifier_id}", tags=["api"], response_model=ClassifierInfo,
             dependencies=[Auth], responses={404: ERRORS[404]}, summary="One classifier, with its classes")
    async def get_classifier(current: State, classifier_id: str) -> ClassifierInfo:
        entry = current.registry.get(classifier_id)
        if entry is None:
            raise ClientError(404, f"no classifier {classifier_id[:40]!r}: GET /v1/classifiers lists them")
        return ClassifierInfo(**entry.describe())

    # --- the page and the docs, from package files (no CDN: works offline) ---------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_docs(app)

    # common classify requests skip the framework's per-request work (lean.py); the guard below wraps them too
    app.add_middleware(LeanClassify, server=app, metrics=metrics)
    # the key is checked here, from the headers, before any body is read (require_key documents it in /docs)
    app.add_middleware(RequestGuard, max_body_bytes=limits.max_request_bytes, timeout_s=limits.request_timeout_s,
                       metrics=metrics, api_key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization"])
    return app


# --- helpers ---------------------------------------------------------------------------------------
def _start(settings: ServeSettings, encoder: Encoder | None, metrics: ServeMetrics) -> ServerState:
    """Load what is missing, warm the model up, start the queue (runs in a thread at startup)."""
    loaded_here = encoder is None
    if loaded_here:
        from ..encoders import load_model

        encoder = load_model(settings.model, settings.pretrained, device=settings.model_device)
    # a model handed in already went through --runtime where "auto" may have kept eager PyTorch (`zsclip serve`
    # does so after setting --threads, so the runtime takes the same number): only a named runtime wraps it here
    if getattr(encoder, "runtime", "torch") == "torch" and (
            settings.runtime in ("onnxruntime", "openvino") or (settings.runtime == "auto" and loaded_here)):
        from ..encoders.pick import with_runtime

        encoder = with_runtime(encoder, settings.runtime, settings.precision, settings.calibration)
    registry = ClassifierRegistry(encoder, settings.precision, max_entries=settings.max_classifiers,
                                  max_pending=settings.max_pending_builds, on_build=metrics.builds.inc)
    for path in settings.classifier_files:
        registry.add_file(path)
    transform = encoder.image_transform()
    # warm-up (the first pass is slow) on what the model's own preprocessing makes: its input size, whatever
    # the model reports (or fails to report) as encoder.image_size
    side = encoder.image_size or 224
    example = transform(Image.new("RGB", (side, side)))
    model = traced_encoder(encoder, settings.precision, example)  # the image forward without the GIL, if equal
    model.encode_images(example.unsqueeze(0), settings.precision)

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        return model.encode_images(pixels, settings.precision)

    queue = BatchQueue(forward, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                       queue_limit=settings.queue_limit, on_batch=metrics.observe_batch,
                       on_depth=metrics.queue_depth.set).start()
    decoder = ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="zsclip-decode")
    metrics.classifiers.set(len(registry))
    store = None
    if settings.store is not None:
        from ..store import open_store

        store = open_store(settings.store)
        store.check_encoder(encoder)
    return ServerState(settings, encoder, queue, registry, decoder, transform, store)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON {"error": one line, "status": code}; the server keeps serving (unexpected
    exceptions become a JSON 500 in guard.RequestGuard, which keeps the connection usable)."""

    def body(status: int, message: str, details=None, headers=None) -> JSONResponse:
        content = {"error": message, "status": status}
        if details is not None:
            content["details"] = details
        return JSONResponse(content, status_code=status, headers=headers)

    @app.exception_handler(ClientError)
    async def client_error(request: Request, error: ClientError) -> JSONResponse:
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        if error.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return body(error.status, error.message, error.details, headers)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull) -> JSONResponse:
        return body(429, f"server busy: {error}; retry shortly", headers={"Retry-After": "1"})

    @app.exception_handler(QueueClosed)
    async def queue_closed(request: Request, error: QueueClosed) -> JSONResponse:
        return body(503, str(error), headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return body(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in error.errors()]
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return body(422, "bad parameters: " + "; ".join(problems), details)


def _install_docs(app: FastAPI) -> None:
    """/docs with Swagger UI from the swagger-ui-bundle package when installed (offline), else from a CDN."""
    try:
        import swagger_ui_bundle

        app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
        assets = {"swagger_js_url": "/docs-assets/swagger-ui-bundle.js",
                  "swagger_css_url": "/docs-assets/swagger-ui.css",
                  "swagger_favicon_url": "/docs-assets/favicon-32x32.png"}
    except ImportError:
        log.warning("swagger-ui-bundle is not installed: /docs loads Swagger UI from a CDN (needs internet)")
        assets = {}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="zsclip API", **assets)


__all__ = ["create_app", "ServerState", "STATIC_DIR"]
