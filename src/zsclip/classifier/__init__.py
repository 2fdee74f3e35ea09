"""The classifier layer: ``ZeroShotClassifier`` (weights, names, scale, provenance: data plus the
math on it), its file format (safetensors + JSON, never pickle) and its on-disk cache.

A new kind of classifier (few-shot heads, label trees) is data here too: it saves and loads as a
classifier file and is applied to image features, never to images.
"""

from .cache import cache_dir, cache_key
from .zeroshot import ZeroShotClassifier, ensemble

__all__ = ["ZeroShotClassifier", "ensemble", "cache_dir", "cache_key"]
