"""The tasks layer: what a user asks for, as library calls that every entry point wraps.

- ``models``: which model and classifier a run uses (defaults, classifier files);
- ``classify``: images -> top-k predictions, an error row per bad input;
- ``evaluate`` / ``metrics``: zero-shot accuracy on labelled collections, streamed;
- ``inventory``: what can be loaded and what is cached.

A new task (few-shot adaptation, label trees, open-set scoring) is a module here that reads
features through the pipeline (or the store) and classifiers from the classifier layer.
"""

from .classify import Prediction, TopK, classify, classify_items
from .evaluate import EvalResult, benchmark_record, evaluate
from .models import DEFAULT_MODEL, DEFAULT_PRETRAINED, resolve_classifier, resolve_model

__all__ = ["Prediction", "TopK", "classify", "classify_items", "EvalResult", "benchmark_record", "evaluate",
           "DEFAULT_MODEL", "DEFAULT_PRETRAINED", "resolve_classifier", "resolve_model"]
