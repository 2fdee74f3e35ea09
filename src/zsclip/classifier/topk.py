"""Top-k classes and their probabilities for logits computed with numpy: the store's classify path.

A store of a million rows against 1,000 classes spends as much time after the matmul as in it when the
logits of a whole batch are written to memory and read back by each pass (sort, softmax, pick). Here the
rows go in blocks small enough that a block's logits stay in the CPU's cache from the matmul that makes
them to the last pass that reads them: each block is computed on a small thread pool whose threads run
one BLAS thread each (two blocks at once beat one block on two BLAS threads), the k best are found by k
passes of ``argmax`` in place (for small k; a partition beyond), and a probability is computed for the k
picked only, dividing by the same sum of exponentials. The answers are bit for bit those of a stable
argsort of ``-logits`` (ties by lower index) and of the full softmax or sigmoid of the same logits
(``tests/test_topk.py`` checks this on ties, NaN and infinite rows).

BLAS results are not batch-invariant: a row's logits can differ in the last bit with the size of the
matmul that computes it and the BLAS threads that share it. Blocks therefore start at the same rows
whatever the pool does, and each block's matmul runs on one BLAS thread wherever that can be set (a batch
of a few blocks too), so the same batch gets the same answers on every run of the same machine, whether
it is answered alone (``blocked_top_k``) or in a stream of batches (``streamed_top_k``, which also reads
the batches on the pool's threads between blocks: a store's classify path).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import numpy as np

#: rows per block: 256 rows x 1,000 classes of float32 is 1 MB, within the CPU's cache
BLOCK_ROWS = 256
#: up to this k, k passes of argmax (each O(C), vectorised); beyond it a partition plus a sort of the picked
FEW = 16
#: threads that answer blocks at once (numpy's passes are single-threaded; the matmul before them is not)
THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
#: blocks computed inline, one after the other, when a matmul cannot be kept to one BLAS thread per pool
#: thread: this many at once, so the BLAS threads have rows enough to share
INLINE_BLOCKS = 16
_POOL: ThreadPoolExecutor | None = None
_POOL_PREFIX = "zsclip-topk"
_SCRATCH = threading.local()
_END = object()
T = TypeVar("T")

#: ``logits_of(start, stop, out)``: the logits of rows start..stop as float32 [stop - start, classes], written into
#: ``out`` (a scratch array of that shape) or into a new array; the caller may overwrite what it returns
LogitsOf = Callable[[int, int, np.ndarray], np.ndarray]


def array_top_k(logits: np.ndarray, k: int, sigmoid: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, k] float32, class indices [N, k] int64) of the k largest logits per row, best first.

    ``sigmoid``: each probability is its own logit's sigmoid; else the softmax over the row's classes."""
    return blocked_top_k(len(logits), logits.shape[-1], lambda start, stop, out: _copied(logits[start:stop], out),
                         k, sigmoid)


def blocked_top_k(rows: int, classes: int, logits_of: LogitsOf, k: int, sigmoid: bool, *,
                  matmul: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``array_top_k`` of logits made block by block by ``logits_of``, each block answered while in the cache.

    ``matmul``: ``logits_of`` runs a BLAS matmul, so the pool's threads take blocks only while every BLAS
    runs one thread (``one_blas_thread``); where that cannot be set, chunks of ``INLINE_BLOCKS`` blocks are
    computed in this thread with every BLAS thread, and their blocks answered on the pool."""
    answer, scores, indices = _answerer(rows, classes, logits_of, k, sigmoid)
    starts = range(0, rows, BLOCK_ROWS)
    inline = len(starts) < 2 * THREADS or _on_pool()  # a task on the pool waiting for the pool could wait forever
    with one_blas_thread() if matmul else nullcontext(True) as limited:
        if inline:  # a few blocks also on one BLAS thread where it can be set: a row's answer is its block's
            for start in starts:
                answer(start)
            return scores, indices
        if limited:
            list(_pool().map(answer, starts))
            return scores, indices
    for chunk in range(0, rows, INLINE_BLOCKS * BLOCK_ROWS):  # BLAS threads as they are: chunks inline
        stop = min(chunk + INLINE_BLOCKS * BLOCK_ROWS, rows)
        computed = logits_of(chunk, stop, np.empty((stop - chunk, classes), dtype=np.float32))

        def answer_part(start: int, chunk: int = chunk, computed: np.ndarray = computed, stop: int = stop) -> None:
            end = min(start + BLOCK_ROWS, stop)
            _answer(computed[start - chunk:end - chunk], k, sigmoid, scores[start:end], indices[start:end])

        list(_pool().map(answer_part, range(chunk, stop, BLOCK_ROWS)))
    return scores, indices


def streamed_top_k(items: Iterable[T], logits_for: Callable[[T], tuple[int, LogitsOf]], classes: int, k: int,
                   sigmoid: bool) -> Iterator[tuple[T, np.ndarray, np.ndarray]]:
    """(item, scores, indices) for each of ``items`` in order: ``blocked_top_k`` (with ``matmul``) of each, as one
    pipeline. ``logits_for(item)`` gives the item's row count and its ``LogitsOf``.

    Why: read on a thread of its own, a store's next batch time-slices with the pool's two busy threads, and the
    pool waits at every batch's end for its last block and for the next batch to be handed over: per million
    rows against 1,000 classes its 1.4 core-s of reading cost 1.4 s (8.9 s against 7.5 s with the rows in
    memory). Here ``items`` is advanced on the pool's own threads, as a task between blocks (one item ahead, so
    it takes only its own time), and an item's blocks are queued before the last item's answers are awaited,
    so a thread that finishes one batch takes the next batch's blocks. An exception raised making an item is
    raised after the items before it are answered; closing this generator early waits for the work it queued
    and closes ``items``. ``items`` runs on the pool's threads (whose own top-k calls are answered inline there).
    numpy's BLAS runs one thread until this generator ends or is closed."""
    items = iter(items)
    with one_blas_thread() as limited:
        if not limited or THREADS < 2 or _on_pool():  # (on the pool: its tasks must not wait for the pool)
            for item in items:
                rows, logits_of = logits_for(item)
                yield (item, *blocked_top_k(rows, classes, logits_of, k, sigmoid, matmul=True))
            return
        yield from _pipelined(items, logits_for, classes, k, sigmoid)


def _pipelined(items: Iterator[T], logits_for, classes: int, k: int, sigmoid: bool) -> Iterator[tuple]:
    pool = _pool()
    pending: deque[tuple] = deque()  # (item, its blocks' futures, scores, indices), oldest first
    reading = pool.submit(next, items, _END)
    failure = None
    try:
        while True:
            failure = reading.exception()
            item = _END if failure is not None else reading.result()
            if item is _END:
                break
            reading = pool.submit(next, items, _END)  # queued before this item's blocks: read while they run
            rows, logits_of = logits_for(item)
            answer, scores, indices = _answerer(rows, classes, logits_of, k, sigmoid)
            pending.append((item, [pool.submit(answer, start) for start in range(0, rows, BLOCK_ROWS)],
                            scores, indices))
            if len(pending) == 2:
                yield _finished(pending.popleft())
        while pending:
            yield _finished(pending.popleft())
        if failure is not None:
            raise failure
    finally:  # ended, failed or closed early: nothing of ours left running, then ``items`` closed
        left = [reading, *(future for entry in pending for future in entry[1])]
        for future in left:
            future.cancel()
        futures_wait(left)
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _finished(entry: tuple) -> tuple:
    item, futures, scores, indices = entry
    for future in futures:
        future.result()
    return item, scores, indices


def _answerer(rows: int, classes: int, logits_of: LogitsOf, k: int, sigmoid: bool
              ) -> tuple[Callable[[int], None], np.ndarray, np.ndarray]:
    """(answer(start): the block of rows from ``start`` computed and answered into the two arrays, scores [rows, k]
    float32, indices [rows, k] int64)."""
    scores = np.empty((rows, k), dtype=np.float32)
    indices = np.empty((rows, k), dtype=np.int64)

    def answer(start: int) -> None:
        stop = min(start + BLOCK_ROWS, rows)
        block = logits_of(start, stop, _scratch(stop - start, classes))
        _answer(block, k, sigmoid, scores[start:stop], indices[start:stop])

    return answer, scores, indices


def _copied(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``block`` in the float32 scratch ``out`` (float64 logits are answered in float32, as before)."""
    np.copyto(out, block, casting="same_kind")
    return out


def _scratch(rows: int, classes: int) -> np.ndarray:
    """This thread's float32 [rows, classes] scratch block (kept between blocks: no allocation per block)."""
    held = getattr(_SCRATCH, "block", None)
    if held is None or held.shape[1] != classes or held.shape[0] < rows:
        held = _SCRATCH.block = np.empty((max(rows, BLOCK_ROWS), classes), dtype=np.float32)
    return held[:rows]


def _answer(logits: np.ndarray, k: int, sigmoid: bool, scores: np.ndarray, indices: np.ndarray) -> None:
    """Fill ``scores`` and ``indices`` [n, k] for the float32 ``logits`` [n, C], which this overwrites."""
    count = logits.shape[-1]
    logits = np.ascontiguousarray(logits)  # a view of the same rows when it is (always, from the blocks here)
    places = None  # [k, n]: where each pick is in the block's flat array
    with np.errstate(over="ignore", invalid="ignore"):  # exp overflow: probability 0, as torch gives; inf - inf: NaN
        if k >= count or count < 64:
            indices[:] = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
            top = logits.max(axis=-1, keepdims=True)
        elif k <= FEW:
            values, best, places = _by_argmax(logits, k)
            indices[:] = best.T
            top = values[0][:, None]
            if _sort_unsure(logits, indices, np.isnan(values[0]) | (values[-1] == -np.inf)):
                places = None
        else:
            indices[:] = _by_partition(logits, k)
            top = logits.max(axis=-1, keepdims=True)
            kth = np.take_along_axis(logits, indices[:, -1:], axis=-1)[:, 0]
            _sort_unsure(logits, indices, np.isnan(top[:, 0]) | (kth == -np.inf))
        if places is None:
            places = (indices + np.arange(0, len(indices) * count, count)[:, None]).T
        flat = logits.reshape(-1)
        if sigmoid:
            scores[:] = (1.0 / (1.0 + np.exp(-flat.take(places)))).T
            return
        np.subtract(logits, top, out=logits)
        np.exp(logits, out=logits)
        total = logits.sum(axis=-1, keepdims=True)
        np.divide(flat.take(places).T, total, out=scores)


def _sort_unsure(logits: np.ndarray, indices: np.ndarray, unsure: np.ndarray) -> bool:
    """A row holding a NaN, or one whose k-th pick is -inf (argmax cannot tell a picked -inf from one left), is
    sorted whole. Whether any was."""
    if not unsure.any():
        return False
    indices[unsure] = np.argsort(-logits[unsure], axis=-1, kind="stable")[:, :indices.shape[1]]
    return True


def top_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` largest of each row, largest first, ties by lower index: what a stable argsort of
    ``-logits`` gives, without sorting every class."""
    count = logits.shape[-1]
    if k >= count or count < 64 or logits.ndim != 2 or logits.dtype != np.float32:
        return np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    _, indices = array_top_k(logits, k, sigmoid=True)  # sigmoid: k exponentials a row, not one per class
    return indices


def _by_argmax(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k passes of argmax (the first of equal maxima: ties by lower index; a NaN before all), each pick set to
    -inf for the next pass and put back after the last: (values, class indices, places in the block's flat
    array), each [k, n], pass by pass. Every step writes into its row of these arrays and touches the block
    through a flat ``take`` / ``put``: a third of the numpy calls (each ~1 us of Python) of two-array indexing."""
    rows, count = logits.shape
    flat = logits.reshape(-1)
    starts = np.arange(0, rows * count, count)
    values = np.empty((k, rows), dtype=logits.dtype)
    best = np.empty((k, rows), dtype=np.intp)
    places = np.empty((k, rows), dtype=np.intp)
    for place in range(k):
        logits.argmax(axis=-1, out=best[place])
        np.add(starts, best[place], out=places[place])
        flat.take(places[place], out=values[place])
        flat.put(places[place], -np.inf)
    flat.put(places[::-1], values[::-1])  # last pass first: a place picked twice (only -inf left) gets its value back
    return values, best, places


def _by_partition(logits: np.ndarray, k: int) -> np.ndarray:
    """Partition each row (O(C)), sort only the k picked; a row whose k-th value ties one left out is sorted
    whole, so the answer is the stable argsort's."""
    negated = -logits
    picked = np.argpartition(negated, k - 1, axis=-1)[:, :k]
    values = np.take_along_axis(negated, picked, axis=-1)
    order = np.lexsort((picked, values), axis=-1)
    indices = np.take_along_axis(picked, order, axis=-1)
    worst = values.max(axis=-1, keepdims=True)
    tied = (negated <= worst).sum(axis=-1) != k
    if tied.any():
        indices[tied] = np.argsort(negated[tied], axis=-1, kind="stable")[:, :k]
    return indices


# --- the pool and its threads' BLAS ----------------------------------------------------------------------------
def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(THREADS, thread_name_prefix=_POOL_PREFIX)
    return _POOL


def _on_pool() -> bool:
    """Whether this thread is one of the pool's (a task there must not wait for the pool's other tasks)."""
    return threading.current_thread().name.startswith(_POOL_PREFIX)


_SETTERS: list | None = None
_LIMIT_LOCK = threading.Lock()
_LIMIT_DEPTH = 0
_SAVED: list[int] = []


def _blas_setters() -> list:
    """``openblas_set_num_threads_local`` of numpy's BLAS, found once by threadpoolctl; empty unless it is an
    OpenBLAS that has it (>= 0.3.27). Despite its name it sets the count for the whole process and returns the one
    it replaces, and it does so from any thread, which ``openblas_set_num_threads`` does not reliably do once the
    main thread has set a count (measured on numpy's OpenBLAS 0.3.31). Other libraries' BLAS (FAISS brings its
    own OpenBLAS) are left alone: numpy never calls them."""
    global _SETTERS
    if _SETTERS is None:
        _SETTERS = _find_setters()
    return _SETTERS


def _find_setters() -> list:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    found = ThreadpoolController().select(user_api="blas").lib_controllers
    numpy_folder = os.path.dirname(np.__file__)
    own = [c for c in found if os.path.dirname(c.filepath or "").startswith(numpy_folder)]  # a wheel's own
    chosen = own or (found if len(found) == 1 else [])  # else the one BLAS loaded (a distribution's numpy)
    setters = []
    for controller in chosen:
        setter = getattr(getattr(controller, "dynlib", None), "openblas_set_num_threads_local", None)
        if controller.internal_api != "openblas" or setter is None:
            return []
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        setters.append(setter)
    return setters


@contextmanager
def one_blas_thread() -> Iterator[bool]:
    """numpy's BLAS at one thread while the pool's threads each run a block's matmul (two blocks at once beat one
    block on two BLAS threads: 10.1 against 12.6 s per million rows classified against 1,000 classes here), the
    count put back when the last of the calls that overlap ends, from whichever thread. Yields whether it could
    (False without threadpoolctl, or with a BLAS other than a recent OpenBLAS)."""
    global _LIMIT_DEPTH, _SAVED
    setters = _blas_setters()
    if not setters:
        yield False
        return
    with _LIMIT_LOCK:
        if _LIMIT_DEPTH == 0:
            _SAVED = [setter(1) for setter in setters]
        _LIMIT_DEPTH += 1
    try:
        yield True
    finally:
        with _LIMIT_LOCK:
            _LIMIT_DEPTH -= 1
            if _LIMIT_DEPTH == 0:
                for setter, threads in zip(setters, _SAVED, strict=True):
                    setter(threads)


def _after_fork() -> None:
    """A forked child has none of its parent's threads: a pool it inherited would take work and never run it,
    and a lock or count of its calls would be theirs."""
    global _POOL, _LIMIT_LOCK, _LIMIT_DEPTH
    _POOL, _LIMIT_LOCK, _LIMIT_DEPTH = None, threading.Lock(), 0


os.register_at_fork(after_in_child=_after_fork)


__all__ = ["BLOCK_ROWS", "FEW", "LogitsOf", "array_top_k", "blocked_top_k", "one_blas_thread", "streamed_top_k",
           "top_indices"]
