"""Confidence a user can act on: measures, temperature scaling, accept thresholds, collection-level correction.

Pure numpy math on scores and labels, below every head and task (no torch, no model), so a classifier
file's calibration is checked when it loads, eval streams its measures, ``zsclip calibrate`` fits, and the
labelling exports choose their accept threshold with the same functions:

- ``measures``: ECE (15 equal-width bins, Guo et al. 2017), NLL, Brier score, the reliability diagram's
  bins and the risk-coverage curve with its area (AURC), as sums that add up across blocks;
- ``temperature``: ``fit_temperature`` (temperature scaling by NLL);
- ``accept``: ``AcceptTable`` / ``threshold_for_precision`` (the lowest confidence whose accepted images
  reach a target precision on calibration data, with how many images it rests on);
- ``transductive``: EM re-estimation of class priors (Saerens et al. 2002) and Sinkhorn optimal transport
  to a class prior (OTTER, Shi et al. 2024), over all of a collection's scores, as a per-class log-weight.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    ".measures": ["CalibrationMeasures", "ECE_BINS", "expected_calibration_error", "risk_coverage"],
    ".temperature": ["TemperatureFit", "fit_temperature", "calibration_problem"],
    ".accept": ["AcceptTable", "AcceptThreshold", "threshold_for_precision", "MIN_ACCEPTED"],
    ".transductive": ["METHODS", "class_log_weights", "em_prior", "sinkhorn_weights"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .accept import MIN_ACCEPTED, AcceptTable, AcceptThreshold, threshold_for_precision
    from .measures import ECE_BINS, CalibrationMeasures, expected_calibration_error, risk_coverage
    from .temperature import TemperatureFit, calibration_problem, fit_temperature
    from .transductive import METHODS, class_log_weights, em_prior, sinkhorn_weights

__all__ = ["CalibrationMeasures", "ECE_BINS", "expected_calibration_error", "risk_coverage", "TemperatureFit",
           "fit_temperature", "calibration_problem", "AcceptTable", "AcceptThreshold", "threshold_for_precision",
           "MIN_ACCEPTED", "METHODS", "class_log_weights", "em_prior", "sinkhorn_weights"]
