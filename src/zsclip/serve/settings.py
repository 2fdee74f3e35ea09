"""Everything a running service is configured with, resolved once by the command (or a test).

Two frozen dataclasses: ``Limits`` bound what one client can make the server do (bytes, images,
pixels, labels, templates, time), ``ServeSettings`` add the model, the batching queue and access
control. The app factory reads nothing else, so a test builds exactly the server a user runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Body limit: a request carries at most this many bytes (all images and fields together).
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: A decoded image holds 3 bytes per pixel: 25 megapixels = 75 MB at most, per decode thread.
DEFAULT_MAX_PIXELS = 25_000_000


@dataclass(frozen=True)
class Limits:
    """Per-request bounds. Anything over them is refused with a JSON 4xx before work is done."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_images: int = 32
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_labels: int = 1000
    max_label_chars: int = 200
    max_templates: int = 100
    max_template_chars: int = 300
    max_top_k: int = 100
    request_timeout_s: float = 30.0
    #: an uploaded video: frames sampled from it (and the most a request may ask for), and its longest duration
    video_frames: int = 8
    max_video_frames: int = 32
    max_video_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"limit {name} must be positive, got {value!r}")

    def public(self) -> dict:
        """The limits as clients see them (GET /v1/info), so a page can check before uploading."""
        return dict(vars(self))


@dataclass(frozen=True)
class ServeSettings:
    """How one server process runs: its model, batching, classifier cache, limits and access.

    Attributes:
        model, pretrained, device, precision: as ``zsclip.load_model`` / ``encode_images`` take them.
        runtime: what runs the towers, as ``--runtime`` everywhere (RunOptions.runtime): torch, onnxruntime,
            openvino or auto.
        classifier_files: classifier files (``zsclip build`` output) served from start, by file stem.
        store: an embedding store (the operator's, opened at start) that ``POST /v1/search`` searches.
        max_batch_size: images in one forward pass at most.
        max_wait_ms: how long the first image of a batch waits for images on their way (announced requests)
            to join it; with none announced it runs at once.
        queue_limit: images waiting for the model at most; beyond it requests get 429.
        decode_workers: threads that decode and preprocess uploads (off the event loop).
        max_classifiers: label sets built on request and kept in memory (least recently used go first).
        max_pending_builds: label sets being built at once at most; beyond it requests get 429.
        default_templates: template set name (or the templates themselves) used when a request names none.
        api_key: when set, /v1/* and /metrics need it (header X-API-Key or Authorization: Bearer).
        cors_origins: origins allowed to call the API from a browser; none (CORS off) by default.
        label_studio_url, label_studio_token: a Label Studio this server is an ML backend for (serve/labelstudio.py):
            the only host it fetches task images from, with that token.
    """

    model: str = "demo"
    pretrained: str | None = None
    device: str = "cpu"
    precision: str = "auto"
    classifier_files: tuple[str, ...] = ()
    store: str | None = None
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    queue_limit: int = 256
    decode_workers: int = 4
    max_classifiers: int = 64
    max_pending_builds: int = 4
    default_templates: str | tuple[str, ...] = "openai-imagenet"
    runtime: str = "torch"
    #: image files that calibrate the static int8 image tower (``--calibration-images``; RunOptions.calibration)
    calibration: tuple[str, ...] = ()
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    label_studio_url: str | None = None
    label_studio_token: str | None = None

    @property
    def model_device(self) -> str:
        """Where the model loads: ``device``, except that a graph runtime (CPU only) makes "auto" the CPU."""
        return "cpu" if self.runtime in ("onnxruntime", "openvino") and self.device == "auto" else self.device

    def __post_init__(self) -> None:
        from ..runtimes import check_calibration, check_runtime

        check_runtime(self.runtime, self.device, self.precision)  # an InputError: one line, as the commands give
        check_calibration(self.runtime, self.precision, bool(self.calibration))
        positive = ("max_batch_size", "queue_limit", "decode_workers", "max_classifiers", "max_pending_builds")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if self.queue_limit < self.limits.max_images:
            raise ValueError(f"queue_limit ({self.queue_limit}) is below max_images ({self.limits.max_images}): "
                             "a full request could never be queued")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty: give a real secret or none")
        if (self.label_studio_url is None) != (self.label_studio_token is None):
            raise ValueError("--label-studio-url and --label-studio-token go together: give both")
        if self.label_studio_url is not None and not self.label_studio_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"--label-studio-url {self.label_studio_url[:60]!r}: give Label Studio's http(s) address")


__all__ = ["Limits", "ServeSettings", "DEFAULT_MAX_REQUEST_BYTES", "DEFAULT_MAX_PIXELS"]
