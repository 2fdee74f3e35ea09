"""The classifier layer: ``ZeroShotClassifier`` (weights, names, scale, provenance: data plus the
math on it), its file format (safetensors + JSON, never pickle) and its on-disk cache.

A new kind of classifier (few-shot heads, label trees) is data here too: it saves and loads as a
classifier file and is applied to image features, never to images.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".cache": ["cache_dir", "cache_key"],
    ".zeroshot": ["ZeroShotClassifier", "ensemble"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .cache import cache_dir, cache_key
    from .zeroshot import ZeroShotClassifier, ensemble

__all__ = ["ZeroShotClassifier", "ensemble", "cache_dir", "cache_key"]
