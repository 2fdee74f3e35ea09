"""WiSE-FT (Wortsman et al., CVPR 2022): mix the zero-shot and the adapted model, weight by weight.

theta(alpha) = (1 - alpha) * theta_zero_shot + alpha * theta_adapted. alpha 0 is the zero-shot
classifier exactly, alpha 1 the adapted one exactly (IEEE: 1 * x + 0 * y == x), and the paper's
finding is that intermediate alphas often beat both endpoints under distribution shift.

- Linear heads: the [D, C] weights are mixed (both are stored at the same logit scale).
- Tip-Adapter: its logits are zero-shot + alpha_tip * cache, so mixing the logits is scaling the
  cache term by alpha (the weights are the zero-shot weights on both sides).
- Fine-tuned models: every tensor of the state dict is mixed (``mix_state_dicts``); see finetune.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch

from ..classifier import ZeroShotClassifier
from ..classifier.tip_adapter import TipAdapterClassifier
from ..errors import InputError
from .features import LabelledFeatures

#: The sweep used for reports: endpoints included.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"--alpha {alpha:g}: the mixing weight must be in [0, 1] (0 = zero-shot, 1 = adapted)")
    return alpha


def mix_heads(zero_shot: ZeroShotClassifier, adapted: ZeroShotClassifier, alpha: float) -> ZeroShotClassifier:
    """The WiSE-FT mixture of two heads over the same classes and model, as a classifier of ``adapted``'s kind."""
    alpha = check_alpha(alpha)
    if list(zero_shot.classnames) != list(adapted.classnames) or zero_shot.weights.shape != adapted.weights.shape:
        raise InputError("cannot mix classifiers over different classes: build both from the same class list")
    if zero_shot.provenance.get("fingerprint") != adapted.provenance.get("fingerprint"):
        raise InputError("cannot mix heads built for different models; for fine-tuned models mix the weights "
                         "(zsclip.adapt.finetune)")
    # the adapted head is stored at its own scale: bring it to the zero-shot head's before mixing
    adapted_weights = adapted.weights * (adapted.logit_scale / zero_shot.logit_scale)
    weights = (1 - alpha) * zero_shot.weights + alpha * adapted_weights
    provenance = dict(adapted.provenance)
    if "adaptation" in provenance:
        provenance["adaptation"] = {**provenance["adaptation"], "alpha": alpha}
    common = dict(weights=weights, logit_scale=zero_shot.logit_scale, provenance=provenance)
    if isinstance(adapted, TipAdapterClassifier):
        return replace(adapted, alpha=alpha * adapted.alpha * (adapted.logit_scale / zero_shot.logit_scale),
                       **common)
    return replace(adapted, **common)


def mix_state_dicts(
    zero_shot: Mapping[str, torch.Tensor], adapted: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """theta(alpha) for every floating-point tensor; integer buffers (counters) must agree and are kept."""
    alpha = check_alpha(alpha)
    if zero_shot.keys() != adapted.keys():
        missing = sorted(set(zero_shot) ^ set(adapted))[:3]
        raise InputError(f"cannot mix models with different parameters (e.g. {missing}): same architecture needed")
    mixed = {}
    for name, theta0 in zero_shot.items():
        theta1 = adapted[name]
        if theta0.shape != theta1.shape:
            raise InputError(f"cannot mix {name}: shapes {tuple(theta0.shape)} and {tuple(theta1.shape)} differ")
        if theta0.is_floating_point():
            mixed[name] = ((1 - alpha) * theta0.float() + alpha * theta1.float()).to(theta0.dtype)
        else:
            mixed[name] = theta1.clone() if alpha >= 0.5 else theta0.clone()
    return mixed


def accuracy(classifier: ZeroShotClassifier, data: LabelledFeatures) -> float:
    """Top-1 accuracy of ``classifier`` on encoded features."""
    if len(data) == 0:
        return float("nan")
    return float((classifier.logits(data.features).argmax(1) == data.targets).float().mean())


def sweep_heads(
    zero_shot: ZeroShotClassifier,
    adapted: ZeroShotClassifier,
    eval_sets: Mapping[str, LabelledFeatures],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> list[dict]:
    """Accuracy of the mixture on every eval set at every alpha: [{"alpha": a, NAME: acc, ...}]."""
    rows = []
    for alpha in alphas:
        mixed = mix_heads(zero_shot, adapted, alpha)
        rows.append({"alpha": float(alpha), **{name: accuracy(mixed, data) for name, data in eval_sets.items()}})
    return rows
