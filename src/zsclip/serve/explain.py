"""``POST /v1/explain``: heatmaps of where the model saw each label, for uploaded images.

The request is classify's (images, labels or a classifier id, templates, top_k, a label tree), under the
same limits; ``text`` explains given labels or any text instead of the top ones. The work is the explain
task's (zsclip.tasks.explain.explain_decoded) on a worker thread, one request at a time (a gradient batch is
the most memory a request may hold). Answers: JSON with a grid of raw values per label (at most
``GRID_CELLS`` a side, for a page or a program to draw), or ``format=png``: the overlay PNG of one image and
one label.
"""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import torch.nn.functional as F

from ..data.images import decode_bytes
from ..errors import ImageReadError, InputError
from ..job.heads import HeadOptions
from .inputs import ClientError, parse_templates
from .work import ServerState, make_head, resolve_classifier, shown_name

EXPLAIN_FIELDS = frozenset({"images", "labels", "classifier", "templates", "top_k", "labels_tree", "tree_format",
                            "tree_mode", "beam", "text", "method", "upscale", "format"})
#: the long side of a JSON grid, in cells (the full-size values are what `zsclip explain` writes to .npy)
GRID_CELLS = 64
_ONE_AT_A_TIME = threading.Lock()


def grid_of(heat: np.ndarray, cells: int = GRID_CELLS) -> list[list[float]]:
    """The map averaged down to at most ``cells`` on its long side (area mean), rounded for JSON."""
    import torch

    height, width = heat.shape
    scale = min(1.0, cells / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(heat))[None, None], size)[0, 0]
    return [[round(float(v), 5) for v in row] for row in small.tolist()]


async def explain_request(current: ServerState, uploads: list, *, labels, classifier, templates, top_k, tree,
                          tree_mode, beam, texts, method, upscale, answer_format) -> dict | tuple[bytes, dict]:
    """The JSON body, or (PNG bytes, headers) for ``format=png``."""
    from ..heatmaps import METHODS
    from ..tasks.explain import explain_decoded, text_targets

    limits = current.settings.limits
    if answer_format not in (None, "json", "png"):
        raise ClientError(422, f"format {answer_format[:20]!r}: use json (default) or png")
    if method is not None and method not in METHODS:
        raise ClientError(422, f"method {method[:20]!r}: use {' or '.join(METHODS)}")
    if upscale is not None and not 1 <= upscale <= 8:
        raise ClientError(422, f"upscale {upscale}: use 1 to 8")
    if len(uploads) > limits.max_images:
        raise ClientError(413, f"{len(uploads)} images in one request, over the limit of {limits.max_images}: split "
                               "them over several requests")
    texts = [text for text in texts or () if text.strip()]
    if len(texts) > limits.max_top_k or (top_k or 1) > limits.max_top_k:
        raise ClientError(422, f"over the limit of {limits.max_top_k} labels explained per image")
    if any(len(text) > limits.max_label_chars for text in texts):
        raise ClientError(422, f"a text is over {limits.max_label_chars} characters")
    entry = await resolve_classifier(current, labels, classifier, templates, tree)
    # a text that is not a class is encoded with the request's templates (the server's default for an id)
    template_spec = parse_templates(templates, current.settings.default_templates, limits)
    options = HeadOptions(labels=None, classifier=None, templates=None, descriptions=None, labels_tree=tree,
                          tree_mode=tree_mode, beam=beam, top_k=None if entry.is_tree else max(top_k or 1, 1))
    head = await make_head(current, entry, options, [])
    sent = [(shown_name(upload.filename), await upload.read()) for upload in uploads]
    if answer_format == "png" and (len(sent) != 1 or len(texts) > 1 or (top_k or 1) > 1 or entry.is_tree):
        raise ClientError(422, "format png answers one overlay: send one image and one label (text, or top_k 1 of "
                               "flat labels); use format json for more")

    def work():
        decoded = []
        for name, data in sent:
            try:
                decoded.append((name or "", decode_bytes(data, None, limits.max_pixels, draft=False), None))
            except ImageReadError as error:
                decoded.append((name or "", None, str(error)))
        with _ONE_AT_A_TIME:
            fixed = text_targets(head, current.encoder, texts, template_spec) if texts else None
            return explain_decoded(head, current.encoder, decoded, top_k=top_k or 1, fixed=fixed, method=method,
                                   upscale=upscale, precision=current.settings.precision)

    try:
        explained = await asyncio.to_thread(work)
    except InputError as error:
        raise ClientError(422, str(error)) from None
    if answer_format == "png":
        return _png(explained[0])
    from ..heatmaps import DEFAULT_METHOD

    results = []
    for index, item in enumerate(explained):
        row = {"index": index, "filename": sent[index][0], "error": item.error}
        if item.error is None:
            width, height = item.image.size
            row.update(width=width, height=height,
                       predictions=[{"label": label, "score": score}
                                    for label, score in zip(item.prediction.labels, item.prediction.scores,
                                                            strict=True)],
                       heatmaps=[{"label": label, "score": score, "min": float(heat.min()), "max": float(heat.max()),
                                  "grid": grid_of(heat)}
                                 for label, score, heat in zip(item.labels, item.scores, item.heatmaps, strict=True)])
        results.append(row)
    if all(row["error"] for row in results):
        raise ClientError(400, "no image could be decoded: " + "; ".join(row["error"] for row in results)[:300],
                          results)
    return {"model": current.encoder.name, "classifier": entry.id, "method": method or DEFAULT_METHOD,
            "results": results}


def _png(item) -> tuple[bytes, dict]:
    from ..heatmaps.overlay import overlay

    if item.error is not None:
        raise ClientError(400, f"the image cannot be decoded: {item.error}")
    if not item.heatmaps:
        raise ClientError(422, "nothing to explain for this image (its answer has no label of the classifier)")
    buffer = io.BytesIO()
    overlay(item.image, item.heatmaps[0]).save(buffer, format="PNG")
    score = item.scores[0]
    headers = {"X-Zsclip-Label": item.labels[0].encode("ascii", "backslashreplace").decode()}
    if score is not None:
        headers["X-Zsclip-Score"] = f"{score:.6g}"
    return buffer.getvalue(), headers


__all__ = ["explain_request", "EXPLAIN_FIELDS", "GRID_CELLS", "grid_of"]
