"""zsclip: zero-shot image classification with CLIP-family models.

    import zsclip
    for p in zsclip.classify("photos/", ["dog", "cat", "bird"], model="demo"):
        print(p.source, p.labels[:1] if not p.error else p.error)

    zsclip.classify("photos.zse", labels_tree="taxonomy.yaml", reject_calibrate="known/", output="rows.parquet")
    zsclip.evaluate("val/", classifier="adapted.zsc", unknown="other/")
    zsclip.search("photos.zse", "a forklift in the rain", top_k=20)

    enc = zsclip.load_model("ViT-B-32", pretrained="laion2b_s34b_b79k")
    clf = zsclip.ZeroShotClassifier.build(enc, ["dog", "cat", "bird"])
    clf.predict(["photo.jpg"], top_k=3)

The package is layered (see each sub-package's docstring): ``data`` (inputs -> images),
``encoders`` (one adapter per model library), ``prompts``, ``pipeline`` (images -> features),
``classifier`` / ``hierarchy`` / ``heads`` (features -> answers), ``store``, ``job`` (source x head x
runner), ``tasks`` (classify, evaluate, search), ``outputs`` (files), and the entry points (``cli``,
``serve``).
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._process import fit_address_space_limit

fit_address_space_limit()

#: Every public name and the module that defines it. They load on first use (module ``__getattr__``),
#: so ``import zsclip`` and ``zsclip --help`` import no torch, open_clip, transformers, pyarrow or ray.
_EXPORTS = {
    ".classifier": ["ZeroShotClassifier"],
    ".data": ["LabelledCollection", "Source", "expand_inputs", "open_collection"],
    ".encoders": ["Encoder", "load_model", "wrap"],
    ".errors": ["ClassifierFileError", "ImageReadError", "InputError", "ModelLoadError", "OutputError", "ZsclipError",
                "ZsclipWarning"],
    ".options": ["RunOptions"],
    ".prompts": ["TEMPLATE_SETS", "read_labels", "resolve_templates"],
    ".store": ["EmbeddingStore", "embed"],
    ".tasks": ["DEFAULT_MODEL", "DEFAULT_PRETRAINED", "EvalResult", "Hit", "Prediction", "TopK", "classify",
               "calibrate", "evaluate", "evaluate_multilabel", "evaluate_retrieval", "resolve_classifier",
               "resolve_model", "search", "explain", "Explanation", "sort", "SortSummary"],
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; the same names as _EXPORTS
    from .classifier import ZeroShotClassifier
    from .data import LabelledCollection, Source, expand_inputs, open_collection
    from .encoders import Encoder, load_model, wrap
    from .errors import (
        ClassifierFileError,
        ImageReadError,
        InputError,
        ModelLoadError,
        OutputError,
        ZsclipError,
        ZsclipWarning,
    )
    from .options import RunOptions
    from .prompts import TEMPLATE_SETS, read_labels, resolve_templates
    from .store import EmbeddingStore, embed
    from .tasks import (
        DEFAULT_MODEL,
        DEFAULT_PRETRAINED,
        EvalResult,
        Explanation,
        Hit,
        Prediction,
        SortSummary,
        TopK,
        calibrate,
        classify,
        evaluate,
        evaluate_multilabel,
        evaluate_retrieval,
        explain,
        resolve_classifier,
        resolve_model,
        search,
        sort,
    )

__all__ = [
    "__version__", "ZeroShotClassifier", "Encoder", "load_model", "wrap", "RunOptions", "classify", "evaluate",
    "resolve_classifier", "resolve_model", "open_collection", "expand_inputs", "Source", "LabelledCollection",
    "Prediction", "TopK", "EvalResult", "DEFAULT_MODEL", "DEFAULT_PRETRAINED", "TEMPLATE_SETS", "read_labels",
    "resolve_templates", "ZsclipError", "InputError", "ImageReadError", "ModelLoadError", "ClassifierFileError",
    "OutputError", "ZsclipWarning", "EmbeddingStore", "embed", "search", "Hit",
    "evaluate_multilabel", "evaluate_retrieval", "explain", "Explanation", "calibrate", "sort",
    "SortSummary",
]
