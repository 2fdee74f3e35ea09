"""Explanations on Ray: chunks of image paths to actors that each hold the model and the job's head.

A heatmap needs the image's own pixels and, for gradcam, a backward pass through the image tower, so the
whole image-level step (decode at full size, answer, explain: ``zsclip.heatmaps.explained``) runs in the actor;
the driver only plans the job (head built once, shipped to every actor through the object store) and writes
the files in input order. The actors are placed as the encoding actors are (``pool_size`` / ``actor_options``:
a GPU each, or shares of the CPU nodes), restarted when they die with their calls retried, and checked
against the driver's model fingerprint before a result is used. At most ``IN_FLIGHT_PER_ACTOR`` chunks wait
per actor, so the driver holds a bounded number of decoded images however large the folder is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..options import RunOptions
from .actors import dispatch, other_weights
from .pipeline import ModelSpec, _actor_errors_named, actor_options, actor_threads, pool_size
from .session import RaySettings, connect, watched


class ExplainActor:
    """One model and one head: a chunk of sources in, their ``Explanation``s (with their images) out."""

    def __init__(self, spec: ModelSpec, head, run: RunOptions) -> None:
        import torch

        from ..encoders.resolve import resolve_model

        if spec.device == "cpu":
            torch.set_num_threads(actor_threads(spec.actors_per_node))
        self.spec, self.head, self.run = spec, head, run
        self.encoder = resolve_model(spec.model, spec.pretrained, RunOptions(device=spec.device,
                                                                             precision=spec.precision,
                                                                             runtime=spec.runtime))
        if spec.fingerprint is not None and self.encoder.fingerprint != spec.fingerprint:
            raise other_weights(spec.model, self.encoder.fingerprint, spec.fingerprint)

    def ready(self) -> str:
        return self.encoder.fingerprint

    def explain(self, chunk: Sequence, settings: dict) -> list:
        from ..heatmaps.explained import decode_chunk, explain_decoded

        return explain_decoded(self.head, self.encoder, decode_chunk(chunk, self.run), precision=self.spec.precision,
                               **settings)


def ray_explanations(chunks: Sequence[Sequence], head, encoder, run: RunOptions, settings: RaySettings,
                     **explain_settings: Any) -> Iterator[list]:
    """Each chunk's explanations, in order, computed by a pool of ``ExplainActor``s on the cluster ``settings``
    names. ``explain_settings``: top_k, fixed, method, upscale (as ``explain_decoded`` takes them)."""
    import contextlib

    ray = connect(settings)
    gpus = encoder.device.type == "cuda"
    size, per_node = pool_size(ray, settings, gpus)
    size = max(1, min(size, len(chunks)))
    spec = ModelSpec.of(encoder, run, per_node)
    remote = ray.remote(ExplainActor).options(**actor_options(gpus))
    shared = ray.put(head)
    actors = [remote.remote(spec, shared, run) for _ in range(size)]
    try:
        calls = (lambda actor, chunk=chunk: actor.explain.remote(list(chunk), explain_settings) for chunk in chunks)
        yield from _actor_errors_named(watched(dispatch(ray, actors, calls), settings.stall_timeout_s), ray)
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor)


__all__ = ["ExplainActor", "ray_explanations"]
