"""The classifier's numpy top-k (argmax passes or a partition, on cache-sized blocks, probabilities of the picked
only) answers bit for bit what a stable argsort and a full softmax / sigmoid give, ties by lower index, NaN and
infinite rows included: it is the store's classify path at a million rows (issue 37's measurement)."""

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
