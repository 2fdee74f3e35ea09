"""The tasks layer: what a user asks for, as library calls that every entry point wraps.

Each task consumes a job (``zsclip.job``: a source, a head, a runner) and writes to a sink
(``zsclip.outputs``):

- ``classify``: a row per input (top-k, tree levels, rejections), streamed;
- ``evaluate`` / ``metrics``: zero-shot metrics on labelled data, streamed, per head;
- ``search``: the inputs nearest to a text or an image;
- ``sort``: answers placed into class folders (accepted / to review);
- ``explain``: each answer with a heatmap per explained class (needs pixels);
- ``models``: which model a run uses; ``inventory``: what can be loaded and what is cached;
- ``stored`` / ``hierarchy``: round-2 names of store and tree jobs.

A new task is a module here that reads ``job.features()`` and a head's answers.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".classify": ["Prediction", "TopK", "classify", "classify_items"],
    ".evaluate": ["EvalResult", "benchmark_record", "evaluate"],
    ".explain": ["Explanation", "explain"],
    ".calibrate": ["CalibrationResult", "calibrate"],
    ".models": ["DEFAULT_MODEL", "DEFAULT_PRETRAINED", "resolve_classifier", "resolve_model"],
    ".multilabel": ["evaluate_multilabel"],
    ".retrieval": ["evaluate_retrieval"],
    ".search": ["Hit", "search"],
    ".sort": ["SortSummary", "sort"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .calibrate import CalibrationResult, calibrate
    from .classify import Prediction, TopK, classify, classify_items
    from .evaluate import EvalResult, benchmark_record, evaluate
    from .explain import Explanation, explain
    from .models import DEFAULT_MODEL, DEFAULT_PRETRAINED, resolve_classifier, resolve_model
    from .multilabel import evaluate_multilabel
    from .retrieval import evaluate_retrieval
    from .search import Hit, search
    from .sort import SortSummary, sort

__all__ = ["Prediction", "TopK", "classify", "classify_items", "EvalResult", "benchmark_record", "evaluate",
           "DEFAULT_MODEL", "DEFAULT_PRETRAINED", "resolve_classifier", "resolve_model", "Hit", "search",
           "evaluate_multilabel", "evaluate_retrieval", "Explanation", "explain", "CalibrationResult", "calibrate",
           "SortSummary", "sort"]
