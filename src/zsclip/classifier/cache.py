"""Where built classifiers are cached, and the key that decides a hit.

The key covers everything that changes the weights: the model fingerprint (config + weights
digest), every class's names, the exact prompts (so callables and template files count by
what they produce), the precision and the cache format. Anything else changing misses.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import platformdirs

CACHE_ENV = "ZSCLIP_CACHE_DIR"
CACHE_FORMAT = 1


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The classifier cache folder: the argument, else $ZSCLIP_CACHE_DIR, else the user cache dir."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(platformdirs.user_cache_dir("zsclip")) / "classifiers"


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
