"""From zero-shot to a few labels: template selection, few-shot heads, fine-tuning and WiSE-FT.

Every method starts from the zero-shot classifier and works on image features encoded once
(``encode_collection``); hyper-parameters are chosen by cross-validation on the shots, never on
eval data; results are ordinary classifier files whose provenance says how they were made.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    "..classifier.tip_adapter": ["TipAdapterClassifier"],
    ".features": ["LabelledFeatures", "check_shots", "encode_collection"],
    ".heads": ["cross_validate", "linear_probe", "load_classifier", "tip_adapter"],
    ".wise": ["DEFAULT_ALPHAS", "accuracy", "mix_heads", "mix_state_dicts", "sweep_heads"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ..classifier.tip_adapter import TipAdapterClassifier
    from .features import LabelledFeatures, check_shots, encode_collection
    from .heads import cross_validate, linear_probe, load_classifier, tip_adapter
    from .wise import DEFAULT_ALPHAS, accuracy, mix_heads, mix_state_dicts, sweep_heads

__all__ = [
    "LabelledFeatures", "encode_collection", "check_shots", "linear_probe", "tip_adapter", "TipAdapterClassifier",
    "load_classifier", "cross_validate", "mix_heads", "mix_state_dicts", "sweep_heads", "accuracy", "DEFAULT_ALPHAS",
]
