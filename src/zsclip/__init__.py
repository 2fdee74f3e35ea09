"""zsclip: zero-shot image classification with CLIP-family models.

    import zsclip
    enc = zsclip.load_model("ViT-B-32", pretrained="laion2b_s34b_b79k")
    clf = zsclip.ZeroShotClassifier.build(enc, ["dog", "cat", "bird"])
    clf.predict(["photo.jpg"], top_k=3)
"""

__version__ = "0.1.0"

from .classifier import ZeroShotClassifier  # noqa: E402
from .encoders import Encoder, load_model, wrap  # noqa: E402
from .errors import ClassifierFileError, InputError, ModelLoadError, ZsclipError, ZsclipWarning  # noqa: E402
from .prompts import TEMPLATE_SETS, read_labels, resolve_templates  # noqa: E402

__all__ = [
    "__version__", "ZeroShotClassifier", "Encoder", "load_model", "wrap", "TEMPLATE_SETS", "read_labels",
    "resolve_templates", "ZsclipError", "InputError", "ModelLoadError", "ClassifierFileError", "ZsclipWarning",
]
