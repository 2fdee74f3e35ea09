"""Where built classifiers are cached, and the key that decides a hit.

The key covers everything that changes the weights: the model fingerprint (config + weights
digest), every class's names, the exact prompts (so callables and template files count by
what they produce), the precision and the cache format. Anything else changing misses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from ..cachedirs import CACHE_ENV, cache_dir  # the one rule, shared with the encoders' exported graphs

CACHE_FORMAT = 1


def cache_key(
    fingerprint: str,
    classes: Sequence[Sequence[str]],
    prompts: Sequence[Sequence[str]],
    precision: str,
) -> str:
    """Hex digest naming one classifier build."""
    payload = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "classes": [list(names) for names in classes],
        "prompts": [list(p) for p in prompts],
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()[:32]


__all__ = ["CACHE_ENV", "CACHE_FORMAT", "cache_dir", "cache_key"]
