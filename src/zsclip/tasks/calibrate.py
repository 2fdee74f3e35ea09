"""``zsclip calibrate``: fit a flat classifier's temperature and accept table on labelled images.

The images go through eval's own job (``evaluate``: any labelled source -- folder, manifest, shards, a
labelled store, a Hugging Face dataset -- locally or on Ray), which hands this task each batch's logits
and targets. The temperature minimises their NLL (``zsclip.calibration.temperature``); the accept table
is built from the calibrated top-1 confidences (``zsclip.calibration.accept``); both go into the
classifier's ``calibration`` with what they were fitted on, and the file is written atomically.

Memory: the calibration images' logits are kept ([n, C] float32: 40 MB for 10,000 images x 1,000 classes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from .. import __version__
from ..calibration.accept import AcceptTable
from ..calibration.measures import CalibrationMeasures
from ..calibration.temperature import BiasFit, TemperatureFit, fit_temperature, fit_temperature_bias
from ..classifier import ZeroShotClassifier
from ..errors import InputError
from ..hierarchy.modes import TreeClassifier
from ..options import RunOptions
from .evaluate import evaluate

#: Target precisions reported after a fit (any other can be asked with --accept-precision).
REPORTED_PRECISIONS = (0.9, 0.95, 0.99)


@dataclass
class CalibrationResult:
    """The calibrated classifier (not yet saved), the fit and the measures before and after it."""

    classifier: ZeroShotClassifier
    fit: TemperatureFit | BiasFit
    table: AcceptTable
    before: dict
    after: dict
    failures: list[dict] = field(default_factory=list)


def calibrate(
    data,
    *,
    classifier=None,
    classes=None,
    templates: str | None = None,
    dataset: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    options: RunOptions | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    ray=None,
    bias: bool = False,
) -> CalibrationResult:
    """Fit the temperature and accept table of ``classifier`` (a flat classifier file or object: built,
    linear probe or Tip-Adapter), or of the classifier built from ``classes`` and ``templates``, on the
    labelled images of ``data``. A classifier that is already calibrated is fitted afresh (its old
    temperature is set aside first). ``bias``: fit a bias per class too (bias-corrected temperature scaling,
    ``fit_temperature_bias``): it removes the prompts' class bias and can change answers (a flat head only).
    Returns the result; ``result.classifier.save(path)`` writes it."""
    if classifier is not None:
        classifier = _flat_or_tree(classifier)
        if isinstance(classifier, TreeClassifier):
            if bias:
                raise InputError("--bias fits a bias per class of a flat classifier: a tree gets a temperature per "
                                 "level; leave out --bias")
            return calibrate_tree(data, classifier, dataset=dataset, options=options, cache=cache,
                                  cache_dir=cache_dir, progress=progress, ray=ray)
    logits: list[np.ndarray] = []
    targets: list[np.ndarray] = []

    def collect(name, batch_logits, batch_targets) -> None:  # one flat head: one template set or one file
        logits.append(batch_logits.detach().float().cpu().numpy())
        targets.append(batch_targets.numpy().astype(np.int64))

    result = evaluate(data, None, templates or "openai-imagenet", classes=classes, classifier=classifier,
                      dataset=dataset, model=model, pretrained=pretrained, options=options, cache=cache,
                      cache_dir=cache_dir, progress=progress, on_logits=collect, ray=ray)
    fitted = classifier if classifier is not None else next(iter(result.classifiers.values()))
    if fitted.is_sigmoid:
        raise InputError("temperature scaling is fitted for softmax scores: this classifier's model is "
                         "sigmoid-trained (SigLIP); its per-class probabilities are not calibrated here")
    all_logits, all_targets = np.concatenate(logits), np.concatenate(targets)
    fit = fit_temperature_bias(all_logits, all_targets) if bias else fit_temperature(all_logits, all_targets)
    shift = np.asarray(fit.bias, dtype=np.float64) if bias else 0.0
    before, after = CalibrationMeasures(), CalibrationMeasures()
    before.update(all_logits, all_targets)
    after.update(all_logits / fit.temperature + shift, all_targets)
    table = AcceptTable.from_predictions(after.confidences, after.correct)
    before_result, after_result = before.result(), after.result()
    fitted.calibration = {
        "method": "temperature+bias" if bias else "temperature", "temperature": fit.temperature,
        **({"bias": list(fit.bias)} if bias else {}),
        "fitted_on": {"data": os.fspath(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__,
                      "dataset": dataset, "num_images": fit.num_images, "num_failed": len(result.failures)},
        "nll_before": fit.nll_before, "nll_after": fit.nll_after,
        "ece_before": before_result["ece"], "ece_after": after_result["ece"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "zsclip_version": __version__,
        "accept": table.to_data(),
    }
    return CalibrationResult(fitted, fit, table, before_result, after_result, result.failures)


def _flat_or_tree(classifier):
    """A flat or tree classifier from a file or object, its old calibration set aside; others refused in one line."""
    if isinstance(classifier, (str, os.PathLike)):
        from ..heads.files import load_head_file

        classifier = load_head_file(classifier)
    if not isinstance(classifier, (ZeroShotClassifier, TreeClassifier)):
        kind = type(classifier).__name__
        if kind == "MultiLabelClassifier":
            raise InputError("a multi-label classifier keeps a threshold per label: calibrate those with "
                             "`zsclip build --multi-label --calibrate FILE` (temperature scaling is for flat labels)")
        raise InputError(f"a {kind} is not calibrated by temperature: calibrate a flat or tree classifier file")
    classifier.calibration = None
    return classifier


@dataclass
class TreeCalibrationResult:
    """A tree classifier with a temperature per level for each mode (not yet saved), and per mode and level
    the fit and the ECE before and after it."""

    classifier: TreeClassifier
    fits: dict[str, list[TemperatureFit]]
    ece_before: dict[str, list[float]]
    ece_after: dict[str, list[float]]
    failures: list[dict] = field(default_factory=list)


def calibrate_tree(data, tree: TreeClassifier, *, dataset: str | None = None, options: RunOptions | None = None,
                   cache: bool = True, cache_dir: str | os.PathLike | None = None, progress: bool = False,
                   ray=None) -> TreeCalibrationResult:
    """Fit one temperature per level of ``tree``, for each mode, on the labelled images of ``data`` (labels at
    any level of the tree: a coarse label calibrates the levels down to it). A level's distribution over its
    cut (what the mode gives; it sums to 1) is tempered as softmax(log p / T), T chosen by NLL as for flat
    heads, so each level's reported probability is calibrated on its own. No ranking changes."""
    from ..hierarchy.modes import LEVEL_FLOOR
    from ..hierarchy.names import MODES

    collected: dict[str, list[list[tuple[np.ndarray, np.ndarray]]]] = {}

    def collect(mode, prediction, nodes) -> None:
        levels = collected.setdefault(mode, [[] for _ in range(tree.tree.depth)])
        distributions = tree.level_distributions(prediction)
        for level, (distribution, targets) in enumerate(zip(distributions, tree.level_targets(nodes), strict=True)):
            known = targets >= 0
            logits = distribution[known].clamp_min(LEVEL_FLOOR).log().double().numpy()
            levels[level].append((logits, targets[known].numpy().astype(np.int64)))

    modes = MODES if tree.tree.depth > 1 else ("flat",)
    result = evaluate(data, None, "openai-imagenet", classifier=tree, tree_modes=modes, dataset=dataset,
                      options=options, cache=cache, cache_dir=cache_dir, progress=progress, on_tree=collect, ray=ray)
    fits: dict[str, list[TemperatureFit]] = {}
    before: dict[str, list[float]] = {}
    after: dict[str, list[float]] = {}
    for mode, levels in collected.items():
        for level, parts in enumerate(levels, start=1):
            logits = np.concatenate([part[0] for part in parts]) if parts else np.zeros((0, 1))
            targets = np.concatenate([part[1] for part in parts]) if parts else np.zeros(0, np.int64)
            if not len(targets):
                raise InputError(f"no calibration image is labelled down to level {level} of the tree: give "
                                 "images labelled with its classes")
            fit = fit_temperature(logits, targets)
            measured = CalibrationMeasures(), CalibrationMeasures()
            measured[0].update(logits, targets)
            measured[1].update(logits / fit.temperature, targets)
            fits.setdefault(mode, []).append(fit)
            before.setdefault(mode, []).append(measured[0].result()["ece"])
            after.setdefault(mode, []).append(measured[1].result()["ece"])
    tree.calibration = {
        "method": "temperature-per-level",
        "modes": {mode: [fit.temperature for fit in level_fits] for mode, level_fits in fits.items()},
        "levels": tree.tree.level_names(),
        "fitted_on": {"data": os.fspath(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__,
                      "dataset": dataset, "num_images": result.num_images, "num_failed": len(result.failures)},
        "ece_before": before, "ece_after": after,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "zsclip_version": __version__,
    }
    return TreeCalibrationResult(tree, fits, before, after, result.failures)


__all__ = ["CalibrationResult", "TreeCalibrationResult", "calibrate", "calibrate_tree", "REPORTED_PRECISIONS"]
