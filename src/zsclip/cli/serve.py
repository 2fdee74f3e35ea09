"""``zsclip serve``: the click command that loads a model and runs the HTTP service on uvicorn.

Only click and the standard library load at import, so ``zsclip --help`` works without the serve
extra; FastAPI and uvicorn are imported when the command runs, and their absence is one line.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import ipaddress
import os
import socket

import click

from ..encoders.resolve import DEFAULT_MODEL, DEFAULT_PRETRAINED
from ..precision import PRECISIONS
from ..prompts import TEMPLATE_SETS
from ..serve.settings import DEFAULT_MAX_PIXELS, DEFAULT_MAX_REQUEST_BYTES, Limits
from .common import calibration_images_for, runtime_option

#: import name -> distribution, for the one-line "install the extra" message
SERVE_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart",
                 "prometheus_client": "prometheus-client"}

EPILOG = """\b
Examples:
  zsclip serve --model demo                      # http://127.0.0.1:8000/  (page), /docs (API)
  curl -F images=@cat.jpg -F labels="cat,dog" http://127.0.0.1:8000/v1/classify
  curl -F labels="cat,dog|puppy" -F templates=photo http://127.0.0.1:8000/v1/classifiers   # -> an id
  curl -F images=@a.jpg -F images=@b.jpg -F classifier=ID -F top_k=3 http://127.0.0.1:8000/v1/classify
  zsclip build --labels-file labels.txt -o pets.zsc && zsclip serve --classifier pets.zsc   # id "pets"

\b
Behind a reverse proxy (TLS, auth, rate limits at the edge; the server stays on 127.0.0.1):
  zsclip serve --model ViT-B-32 --pretrained laion2b_s34b_b79k --api-key "$KEY" --port 8000
  # nginx:
  #   location /zsclip/ {
  #     proxy_pass http://127.0.0.1:8000/;
  #     client_max_body_size 32m;          # = --max-request-mb
  #     proxy_read_timeout 60s;            # > --request-timeout
  #     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  #     proxy_set_header X-Forwarded-Proto $scheme;
  #   }
  # and add --root-path /zsclip so /docs and the page link correctly under the prefix.

\b
Several GPUs or worker processes: one server per device, each with its own model and batching
queue (batches form per device), on its own port, behind one load balancer:
  CUDA_VISIBLE_DEVICES=0 zsclip serve --model ViT-B-32 --device cuda --port 8001 &
  CUDA_VISIBLE_DEVICES=1 zsclip serve --model ViT-B-32 --device cuda --port 8002 &
  # nginx: upstream zsclip { least_conn; server 127.0.0.1:8001; server 127.0.0.1:8002; }
  # CPU only: start N processes the same way with --device cpu and --threads cores/N.
  # Prometheus scrapes each port's /metrics; readiness per process at /readyz.

\b
Security: binds 127.0.0.1 unless --host says otherwise; with --api-key every route except
/healthz, /readyz, the page, its static files and /docs needs header X-API-Key (or Authorization:
Bearer), checked from the headers before any body is read. The server reads only uploaded bytes: it
never opens a path or fetches a URL a client names. Slow or many clients: --header-timeout,
--request-timeout (body included) and --max-connections bound what each can hold.

\b
Exit status 2 when the server cannot start (busy port, bad option, model or classifier file), with
one line on stderr; the port is bound before the model loads, so a busy port is reported at once.
"""


#: Exit status of ``zsclip serve`` when it cannot start (busy port, bad option, model or classifier file).
START_FAILURE = 2


class ServeError(click.ClickException):
    """One line on stderr, no traceback: ``zsclip: error: ...`` (exit status ``START_FAILURE``)."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"zsclip: error: {self.message}", err=True)


def missing_serve_modules() -> list[str]:
    """Distributions of the serve extra that are not installed."""
    return [dist for module, dist in SERVE_MODULES.items() if importlib.util.find_spec(module) is None]


@click.command("serve", epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                         "max_content_width": 100})
@click.option("--model", "-m", default=None,
              help=f"Model: an open_clip name (default {DEFAULT_MODEL} with {DEFAULT_PRETRAINED}), hf-hub:ORG/REPO, "
                   "local-dir:PATH, transformers:ID_OR_PATH, or demo (the bundled offline shapes model).")
@click.option("--pretrained", default=None, help="Weights for an open_clip name: a tag or a checkpoint file.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Image and text towers' precision: auto = bf16 on GPUs that have it, fp32 on CPUs, as in every "
                   "command (GET /v1/info reports what it resolved to).")
@runtime_option
@click.option("--store", "store", default=None,
              help="An embedding store of this model (`zsclip embed`): POST /v1/search finds its images nearest to "
                   "a text or an uploaded image. Clients never name paths: this is the only store served.")
@click.option("--classifier", "classifiers", multiple=True, type=click.Path(dir_okay=False),
              help="A classifier file (`zsclip build`) to serve, under its file name's stem as id. Repeatable.")
@click.option("--templates", "-t", default="openai-imagenet", show_default=True,
              help=f"Templates for requests that name none: {', '.join(TEMPLATE_SETS)}, or a file with one "
                   "template per line (read once, at start).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 0.0.0.0 exposes the server to the network: use --api-key, or a proxy.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="Images per forward pass at most; 1 turns dynamic batching off.")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(0),
              help="How long a waiting image waits for images already on their way (requests being received "
                   "or decoded) to join its batch; with none on the way it runs at once.")
@click.option("--queue-limit", default=256, show_default=True, type=click.IntRange(1),
              help="Images waiting for the model at most; beyond it requests get 429 (with Retry-After).")
@click.option("--decode-workers", default=min(4, os.cpu_count() or 1), show_default=True, type=click.IntRange(1),
              help="Threads decoding uploads.")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="Threads of the model's forward pass on a CPU (default: all cores but one, at least one: the "
                   "other core parses, decodes and answers requests meanwhile). Not with --device cuda or mps.")
@click.option("--max-request-mb", default=DEFAULT_MAX_REQUEST_BYTES / 2**20, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Request body limit (413 beyond).")
@click.option("--max-images", default=Limits.max_images, show_default=True, type=click.IntRange(1),
              help="Images per request at most (413 beyond).")
@click.option("--max-pixels", default=DEFAULT_MAX_PIXELS, show_default=True, type=click.IntRange(1),
              help="Pixels per image at most (that image gets an error; decompression bombs stop here).")
@click.option("--max-labels", default=Limits.max_labels, show_default=True, type=click.IntRange(2),
              help="Labels per request at most (422 beyond); serve bigger label sets with --classifier.")
@click.option("--max-classifiers", default=64, show_default=True, type=click.IntRange(1),
              help="Label sets built on request kept in memory (least recently used dropped first).")
@click.option("--request-timeout", default=Limits.request_timeout_s, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Seconds per request, upload included (503 beyond).")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a client gets to send a request's headers (from connecting, or from the previous "
                   "response); past it the connection is closed (408).")
@click.option("--max-connections", default=256, show_default=True, type=click.IntRange(1),
              help="Open connections (and requests in flight) at most; beyond it requests get 503.")
@click.option("--api-key", envvar="ZSCLIP_API_KEY", default=None,
              help="Require this key (header X-API-Key or Authorization: Bearer). Also $ZSCLIP_API_KEY, which "
                   "keeps it out of the process list.")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Allow browser pages from this origin to call the API (e.g. https://app.example.com). "
                   "Repeatable. CORS is off by default.")
@click.option("--root-path", default="", help="URL prefix when a proxy serves the app under a sub-path.")
@click.option("--label-studio-url", default=None,
              help="Be a Label Studio ML backend (routes /health, /setup, /predict, /webhook; connect this server "
                   "as the project's model): the Label Studio to fetch task images from, and only from.")
@click.option("--label-studio-token", envvar="ZSCLIP_LABEL_STUDIO_TOKEN", default=None,
              help="With --label-studio-url: its API token (Account & Settings). Also $ZSCLIP_LABEL_STUDIO_TOKEN.")
@click.option("--graceful-timeout", default=30.0, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM / Ctrl-C: seconds in-flight requests get to finish.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve(model, pretrained, device, precision, store, classifiers, templates, host, port, max_batch_size, max_wait_ms,
          queue_limit, decode_workers, threads, max_request_mb, max_images, max_pixels, max_labels, max_classifiers,
          request_timeout, header_timeout, max_connections, api_key, cors_origins, root_path, label_studio_url,
          label_studio_token, graceful_timeout, log_level) -> None:
    """Serve zero-shot classification over HTTP: a web page, a JSON API, dynamic batching.

    Concurrent requests' images are gathered into one forward pass (--max-batch-size, --max-wait-ms);
    each label set is encoded once and cached; bad input gets a JSON 4xx and the server keeps going.
    Routes: POST /v1/classify, POST|GET /v1/classifiers, POST /v1/search (with --store), GET /v1/info,
    /healthz, /readyz, /metrics,
    / (the page), /docs (OpenAPI); with --label-studio-url, Label Studio's ML-backend routes.

    \b
    As a Label Studio ML backend (the project's Choices / Taxonomy are the classes):
      zsclip serve --model ViT-B-32 --label-studio-url http://localhost:8080 --label-studio-token "$LS_TOKEN"
    """
    missing = missing_serve_modules()
    if missing:
        raise ServeError(f'zsclip serve needs the serve extra: pip install "zsclip[serve]" '
                         f"(missing: {', '.join(missing)})")
    from ..errors import ZsclipError
    from ..prompts import resolve_templates
    from ..serve.settings import ServeSettings

    if threads is not None and device.split(":")[0] in ("cuda", "mps"):
        raise ServeError(f"--threads sets the CPU forward's threads: it does not apply with --device {device}")
    if model is None:
        model = DEFAULT_MODEL
        pretrained = pretrained or DEFAULT_PRETRAINED
    try:
        default_templates = templates if templates in TEMPLATE_SETS else \
            tuple(t.text for t in resolve_templates(templates))
        limits = Limits(max_request_bytes=int(max_request_mb * 2**20), max_images=max_images, max_pixels=max_pixels,
                        max_labels=max_labels, request_timeout_s=request_timeout)
        runtime = click.get_current_context().meta.get("zsclip_runtime", "torch")
        settings = ServeSettings(
            model=model, pretrained=pretrained, device=device, precision=precision,
            classifier_files=tuple(classifiers), store=store, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
            queue_limit=queue_limit, decode_workers=decode_workers, max_classifiers=max_classifiers,
            default_templates=default_templates, api_key=api_key, cors_origins=tuple(cors_origins), limits=limits,
            label_studio_url=label_studio_url, label_studio_token=label_studio_token,
            runtime=runtime, calibration=calibration_images_for(runtime, precision))
    except (ValueError, ZsclipError) as error:
        raise ServeError(str(error)) from None
    listener = bind_listener(host, port)  # a busy port is one line now, not after the model loaded
    try:
        encoder = _load(settings)
        _forward_threads(encoder, threads)
        encoder = _on_runtime(encoder, settings)  # after the threads are set: the runtime takes the same number
        _run(settings, encoder, listener, root_path, graceful_timeout, log_level, header_timeout, max_connections)
    finally:
        listener.close()


def _forward_threads(encoder, threads: int | None) -> None:
    """On a CPU the forward pass shares the cores with parsing, decoding and answering: given all of them,
    its threads spin waiting for each other while requests wait for a core (measured on 2 cores, demo model:
    1 forward thread used about a fifth less server CPU per request than 2, at 1 and at 16 clients)."""
    import torch

    if encoder.device.type == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) - 1))


def _load(settings):
    """The model and a check of every classifier file and the store, before the server starts (one-line
    errors). The files are read before the model loads: a missing or bad one is its line at once, not
    after a download; that they belong to the model is checked once it is loaded."""
    from ..errors import ZsclipError
    from ..heads import load_head_file
    from ..precision import resolve_precision

    try:
        store = None
        if settings.store is not None:
            from ..store import open_store

            store = open_store(settings.store)
        loaded = []
        for path in settings.classifier_files:
            from ..serve.classifiers import check_servable

            head = load_head_file(path)  # flat, adapted or tree classifier files
            check_servable(head, path)
            loaded.append(getattr(head, "node_classifier", head))
        resolve_precision(settings.precision, "cpu" if settings.device == "auto" else settings.device)
        from ..encoders import load_model

        click.echo(f"zsclip serve: loading {settings.model} ...", err=True)
        encoder = load_model(settings.model, settings.pretrained, device=settings.model_device)
        for classifier in loaded:
            classifier.check_encoder(encoder)
        if store is not None:
            store.check_encoder(encoder)
    except ZsclipError as error:
        raise ServeError(str(error)) from None
    return encoder


def _on_runtime(encoder, settings):
    """The loaded model with its towers on ``--runtime`` (exported, converted and gated now: one-line errors)."""
    if settings.runtime == "torch":
        return encoder
    from ..encoders.pick import with_runtime
    from ..errors import ZsclipError

    try:
        return with_runtime(encoder, settings.runtime, settings.precision, settings.calibration)
    except ZsclipError as error:
        raise ServeError(str(error)) from None


def bind_listener(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything slow happens; uvicorn serves on it (so no
    other process can take the port in between). A busy port or a bad address is a ServeError."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError) as error:
        raise ServeError(f"cannot listen on {host}: {getattr(error, 'strerror', None) or error}") from None
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts reuse the port
        listener.bind(address)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is already in use (another server?): stop it or choose "
                             "another --port") from None
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listener.set_inheritable(True)
    return listener


def _run(settings, encoder, listener: socket.socket, root_path: str, graceful_timeout: float, log_level: str,
         header_timeout: float, max_connections: int) -> None:
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from ..serve.app import create_app
    from ..serve.connections import header_timeout_protocol

    host, port = listener.getsockname()[:2]

    if not _is_loopback(host) and settings.api_key is None:
        click.echo(f"zsclip serve: warning: listening on {host} without --api-key: anyone who can reach this "
                   "port can use the model", err=True)
    app = create_app(settings, encoder=encoder)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"zsclip serve: {settings.model} on {encoder.device} at http://{shown}:{port}{root_path}/ "
               f"(API docs: /docs)", err=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, root_path=root_path,
                            timeout_graceful_shutdown=graceful_timeout or None, server_header=False,
                            http=header_timeout_protocol(header_timeout, H11Protocol), ws="none",
                            limit_concurrency=max_connections)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C after a graceful shutdown ends normally
        server.run(sockets=[listener])
    if not server.started:  # the app's startup failed after the checks in _load (uvicorn logged why)
        raise ServeError("the server did not start: see the log above")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["serve", "missing_serve_modules", "ServeError"]
