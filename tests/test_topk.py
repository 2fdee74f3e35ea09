"""The classifier's numpy top-k (partition, then sort the k picked) answers exactly what a stable argsort does,
ties by lower index included: it is the store's classify path at a million rows (issue 37's measurement)."""

import numpy as np
import pytest

from zsclip.classifier.zeroshot import _top_indices


@pytest.mark.parametrize("classes, k", [(1000, 5), (1000, 1), (200, 10), (70, 69), (10, 3)])
def test_top_indices_equal_the_stable_argsort_with_ties_and_nans(classes, k):
    rng = np.random.default_rng(classes + k)
    logits = rng.standard_normal((300, classes)).astype(np.float32)
    logits[:100] = np.round(logits[:100], 1)  # many ties, also at the k-th place
    logits[100:110] = 0.5  # every class tied
    logits[110, 7] = np.nan
    logits[111, :] = np.nan
    expected = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    assert np.array_equal(_top_indices(logits, k), expected)
