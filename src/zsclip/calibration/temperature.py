"""Temperature scaling (Guo et al. 2017): one number T > 0 that divides a classifier's logits, chosen to
minimise the negative log-likelihood of labelled calibration images. It changes no ranking (top-1 and
top-k stay the same), only how confident the probabilities are.

NLL(b) with b = 1/T is convex (a log-sum-exp of lines minus a line), so its derivative
mean(E_p[z] - z_true) is increasing in b and the minimum is its one root, found by bisection on log b:
no optimiser library, no starting point to tune, the same answer on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .measures import log_softmax

#: The temperatures a fit may return: beyond them the probabilities are all-or-nothing or uniform.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature and the calibration images' NLL before (T = 1) and after."""

    temperature: float
    nll_before: float
    nll_after: float
    num_images: int


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` under softmax(logits / temperature)."""
    log_p = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-log_p[np.arange(len(targets)), np.asarray(targets, dtype=np.int64)].mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, iterations: int = 80) -> TemperatureFit:
    """The T minimising NLL of ``targets`` [n] under softmax(``logits`` [n, C] / T).

    Memory: the calibration logits in float64 (n x C x 8 bytes: 80 MB for 10,000 images x 1,000 classes)."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(targets) or not len(targets):
        raise ValueError(f"logits {logits.shape} and targets {targets.shape}: give [n, C] and [n], n > 0")
    true_logit = logits[np.arange(len(targets)), targets]

    def slope(b: float) -> float:  # d NLL / d b = mean(E_p[z] - z_true) at inverse temperature b
        p = np.exp(log_softmax(b * logits))
        return float(((p * logits).sum(axis=1) - true_logit).mean())

    low, high = math.log(1 / MAX_TEMPERATURE), math.log(1 / MIN_TEMPERATURE)
    if slope(math.exp(low)) >= 0:
        b = math.exp(low)
    elif slope(math.exp(high)) <= 0:  # separable data: sharper is always better; stop at the bound
        b = math.exp(high)
    else:
        for _ in range(iterations):
            middle = (low + high) / 2
            if slope(math.exp(middle)) > 0:
                high = middle
            else:
                low = middle
        b = math.exp((low + high) / 2)
    temperature = 1 / b
    return TemperatureFit(temperature, nll(logits, targets), nll(logits, targets, temperature), len(targets))


@dataclass(frozen=True)
class BiasFit:
    """A temperature and a bias per class (bias-corrected temperature scaling), and the NLL before and after."""

    temperature: float
    bias: tuple[float, ...]
    nll_before: float
    nll_after: float
    num_images: int


#: The L2 weight on the class biases: it picks the mean-zero solution (softmax ignores a constant) and keeps a
#: class the calibration images never show from drifting to minus infinity.
BIAS_L2 = 1e-4


def fit_temperature_bias(logits: np.ndarray, targets: np.ndarray, iterations: int = 500) -> BiasFit:
    """T and b [C] minimising NLL of ``targets`` under softmax(``logits`` / T + b) (+ ``BIAS_L2`` |b|^2): the
    bias-corrected temperature scaling of Alexandari et al. (2020), which removes a zero-shot classifier's class
    bias (some prompts score higher for every image) as well as its over-confidence. Unlike the temperature
    alone it can change answers: a class the prompts favour is pulled back. Convex in (1/T, b); solved by
    L-BFGS in float64 from T = 1, b = 0 (deterministic). Memory: the logits in float64, as ``fit_temperature``."""
    import torch

    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    if z.ndim != 2 or len(z) != len(y) or not len(y):
        raise ValueError(f"logits {tuple(z.shape)} and targets {tuple(y.shape)}: give [n, C] and [n], n > 0")
    inverse = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # log(1 / T)
    bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([inverse, bias], lr=1, max_iter=iterations, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")
    low, high = math.log(1 / MAX_TEMPERATURE), math.log(1 / MIN_TEMPERATURE)

    def loss():
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(inverse.clamp(low, high).exp() * z + bias, y) \
            + BIAS_L2 * (bias ** 2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    with torch.no_grad():
        temperature = float(1 / inverse.clamp(low, high).exp())
        centred = (bias - bias.mean()).numpy()
        after = float(torch.nn.functional.cross_entropy(z / temperature + torch.as_tensor(centred), y))
    return BiasFit(temperature, tuple(float(v) for v in centred), nll(logits, targets), after, len(y))


def calibration_problem(calibration: object) -> str | None:
    """What is wrong with a classifier file's ``calibration`` entry, or None: a temperature must be a
    finite number in [MIN_TEMPERATURE, MAX_TEMPERATURE]; an accept table must be well formed."""
    if calibration is None:
        return None
    if not isinstance(calibration, dict):
        return "calibration is not an object"
    temperature = calibration.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        return f"calibration temperature {str(temperature)[:20]} is not a number in [{MIN_TEMPERATURE}, " \
               f"{MAX_TEMPERATURE:g}]"
    bias = calibration.get("bias")
    if bias is not None and (not isinstance(bias, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bias)):
        return "calibration bias is not a list of finite numbers"
    accept = calibration.get("accept")
    if accept is not None:
        from .accept import table_problem

        return table_problem(accept)
    return None


__all__ = ["TemperatureFit", "fit_temperature", "nll", "calibration_problem", "MIN_TEMPERATURE", "MAX_TEMPERATURE",
           "BiasFit", "fit_temperature_bias", "BIAS_L2"]
