"""Reading a store's next batch while the last one is classified.

Decoding a shard's rows (Parquet, float16 to float32, the checks of every row) takes a fifth of the time of
classifying them against 1,000 classes, and most of it runs in pyarrow and numpy without the GIL; done in
turn with the classification it adds its whole time, done on a thread beside it the cores that the top-k
leaves idle between blocks take it (docs/round4-store.md has the figures). A flat head's answers as arrays
(``classify_store_arrays``, the command's CSV of a store) go one better: their batches are read as tasks on the
top-k's own threads (``classifier.topk.streamed_top_k``), so no third thread time-slices with its two.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """``items`` in order, each made on a worker thread up to ``depth`` items before it is asked for. An
    exception raised making one is raised here, in its place; closing this generator early stops the thread
    after the item it is making."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(ready, (item, None), stop):
                    return
            _put(ready, (_DONE, None), stop)
        except BaseException as error:  # handed to the consumer, raised there
            _put(ready, (_DONE, error), stop)

    worker = threading.Thread(target=produce, name="zsclip-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a put waiting on a full queue, then let the thread end
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)
        close = getattr(items, "close", None)
        if close is not None and not worker.is_alive():
            close()


def _put(ready: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Put ``entry`` unless the consumer has gone (False)."""
    while not stop.is_set():
        try:
            ready.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


__all__ = ["read_ahead"]
