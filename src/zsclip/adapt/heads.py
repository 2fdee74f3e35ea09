"""Few-shot heads that start from the zero-shot classifier: a linear probe and Tip-Adapter.

Both are fitted on image features of the shots only (see features.py), and both pick their
hyper-parameters by stratified k-fold cross-validation *on the shots*: no eval data reaches
``cross_validate`` (tests check it with a spy). Both can fall back to the zero-shot classifier
when the shots do not support moving away from it (strong regularisation, Tip-Adapter alpha 0).

- Linear probe (LP++-style initialisation): logits = f @ W, W starts at logit_scale * zero-shot
  weights and is pulled back toward them by an L2 penalty lambda * ||W - W0||^2 (the "L2-SP"
  form: plain weight decay toward 0 would forget the text prior the head starts from). Convex,
  solved to convergence by L-BFGS, so the result does not depend on a step count. No bias: with
  balanced shots it buys nothing, and without it the head is an ordinary ``ZeroShotClassifier``
  (weights = W / logit_scale), usable by classify, eval, the store and the service unchanged.
- Tip-Adapter (Zhang et al., ECCV 2022), training-free: the shots' features are a key cache K
  [N, D] with one-hot values V [N, C]; logits = zero-shot logits + alpha * exp(-beta (1 - f K^T)) V.
  The cache travels inside the classifier file (``TipAdapterClassifier``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..classifier.files import load_flat
from ..classifier.tip_adapter import TipAdapterClassifier
from ..classifier.zeroshot import TIP_ADAPTER_FORMAT, ZeroShotClassifier
from ..errors import InputError
from .features import LabelledFeatures, check_shots

#: Penalties tried for the linear probe (per shot-averaged cross-entropy); a huge one is zero-shot.
LINEAR_LAMBDAS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Tip-Adapter grid: residual weight alpha (in units of the classifier's logits at logit scale 100,
#: rescaled to the model's own scale) and sharpness beta. alpha 0 is the zero-shot classifier.
TIP_ALPHAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
TIP_BETAS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
TIP_FORMAT = TIP_ADAPTER_FORMAT
MAX_FOLDS = 5


# --- cross-validation on the shots ----------------------------------------------------------------
def stratified_folds(targets: torch.Tensor, folds: int, seed: int = 0) -> list[torch.Tensor]:
    """Validation indices of each fold: every class's images dealt round-robin from a random start,
    so each fold holds about 1/folds of every class (a class with one image sits in one fold)."""
    rng = random.Random(seed)
    assignment = torch.empty(len(targets), dtype=torch.long)
    for target in torch.unique(targets).tolist():
        rows = (targets == target).nonzero().flatten().tolist()
        rng.shuffle(rows)
        start = rng.randrange(folds)
        for position, row in enumerate(rows):
            assignment[row] = (start + position) % folds
    return [(assignment == fold).nonzero().flatten() for fold in range(folds) if (assignment == fold).any()]


@dataclass
class CrossValidation:
    """Which setting won and how every setting scored (mean held-out accuracy and cross-entropy)."""

    best: dict
    folds: int
    scores: list[dict]


def cross_validate(
    shots: LabelledFeatures,
    settings: Sequence[dict],
    fit_and_score: Callable[[LabelledFeatures, LabelledFeatures, dict], torch.Tensor],
    *,
    seed: int = 0,
) -> CrossValidation:
    """Score every setting by k-fold cross-validation on ``shots`` and pick the best.

    ``fit_and_score(train, held_out, setting)`` returns logits for ``held_out``. The winner has the
    highest held-out accuracy; ties go to the lower cross-entropy, then to the earlier setting
    (list settings from the most conservative). Only ``shots`` is read: eval data never is.
    """
    folds = min(MAX_FOLDS, max(2, min(c for c in shots.class_counts() if c > 0)))
    splits = stratified_folds(shots.targets, folds, seed)
    scores = []
    for setting in settings:
        correct, loss = 0, 0.0
        for held in splits:
            keep = torch.ones(len(shots), dtype=torch.bool)
            keep[held] = False
            train, held_out = shots.subset(keep.nonzero().flatten()), shots.subset(held)
            logits = fit_and_score(train, held_out, setting)
            correct += int((logits.argmax(1) == held_out.targets).sum())
            loss += float(F.cross_entropy(logits, held_out.targets, reduction="sum"))
        scores.append({**setting, "accuracy": correct / len(shots), "cross_entropy": loss / len(shots)})
    best = min(range(len(settings)), key=lambda i: (-scores[i]["accuracy"], scores[i]["cross_entropy"], i))
    return CrossValidation(dict(settings[best]), len(splits), scores)


# --- linear probe -----------------------------------------------------------------------------------
def fit_linear_weights(
    features: torch.Tensor, targets: torch.Tensor, init: torch.Tensor, penalty: float, max_iter: int = 200
) -> torch.Tensor:
    """argmin_W mean CE(features @ W, targets) + penalty * ||W - init||^2, by L-BFGS. [D, C]."""
    features, init = features.float(), init.float()
    weights = init.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weights], lr=1, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weights, targets) + penalty * (weights - init).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weights.detach()


def linear_probe(
    zero_shot: ZeroShotClassifier,
    shots: LabelledFeatures,
    *,
    penalties: Sequence[float] = LINEAR_LAMBDAS,
    seed: int = 0,
) -> ZeroShotClassifier:
    """A linear head from the zero-shot weights, its L2 penalty chosen by cross-validation on ``shots``.

    Returns an ordinary ``ZeroShotClassifier`` (weights = W / logit_scale, columns no longer unit
    norm) whose provenance records the method, shots, the chosen penalty and the data fingerprint.
    """
    _check_compatible(zero_shot, shots)
    init = zero_shot.weights * zero_shot.logit_scale
    settings = [{"penalty": p} for p in sorted(penalties, reverse=True)]  # most conservative first

    def fit_and_score(train: LabelledFeatures, held: LabelledFeatures, setting: dict) -> torch.Tensor:
        return held.features @ fit_linear_weights(train.features, train.targets, init, setting["penalty"])

    cv = cross_validate(shots, settings, fit_and_score, seed=seed)
    weights = fit_linear_weights(shots.features, shots.targets, init, cv.best["penalty"])
    adaptation = _adaptation_record("linear", shots, cv, alpha=1.0)
    return ZeroShotClassifier(weights / zero_shot.logit_scale, list(zero_shot.classnames),
                              [list(s) for s in zero_shot.synonyms], zero_shot.logit_scale, zero_shot.logit_bias,
                              {**zero_shot.provenance, "adaptation": adaptation}, zero_shot.encoder)


# --- Tip-Adapter ------------------------------------------------------------------------------------
def load_classifier(path: str | os.PathLike) -> ZeroShotClassifier:
    """Any flat classifier file: zero-shot, linear probe or Tip-Adapter (a ``TipAdapterClassifier``)."""
    return load_flat(path)


def tip_adapter(
    zero_shot: ZeroShotClassifier,
    shots: LabelledFeatures,
    *,
    alphas: Sequence[float] = TIP_ALPHAS,
    betas: Sequence[float] = TIP_BETAS,
    seed: int = 0,
) -> TipAdapterClassifier:
    """Tip-Adapter on ``shots``, alpha and beta chosen by cross-validation on the shots only."""
    _check_compatible(zero_shot, shots)
    unit = zero_shot.logit_scale / 100  # grid alphas are for CLIP's scale 100, as in the paper
    settings = [{"alpha": a, "beta": b} for a in sorted(alphas) for b in betas]

    def fit_and_score(train: LabelledFeatures, held: LabelledFeatures, setting: dict) -> torch.Tensor:
        head = _tip(zero_shot, train, setting["alpha"] * unit, setting["beta"], None)
        return head.logits(held.features)

    cv = cross_validate(shots, settings, fit_and_score, seed=seed)
    record = _adaptation_record("tip-adapter", shots, cv, alpha=1.0)
    return _tip(zero_shot, shots, cv.best["alpha"] * unit, cv.best["beta"], record)


def _tip(zero_shot: ZeroShotClassifier, shots: LabelledFeatures, alpha: float, beta: float,
         adaptation: dict | None) -> TipAdapterClassifier:
    provenance = dict(zero_shot.provenance)
    if adaptation is not None:
        provenance["adaptation"] = adaptation
    return TipAdapterClassifier(zero_shot.weights, list(zero_shot.classnames), [list(s) for s in zero_shot.synonyms],
                                zero_shot.logit_scale, zero_shot.logit_bias, provenance, zero_shot.encoder,
                                cache_keys=shots.features.float(), cache_values=shots.targets.long(),
                                alpha=float(alpha), beta=float(beta))


# --- shared -------------------------------------------------------------------------------------------
def _check_compatible(zero_shot: ZeroShotClassifier, shots: LabelledFeatures) -> None:
    if zero_shot.is_sigmoid:
        raise InputError("few-shot heads need a softmax (CLIP-style) model; sigmoid models (SigLIP) are not "
                         "supported yet")
    if list(shots.classnames) != list(zero_shot.classnames):
        raise InputError(f"the shots have classes {shots.classnames[:3]}... but the classifier "
                         f"{zero_shot.classnames[:3]}...: build the zero-shot classifier from the shots' classes")
    expected = zero_shot.provenance.get("fingerprint")
    if expected and expected != shots.model_fingerprint:
        raise InputError("the shots were encoded by another model than the zero-shot classifier's: "
                         "encode them with the same model")
    if shots.features.shape[1] != zero_shot.weights.shape[0]:
        raise InputError(f"features have {shots.features.shape[1]} dims, the classifier {zero_shot.weights.shape[0]}")
    check_shots(shots)


def _adaptation_record(method: str, shots: LabelledFeatures, cv: CrossValidation | None, alpha: float) -> dict:
    counts = shots.class_counts()
    record = {"method": method, "shots": min(counts) if len(set(counts)) == 1 else counts,
              "num_images": len(shots), "alpha": alpha, "data": shots.data_fingerprint}
    if cv is not None:
        record["cross_validation"] = {"folds": cv.folds, "chosen": cv.best}
    return record
