"""The classifier's numpy top-k (argmax passes or a partition, on cache-sized blocks, probabilities of the picked
only) answers bit for bit what a stable argsort and a full softmax / sigmoid give, ties by lower index, NaN and
infinite rows included: it is the store's classify path at a million rows (issue 37's measurement)."""

import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from zsclip.classifier.topk import BLOCK_ROWS, FEW, THREADS, array_top_k, top_indices


def defined(logits: np.ndarray, k: int, sigmoid: bool) -> tuple[np.ndarray, np.ndarray]:
    """The definition: every class sorted (stable), every probability computed, the k best taken."""
    indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    with np.errstate(over="ignore"):
        if sigmoid:
            probabilities = 1.0 / (1.0 + np.exp(-logits))
        else:
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    return np.take_along_axis(probabilities, indices, axis=-1).astype(np.float32), indices


def awkward(classes: int, rows: int = 2 * BLOCK_ROWS + 44, seed: int = 0) -> np.ndarray:
    """Logits with ties everywhere (also at the k-th place), constant rows, NaN and infinite values, across
    more than one block."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((rows, classes)) * 20).astype(np.float32)
    logits[:200] = np.round(logits[:200] / 10)  # many ties
    logits[200:210] = 0.5  # every class tied
    logits[210, 7] = np.nan
    logits[211, :] = np.nan
    logits[212, :] = -np.inf
    logits[213, : classes - 2] = -np.inf  # two finite classes: a k-th pick of -inf
    logits[214, 3] = np.inf
    logits[215, [2, 9]] = np.inf  # tied infinities
    logits[216, 0] = 1e30  # exp overflows to inf for the others' shift
    return logits


@pytest.mark.parametrize("classes, k", [(1000, 5), (1000, 1), (1000, FEW), (1000, FEW + 1), (200, 10), (70, 69),
                                        (10, 3), (64, 64)])
@pytest.mark.parametrize("sigmoid", [False, True])
def test_top_k_equals_the_full_sort_and_softmax_bit_for_bit(classes, k, sigmoid):
    logits = awkward(classes, seed=classes + k)
    scores, indices = array_top_k(logits, k, sigmoid)
    expected_scores, expected_indices = defined(logits, k, sigmoid)
    assert np.array_equal(indices, expected_indices)
    assert np.array_equal(scores, expected_scores, equal_nan=True)
    assert scores.dtype == np.float32 and indices.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 120).flatmap(lambda classes: st.tuples(
    arrays(np.float32, st.tuples(st.integers(1, 40), st.just(classes)),
           elements=st.sampled_from([0.0, 1.0, -1.0, 2.5, -3.0, 80.0, -80.0, np.inf, -np.inf, np.nan]) |
           st.floats(-100, 100, width=32)),
    st.integers(1, classes))), st.booleans())
def test_top_k_equals_the_definition_on_any_logits(case, sigmoid):
    logits, k = case
    scores, indices = array_top_k(logits, k, sigmoid)
    expected_scores, expected_indices = defined(logits, k, sigmoid)
    assert np.array_equal(indices, expected_indices)
    assert np.array_equal(scores, expected_scores, equal_nan=True)


@pytest.mark.parametrize("k", [5, FEW + 4])
def test_blocks_answered_on_the_thread_pool_equal_the_definition(k):
    logits = awkward(1000, rows=3 * THREADS * BLOCK_ROWS + 31, seed=k)  # enough blocks for the pool
    scores, indices = array_top_k(logits, k, False)
    expected_scores, expected_indices = defined(logits, k, False)
    assert np.array_equal(indices, expected_indices)
    assert np.array_equal(scores, expected_scores, equal_nan=True)


def test_top_indices_of_a_wide_row_take_the_lower_index_among_ties():
    logits = np.zeros((3, 500), dtype=np.float32)
    logits[:, [400, 7, 250]] = 1.0
    assert top_indices(logits, 2).tolist() == [[7, 250]] * 3
    assert top_indices(logits, 4).tolist() == [[7, 250, 400, 0]] * 3


# --- the classifier's blocks: logits made and answered a block at a time, on the pool ---------------------------
def _classifier(classes: int, dim: int = 48, seed: int = 3):
    import torch

    from zsclip import ZeroShotClassifier

    weights = np.random.default_rng(seed).standard_normal((dim, classes)).astype(np.float32)
    weights /= np.linalg.norm(weights, axis=0)
    names = [f"c{n}" for n in range(classes)]
    return ZeroShotClassifier(torch.from_numpy(weights), names, [[n] for n in names], 100.0, None, {})


def _features(rows: int, dim: int = 48, seed: int = 5) -> np.ndarray:
    features = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    features[::7] = features[3]  # equal rows: equal logits, ties across rows
    return features


def _by_blocks(classifier, features: np.ndarray, rows_per_call: int) -> np.ndarray:
    """The classifier's logits as the blocks compute them: one matmul per ``rows_per_call`` rows."""
    return np.concatenate([classifier.array_logits(features[start:start + rows_per_call])
                           for start in range(0, len(features), rows_per_call)])


@pytest.mark.parametrize("k", [5, FEW + 3])
def test_the_classifiers_blocks_on_the_pool_answer_as_the_definition_of_their_logits(k):
    from zsclip.classifier import topk

    classifier, features = _classifier(400), _features(3 * THREADS * BLOCK_ROWS + 77)
    scores, indices = classifier.top_k(features, k)
    with topk.one_blas_thread():  # the blocks' matmuls each ran on one BLAS thread
        logits = _by_blocks(classifier, features, BLOCK_ROWS)
    expected_scores, expected_indices = defined(logits, k, False)
    assert np.array_equal(indices, expected_indices) and np.array_equal(scores, expected_scores)
    again = classifier.top_k(features, k)  # the same batch, the same answers, whichever thread took a block
    assert np.array_equal(again[0], scores) and np.array_equal(again[1], indices)


def test_where_blas_threads_cannot_be_set_chunks_are_computed_inline_and_answered_alike(monkeypatch):
    from zsclip.classifier import topk

    monkeypatch.setattr(topk, "_SETTERS", [])  # a BLAS whose threads cannot be set
    classifier, features = _classifier(300), _features(2 * topk.INLINE_BLOCKS * BLOCK_ROWS + 5)
    scores, indices = classifier.top_k(features, 4)
    logits = _by_blocks(classifier, features, topk.INLINE_BLOCKS * BLOCK_ROWS)
    expected_scores, expected_indices = defined(logits, 4, False)
    assert np.array_equal(indices, expected_indices) and np.array_equal(scores, expected_scores)


def test_one_blas_thread_puts_the_count_back_when_the_last_overlapping_call_ends():
    import threading

    from threadpoolctl import threadpool_info

    from zsclip.classifier.topk import _blas_setters, one_blas_thread

    def counts() -> list[int]:  # numpy's BLAS (FAISS, when loaded, brings its own, which is left alone)
        return [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"
                and entry["filepath"].startswith(os.path.dirname(np.__file__))]

    if not _blas_setters():
        pytest.skip("numpy's BLAS is not an OpenBLAS >= 0.3.27")
    before = counts()
    inside, release = threading.Event(), threading.Event()

    def other_call() -> None:
        with one_blas_thread():
            inside.set()
            release.wait(10)

    with one_blas_thread() as limited:
        assert limited and set(counts()) == {1}
        other = threading.Thread(target=other_call)
        other.start()
        assert inside.wait(10)
    assert set(counts()) == {1}  # the other call is still inside
    release.set()
    other.join(10)
    assert counts() == before


def test_read_ahead_keeps_order_raises_in_place_and_stops_when_closed():
    import threading
    import time

    from zsclip.store.ahead import read_ahead

    assert list(read_ahead(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("shard 2 is damaged")

    got = []
    with pytest.raises(ValueError, match="shard 2"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1]

    made, closed = [], threading.Event()

    def endless():
        try:
            for n in range(10**9):
                made.append(n)
                yield n
        finally:
            closed.set()

    source = endless()  # held here, so only read_ahead's own close (not garbage collection) can close it
    reader = read_ahead(source, depth=2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()
    assert closed.wait(5)  # the source was closed once its thread had stopped
    count = len(made)
    time.sleep(0.3)
    assert len(made) == count <= 3 + 2 + 1  # no more made: at most the queue's and the one in hand
    assert not [t for t in threading.enumerate() if t.name == "zsclip-read-ahead"]


def test_float64_logits_are_answered_in_float32():
    logits = awkward(300, rows=300, seed=9).astype(np.float64)
    scores, indices = array_top_k(logits, 3, False)
    expected_scores, expected_indices = defined(logits.astype(np.float32), 3, False)
    assert np.array_equal(indices, expected_indices) and np.array_equal(scores, expected_scores, equal_nan=True)


# --- a stream of batches: read and answered as one pipeline on the pool ------------------------------------------
def _logits_for(classifier):
    return lambda features: (len(features), lambda start, stop, out: classifier.array_logits(features[start:stop],
                                                                                             out=out))


def test_a_stream_answers_each_batch_as_top_k_does_in_order_and_reads_them_on_the_pool():
    import threading

    from zsclip.classifier import topk

    classifier = _classifier(300)
    sizes = [3 * THREADS * BLOCK_ROWS + 77, 0, 5, BLOCK_ROWS, 2 * THREADS * BLOCK_ROWS + 1, 1]
    batches = [_features(rows + 4, seed=rows)[:rows] for rows in sizes]
    readers = []

    def items():
        for features in batches:
            readers.append(threading.current_thread().name)
            yield features

    streamed = list(classifier.top_k_stream(items(), lambda features: features, 7))
    assert [item is features for (item, _, _), features in zip(streamed, batches, strict=True)] == [True] * len(sizes)
    for (features, scores, indices), rows in zip(streamed, sizes, strict=True):
        expected_scores, expected_indices = classifier.top_k(features, 7)
        assert scores.shape == indices.shape == (rows, 7)
        assert np.array_equal(scores, expected_scores) and np.array_equal(indices, expected_indices)
    if topk._blas_setters():  # the pipeline (else the batches are answered one by one, as top_k does)
        assert readers and all(name.startswith("zsclip-topk") for name in readers)


def test_a_stream_raises_a_batch_that_failed_to_read_after_the_batches_before_it():
    classifier = _classifier(200)

    def items():
        yield _features(600)
        yield _features(7)[:3]
        raise ValueError("shard 2 is damaged")

    got = []
    with pytest.raises(ValueError, match="shard 2"):
        for features, scores, _ in classifier.top_k_stream(items(), lambda features: features, 3):
            got.append((len(features), len(scores)))
    assert got == [(600, 600), (3, 3)]


def test_a_stream_closed_early_leaves_no_work_queued_closes_its_batches_and_puts_blas_threads_back():
    import threading

    from threadpoolctl import threadpool_info

    from zsclip.classifier import topk

    def counts() -> list[int]:
        return [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"
                and entry["filepath"].startswith(os.path.dirname(np.__file__))]

    classifier, before, closed, made = _classifier(300), counts(), threading.Event(), []

    def endless():
        try:
            for n in range(10**6):
                made.append(n)
                yield _features(3 * THREADS * BLOCK_ROWS, seed=n)
        finally:
            closed.set()

    source = endless()  # held here, so only the stream's own close (not garbage collection) can close it
    stream = classifier.top_k_stream(source, lambda features: features, 5)
    next(stream)
    stream.close()
    assert closed.is_set() and counts() == before
    count = len(made)
    assert count <= 3  # the one answered, the one queued, the one being read
    done = topk._pool().submit(lambda: len(made))  # the pool is free: nothing of the stream is left before it
    assert done.result(timeout=10) == count


def test_a_batch_reader_that_uses_the_top_k_itself_is_answered_inline_not_deadlocked():
    import threading

    classifier = _classifier(200)
    inner = []

    def items():
        for seed in range(3):
            inner.append(classifier.top_k(_features(3 * THREADS * BLOCK_ROWS, seed=seed), 2))  # from the pool
            yield _features(3 * THREADS * BLOCK_ROWS, seed=seed)

    result: list = []
    worker = threading.Thread(target=lambda: result.extend(classifier.top_k_stream(items(), lambda f: f, 2)),
                              daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive() and len(result) == 3
    for (_, scores, indices), (inner_scores, inner_indices) in zip(result, inner, strict=True):
        assert np.array_equal(scores, inner_scores) and np.array_equal(indices, inner_indices)


def test_where_blas_threads_cannot_be_set_a_stream_answers_batch_by_batch_alike(monkeypatch):
    from zsclip.classifier import topk

    monkeypatch.setattr(topk, "_SETTERS", [])
    classifier = _classifier(300)
    batches = [_features(2 * topk.INLINE_BLOCKS * BLOCK_ROWS + 5, seed=seed) for seed in range(2)]
    for features, scores, indices in classifier.top_k_stream(iter(batches), lambda features: features, 4):
        expected_scores, expected_indices = classifier.top_k(features, 4)
        assert np.array_equal(scores, expected_scores) and np.array_equal(indices, expected_indices)


def test_streams_started_on_every_thread_of_the_pool_answer_batch_by_batch_there_not_deadlocked():
    """A stream whose caller is one of the pool's threads does not queue work for the pool and wait for it (with
    every thread of the pool such a caller, nothing would ever run it)."""
    from zsclip.classifier import topk

    classifier = _classifier(200)
    batches = [_features(3 * THREADS * BLOCK_ROWS, seed=seed) for seed in range(3)]
    started = threading.Barrier(THREADS, timeout=30)

    def stream() -> list:
        started.wait()  # every thread of the pool is one of these callers
        return list(classifier.top_k_stream(iter(batches), lambda f: f, 3))

    calls = [topk._pool().submit(stream) for _ in range(THREADS)]
    for call in calls:
        for (features, scores, indices), batch in zip(call.result(timeout=60), batches, strict=True):
            expected_scores, expected_indices = classifier.top_k(batch, 3)
            assert features is batch and np.array_equal(scores, expected_scores)
            assert np.array_equal(indices, expected_indices)
