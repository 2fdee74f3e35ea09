"""Top-k classes and their probabilities for logits held in numpy: the store's classify path.

A store of a million rows against 1,000 classes spends as much time after the matmul as in it when each
row is sorted and every probability is computed and kept. Here every pass over the logits runs on a
block of rows that fits the CPU's cache (the matmul's output is far larger than it), the k best are found
by k passes of ``argmax`` (for small k; a partition beyond), and a softmax probability is computed for the
k picked only, dividing by the same sum of exponentials. The answers are bit for bit those of a stable
argsort of ``-logits`` (ties by lower index) and of the full softmax or sigmoid (``tests/test_topk.py``
checks this on ties, NaN and infinite rows).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: rows per block: 256 rows x 1,000 classes of float32 is 1 MB, within the CPU's cache
BLOCK_ROWS = 256
#: up to this k, k passes of argmax (each O(C), vectorised); beyond it a partition plus a sort of the picked
FEW = 16
#: threads that answer blocks at once (numpy's passes are single-threaded; the matmul before them is not)
THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None


def array_top_k(logits: np.ndarray, k: int, sigmoid: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, k] float32, class indices [N, k] int64) of the k largest logits per row, best first.

    ``sigmoid``: each probability is its own logit's sigmoid; else the softmax over the row's classes."""
    rows = logits.shape[0]
    scores = np.empty((rows, k), dtype=np.float32)
    indices = np.empty((rows, k), dtype=np.int64)

    def answer(start: int) -> None:
        block = logits[start:start + BLOCK_ROWS]
        picked = top_indices(block, k)
        indices[start:start + len(block)] = picked
        scores[start:start + len(block)] = _probabilities(block, picked, sigmoid)

    starts = range(0, rows, BLOCK_ROWS)
    if len(starts) < 2 * THREADS:
        for start in starts:
            answer(start)
    else:  # numpy lets go of the GIL in each pass: blocks run on the cores the matmul used
        list(_pool().map(answer, starts))
    return scores, indices


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(THREADS, thread_name_prefix="zsclip-topk")
    return _POOL


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: a pool it inherited would take work and never run it."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def _probabilities(block: np.ndarray, picked: np.ndarray, sigmoid: bool) -> np.ndarray:
    """The probabilities of the ``picked`` classes: the same float32 operations as computing every class's
    probability and taking the picked ones, without keeping the others."""
    with np.errstate(over="ignore", invalid="ignore"):  # exp overflow: probability 0, as torch gives; inf - inf: NaN
        if sigmoid:
            return 1.0 / (1.0 + np.exp(-np.take_along_axis(block, picked, axis=-1)))
        shifted = np.subtract(block, block.max(axis=-1, keepdims=True), dtype=np.float32)
        np.exp(shifted, out=shifted)
        total = shifted.sum(axis=-1, keepdims=True)
        return (np.take_along_axis(shifted, picked, axis=-1) / total).astype(np.float32, copy=False)


def top_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` largest of each row, largest first, ties by lower index: what a stable argsort of
    ``-logits`` gives, without sorting every class. A row holding a NaN, or one whose k-th pick is -inf (argmax
    cannot tell a picked -inf from one left), is sorted whole."""
    count = logits.shape[-1]
    if k >= count or count < 64 or logits.ndim != 2:
        return np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    indices = _by_argmax(logits, k) if k <= FEW else _by_partition(logits, k)
    values = np.take_along_axis(logits, indices[:, -1:], axis=-1)[:, 0]
    unsure = np.isnan(logits.max(axis=-1)) | (values == -np.inf)
    if unsure.any():
        indices[unsure] = np.argsort(-logits[unsure], axis=-1, kind="stable")[:, :k]
    return indices


def _by_argmax(logits: np.ndarray, k: int) -> np.ndarray:
    """k passes of argmax (the first of equal maxima: ties by lower index), each pick then set to -inf."""
    left = np.array(logits, dtype=logits.dtype, copy=True)
    rows = np.arange(len(left))
    indices = np.empty((len(left), k), dtype=np.int64)
    for place in range(k):
        best = left.argmax(axis=-1)
        indices[:, place] = best
        left[rows, best] = -np.inf
    return indices


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


__all__ = ["BLOCK_ROWS", "FEW", "array_top_k", "top_indices"]
