"""Prometheus metrics of one server: requests, latency, batch sizes, queue depth, images, builds.

Each app gets its own ``CollectorRegistry`` (not the global one), so several apps in one process
(tests, a benchmark running batching on and off) never share or clash over counters. Route labels
are route templates ("/v1/classifiers/{classifier_id}"), never raw paths, so a client cannot
grow the number of series.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: seconds; from a cached small-model answer (~ms) to a cold classifier build on a big label set
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """The instruments the app and the batching queue update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("zsclip_requests", "HTTP requests by route, method and status code",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("zsclip_request_latency_seconds", "Time from request start to response end",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("zsclip_batch_size", "Images per forward pass of the image tower",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("zsclip_batch_seconds", "Duration of one image-tower forward pass",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("zsclip_queue_depth", "Images waiting for the model", registry=self.registry)
        self.images = Counter("zsclip_images", "Images received, by outcome (ok, error)", ("outcome",),
                              registry=self.registry)
        self.builds = Counter("zsclip_classifier_builds", "Classifiers built for requests (cache misses)",
                              registry=self.registry)
        self.classifiers = Gauge("zsclip_classifiers", "Classifiers held in memory", registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text exposition."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["ServeMetrics", "LATENCY_BUCKETS", "BATCH_BUCKETS"]
