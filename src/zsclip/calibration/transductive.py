"""Collection-level correction: look at all of a collection's scores at once and re-weight the classes.

A zero-shot classifier carries a class bias (some prompts score higher for every image), and a collection
has its own class frequencies that the classifier never saw. Both methods here take the log-probabilities
log p(y | x_i) of every image and return one log-weight per class, log w [C]; the corrected answer of an
image is softmax(log p(y | x_i) + log w_y). They are implemented from the papers:

- ``em`` -- Saerens, Latinne & Decaestecker (2002), "Adjusting the outputs of a classifier to new a priori
  probabilities": EM over the unknown class priors q. E-step: p'(y|x_i) proportional to p(y|x_i) q_y / s_y
  (s: the priors the classifier assumes; uniform for a zero-shot one); M-step: q_y = mean_i p'(y|x_i).
  The weights are q / s. It estimates the collection's class frequencies; it assumes the posteriors are
  right up to the prior, so a classifier with a strong class bias pulls the estimate toward its favourite
  classes (measured on the demo world in docs/round4-calibration.md: there it lost accuracy).
- ``ot`` / ``ot-em`` -- OTTER (Shi et al., NeurIPS 2024): the assignment of images to classes is an optimal
  transport plan with cost -log p(y|x_i) whose class marginal is a given prior (``ot``: uniform; ``ot-em``:
  the prior EM estimates); with entropic regularisation 1 the plan is diag(u) P diag(v) (Sinkhorn-Knopp),
  so the correction is log w = log v. It removes the classifier's class bias, but forces the prior given.

Both are deterministic: the scores are read in input order, in the same chunks, with float64 sums.
Memory: the caller keeps the [N, C] scores (zsclip keeps them in a float32 temporary file, 4 GB for a
million images x 1,000 classes, read in chunks); each iteration is one pass over them, with O(C) state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

#: The collection-level corrections ``--transductive`` accepts.
METHODS = ("em", "ot", "ot-em")
Chunks = Callable[[], Iterable[np.ndarray]]  # yields log-probabilities [b, C], the same rows each call


def _mean_posterior(chunks: Chunks, shift: np.ndarray) -> tuple[np.ndarray, int]:
    """(mean over images of softmax(log p(.|x_i) + shift), images): one pass, float32 rows, float64 sums."""
    shift = shift.astype(np.float32)
    total, count = np.zeros(len(shift)), 0
    for block in chunks():
        adjusted = np.asarray(block, dtype=np.float32) + shift
        adjusted -= adjusted.max(axis=1, keepdims=True)
        np.exp(adjusted, out=adjusted)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        total += adjusted.sum(axis=0, dtype=np.float64)
        count += len(block)
    return (total / count if count else total), count


def em_prior(chunks: Chunks, num_classes: int, source_prior: np.ndarray | None = None, iterations: int = 100,
             tolerance: float = 1e-5) -> tuple[np.ndarray, np.ndarray, int]:
    """(log weights [C], estimated prior [C], iterations run) by Saerens et al.'s EM, stopped when no class's
    prior moves by ``tolerance`` in an iteration (or after ``iterations``)."""
    source = np.full(num_classes, 1.0 / num_classes) if source_prior is None else np.asarray(source_prior, float)
    prior = source.copy()
    log_ratio = np.zeros(num_classes)
    done = 0
    for done in range(1, iterations + 1):  # noqa: B007 (the count is returned)
        mean, count = _mean_posterior(chunks, log_ratio)  # E-step and M-step: the adjusted posteriors' mean
        if not count:
            break
        new_prior = np.maximum(mean, 1e-12)
        new_prior /= new_prior.sum()
        change = float(np.abs(new_prior - prior).max())
        prior = new_prior
        log_ratio = np.log(prior) - np.log(source)
        if change < tolerance:
            break
    return log_ratio, prior, done


def sinkhorn_weights(chunks: Chunks, num_classes: int, prior: np.ndarray | None = None, iterations: int = 100,
                     tolerance: float = 1e-5) -> tuple[np.ndarray, int]:
    """(log v [C], iterations run): Sinkhorn-Knopp for the plan pi_iy = u_i p(y|x_i) v_y with rows summing to
    1/N and classes to ``prior`` (uniform by default), regularisation 1. With u solved for each row, the
    plan's class marginal is the mean of softmax(log p(.|x_i) + log v), so each iteration is one pass:
    v <- v * prior / marginal, until no class's marginal is off by ``tolerance``."""
    target = np.full(num_classes, 1.0 / num_classes) if prior is None else np.asarray(prior, float) / np.sum(prior)
    log_target = np.log(np.maximum(target, 1e-12))
    log_v = np.zeros(num_classes)
    done = 0
    for done in range(1, iterations + 1):  # noqa: B007
        marginal, count = _mean_posterior(chunks, log_v)
        if not count:
            break
        change = float(np.abs(marginal - target).max())
        if change < tolerance:
            break
        log_v = log_v + log_target - np.log(np.maximum(marginal, 1e-300))
        log_v -= log_v.max()
    return log_v, done


def class_log_weights(method: str, chunks: Chunks, num_classes: int) -> dict:
    """``method`` (one of ``METHODS``) over the collection's log-probabilities: {"method", "log_weights" [C],
    "prior" [C] (the class frequencies the corrected answers aim at), "iterations"}."""
    if method not in METHODS:
        raise ValueError(f"unknown collection-level correction {method!r}: use {', '.join(METHODS)}")
    if method == "em":
        log_w, prior, steps = em_prior(chunks, num_classes)
        return {"method": method, "log_weights": log_w, "prior": prior, "iterations": steps}
    prior = None
    steps = 0
    if method == "ot-em":
        _, prior, steps = em_prior(chunks, num_classes)
    log_v, more = sinkhorn_weights(chunks, num_classes, prior)
    uniform = np.full(num_classes, 1.0 / num_classes)
    return {"method": method, "log_weights": log_v, "prior": uniform if prior is None else prior,
            "iterations": steps + more}


__all__ = ["METHODS", "em_prior", "sinkhorn_weights", "class_log_weights"]
