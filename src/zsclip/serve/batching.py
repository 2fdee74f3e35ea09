"""Dynamic batching: images from concurrent requests share one forward pass on the model's thread.

Requests ``await queue.submit(pixels)`` on the event loop; a single worker thread owns the model's
image forward. It takes the oldest waiting image, runs up to ``max_batch_size`` images at once, and
hands each request back its own rows. It waits for company only for images known to be on their
way: a request announces itself (``expecting()``) while its uploads are decoded, and while any is
announced the oldest image waits at most ``max_wait_ms`` (counted from its arrival) for them. With
none on the way a batch runs at once, so a lone request never waits for a window; under load
batches fill while the model is busy with the previous one.

The queue is bounded in images: ``submit`` refuses work beyond ``queue_limit`` (the app answers
429) instead of letting latency and memory grow without end. A request cancelled while waiting
(client gone, timeout) is dropped before it costs a forward pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


class QueueFull(Exception):
    """The queue holds ``queue_limit`` images already: try again later (HTTP 429)."""


class QueueClosed(Exception):
    """The server is shutting down and takes no new work (HTTP 503)."""


@dataclass
class _Item:
    pixels: torch.Tensor  # [3, H, W]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float


@dataclass
class Announcement:
    """A request's promise that images are coming (see ``BatchQueue.expecting``)."""

    fulfilled: bool = False


def _settle(future: asyncio.Future, result: object = None, error: BaseException | None = None) -> None:
    """Runs on the event loop (via call_soon_threadsafe): the request may have been cancelled since."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class BatchQueue:
    """A bounded queue of images in front of ``forward`` ([B, 3, H, W] -> [B, D]), run on one thread.

    Args:
        forward: the model call; it runs only on this queue's worker thread.
        max_batch_size: images per forward pass at most (1 turns batching off).
        max_wait_ms: how long the oldest waiting image waits for announced images before its batch runs.
        queue_limit: images waiting at most; ``submit`` raises ``QueueFull`` beyond it.
        on_batch: called on the worker thread after each pass with (batch size, seconds).
        on_depth: called with the number of waiting images whenever it changes.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        queue_limit: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        name: str = "zsclip-model",
    ) -> None:
        if max_batch_size < 1 or queue_limit < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and queue_limit must be >= 1, max_wait_ms >= 0")
        self.forward = forward
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue_limit = queue_limit
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._items: deque[_Item] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._expected = 0  # requests announced (decoding) whose images have not been submitted yet
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> BatchQueue:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    @property
    def depth(self) -> int:
        """Images waiting for the model (not counting the batch running now)."""
        return len(self._items)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking work, finish what is queued (graceful shutdown), then stop the thread.

        Whatever is still queued after ``timeout`` seconds fails with ``QueueClosed``.
        """
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._condition:
            left = list(self._items)
            self._items.clear()
        for item in left:
            item.loop.call_soon_threadsafe(_settle, item.future, None, QueueClosed("the server is shutting down"))

    # --- the event-loop side ---------------------------------------------------------------
    @contextlib.contextmanager
    def expecting(self) -> Iterator[Announcement]:
        """Announce a request whose images are on their way (being decoded): until it submits them (pass the
        announcement to ``submit``) or leaves this block, a waiting batch may wait ``max_wait_ms`` for them."""
        announcement = Announcement()
        with self._condition:
            self._expected += 1
        try:
            yield announcement
        finally:
            with self._condition:
                self._fulfil(announcement)

    def withdraw(self, announcement: Announcement) -> None:
        """The announced images will not come through ``submit`` with this announcement: stop waiting for them."""
        with self._condition:
            self._fulfil(announcement)

    def _fulfil(self, announcement: Announcement | None) -> None:
        """Under the condition: the announced images arrived (or never will): stop waiting for them."""
        if announcement is not None and not announcement.fulfilled:
            announcement.fulfilled = True
            self._expected -= 1
            self._condition.notify()

    async def submit(self, pixels: torch.Tensor, announced: Announcement | None = None) -> torch.Tensor:
        """Features [N, D] for preprocessed images [N, 3, H, W], computed in shared batches. ``announced``: the
        request's announcement from ``expecting()``, which these images fulfil."""
        if pixels.dim() != 4 or len(pixels) == 0:
            raise ValueError(f"submit takes [N, 3, H, W] pixels with N >= 1, got {tuple(pixels.shape)}")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        with self._condition:
            self._fulfil(announced)
            if self._closed:
                raise QueueClosed("the server is shutting down")
            if len(self._items) + len(pixels) > self.queue_limit:
                raise QueueFull(f"{len(self._items)} images are waiting for the model (limit {self.queue_limit})")
            futures = [loop.create_future() for _ in range(len(pixels))]
            self._items.extend(_Item(p, f, loop, now) for p, f in zip(pixels, futures, strict=True))
            depth = len(self._items)
            self._condition.notify()
        self._on_depth(depth)
        try:
            rows = await asyncio.gather(*futures)
        except BaseException:
            for future in futures:  # cancelled (client gone, timeout) or failed: drop the rest unrun
                future.cancel()
            raise
        return torch.stack(rows)

    # --- the model thread ------------------------------------------------------------------
    def _take_batch(self) -> list[_Item] | None:
        """Block until a batch is due; None when closed and drained."""
        with self._condition:
            while not self._items:
                if self._closed:
                    return None
                self._condition.wait()
            deadline = self._items[0].arrived + self.max_wait
            while len(self._items) < self.max_batch_size and not self._closed and self._expected > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            batch = [self._items.popleft() for _ in range(min(self.max_batch_size, len(self._items)))]
            depth = len(self._items)
        self._on_depth(depth)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            batch = [item for item in batch if not item.future.done()]  # cancelled while waiting
            if not batch:
                continue
            started = time.perf_counter()
            try:
                features = self.forward(torch.stack([item.pixels for item in batch]))
                if len(features) != len(batch):
                    raise RuntimeError(f"forward returned {len(features)} rows for {len(batch)} images")
            except Exception as error:  # the model failed (e.g. out of memory): fail this batch only
                for item in batch:
                    item.loop.call_soon_threadsafe(_settle, item.future, None, error)
                continue
            with contextlib.suppress(Exception):  # metrics must never take the model thread down
                self._on_batch(len(batch), time.perf_counter() - started)
            for item, row in zip(batch, features, strict=True):
                with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody waits for it
                    item.loop.call_soon_threadsafe(_settle, item.future, row)


__all__ = ["BatchQueue", "QueueFull", "QueueClosed", "Announcement"]
