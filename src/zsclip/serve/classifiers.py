"""The server's classifiers: files loaded at start, and label sets built once on request, kept in memory.

A classifier's id is a digest of (model fingerprint, classes, templates, precision), so the same
labels and templates always name the same classifier: ``POST /v1/classifiers`` is idempotent and
a classify request with labels reuses the classifier an earlier request built. Builds run on
their own thread (the text tower), so image batches keep flowing while a new label set is encoded;
concurrent requests for the same label set share one build, and at most ``max_pending`` different
builds wait at once (beyond that: 429). Request-built classifiers are kept least-recently-used
first out, up to ``max_entries``; files given at start are never evicted. Built classifiers are not
written to the disk cache: clients must not be able to fill the server's disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..classifier import ZeroShotClassifier
from ..encoders.base import Encoder
from ..errors import ZsclipError
from ..precision import resolve_precision, text_precision
from .inputs import ClientError, refused


def check_servable(classifier, path) -> None:
    """Every registered head file is servable: flat, adapted, tree and multi-label (with the
    thresholds calibrated into it). Kept as the one place a future head the service cannot answer
    with would be refused, in one line."""
    return None


@dataclass
class Entry:
    """One servable classifier and where it came from ("file" or "request")."""

    id: str
    classifier: ZeroShotClassifier
    source: str
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def flat(self) -> ZeroShotClassifier:
        """The flat classifier (a tree's node classifier, a multi-label file's label weights) for
        checks and descriptions."""
        return getattr(self.classifier, "node_classifier", None) or getattr(self.classifier, "positive", None) \
            or self.classifier

    @property
    def is_tree(self) -> bool:
        return hasattr(self.classifier, "node_classifier")

    @property
    def scoring(self) -> str:
        """How its scores are made: softmax or sigmoid over the classes, or a multi-label file's own score
        (each label on its own: ``multi-label negative``, ``multi-label sigmoid``, ...)."""
        if hasattr(self.classifier, "positive"):  # a MultiLabelClassifier: its score, not its label weights'
            return f"multi-label {self.classifier.score}"
        return "sigmoid" if self.flat.is_sigmoid else "softmax"

    def describe(self, with_classes: bool = True) -> dict:
        flat = self.flat
        templates = flat.provenance.get("templates") or []
        info = {"id": self.id, "source": self.source, "num_classes": len(flat.classnames),
                "num_templates": len(templates), "model": flat.provenance.get("model"),
                "scoring": self.scoring, "created": self.created,
                "kind": "tree" if self.is_tree else type(self.classifier).__name__}
        if with_classes:
            info["classes"] = list(flat.classnames)
            info["templates"] = list(templates)
        return info


class ClassifierRegistry:
    """Classifiers by id: pinned files plus an LRU of request-built label sets."""

    def __init__(self, encoder: Encoder, precision: str, *, max_entries: int = 64, max_pending: int = 4,
                 on_build=None) -> None:
        self.encoder = encoder
        self.precision = text_precision(resolve_precision(precision, encoder.device))
        self.max_entries = max_entries
        self.max_pending = max_pending
        self._on_build = on_build or (lambda: None)
        self._files: dict[str, Entry] = {}
        self._built: OrderedDict[str, Entry] = OrderedDict()
        self._pending: dict[str, asyncio.Future] = {}
        self._lock = threading.Lock()
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zsclip-build")

    def close(self) -> None:
        self._builder.shutdown(wait=False, cancel_futures=True)

    def __len__(self) -> int:
        return len(self._files) + len(self._built)

    # --- files ----------------------------------------------------------------------------
    def add_file(self, path: str | Path) -> Entry:
        """Serve a classifier file under its file stem (ZsclipError if unreadable or for another model)."""
        from ..heads import load_head_file

        path = Path(path)
        classifier = load_head_file(path)  # flat, adapted (linear, Tip-Adapter) or a tree classifier
        check_servable(classifier, path)
        flat = getattr(classifier, "node_classifier", classifier)
        flat.check_encoder(self.encoder)
        flat.encoder = self.encoder
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.") or "classifier"
        name, n = base, 1
        while name in self._files:
            n += 1
            name = f"{base}-{n}"
        entry = Entry(name, classifier, "file")
        self._files[name] = entry
        return entry

    # --- lookup ---------------------------------------------------------------------------
    def get(self, classifier_id: str) -> Entry | None:
        with self._lock:
            if classifier_id in self._files:
                return self._files[classifier_id]
            entry = self._built.get(classifier_id)
            if entry is not None:
                self._built.move_to_end(classifier_id)
            return entry

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._files.values()) + list(self._built.values())

    def key(self, classes: list[list[str]] | None, templates: str | list[str], tree=None,
            descriptions: dict | None = None) -> str:
        blob = json.dumps([self.encoder.fingerprint, classes, templates, self.precision,
                           tree.to_data() if tree is not None else None, descriptions], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # --- building -------------------------------------------------------------------------
    async def get_or_build(self, classes: list[list[str]] | None, templates: str | list[str], tree=None,
                           descriptions: dict | None = None) -> Entry:
        """The classifier for these classes (or this label tree), templates and descriptions: cached,
        being built, or built now."""
        key = self.key(classes, templates, tree, descriptions)
        entry = self.get(key)
        if entry is not None:
            return entry
        future = self._pending.get(key)
        if future is None:
            if len(self._pending) >= self.max_pending:
                raise ClientError(429, f"{len(self._pending)} new label sets are being built already: retry "
                                       "shortly, or reuse a classifier id from POST /v1/classifiers")
            loop = asyncio.get_running_loop()
            future = asyncio.ensure_future(loop.run_in_executor(self._builder, self._build, key, classes, templates,
                                                                  tree, descriptions))
            self._pending[key] = future
            future.add_done_callback(lambda _: self._pending.pop(key, None))
        # shield: a client giving up must not cancel a build that others (or its retry) will use
        return await asyncio.shield(future)

    def _build(self, key: str, classes: list[list[str]] | None, templates: str | list[str], tree=None,
               descriptions: dict | None = None) -> Entry:
        from ..hierarchy import TreeClassifier
        from ..hierarchy.descriptions import build_classifier

        try:
            # templates: a set name the server knows, or strings inputs.check_template accepted
            if tree is not None:
                classifier = TreeClassifier.build(self.encoder, tree, templates, descriptions=descriptions,
                                                  precision=self.precision, cache=False, progress=False)
            else:
                classifier = build_classifier(self.encoder, classes, templates, descriptions,
                                              precision=self.precision, cache=False, progress=False)
        except ZsclipError as error:
            raise refused(error) from None
        self._on_build()
        entry = Entry(key, classifier, "request")
        with self._lock:
            self._built[key] = entry
            while len(self._built) > self.max_entries:
                self._built.popitem(last=False)
        return entry


__all__ = ["ClassifierRegistry", "Entry"]
