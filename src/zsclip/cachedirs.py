"""Where zsclip keeps what it computes once and reuses: classifiers, and beside them (in sub-folders)
encoded adapt features and exported tower graphs. One rule for every layer, so the encoders (exported
graphs) find the same folder the classifier cache uses without importing the classifier layer."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "ZSCLIP_CACHE_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The classifier cache folder: the argument, else $ZSCLIP_CACHE_DIR, else the user cache dir."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(platformdirs.user_cache_dir("zsclip")) / "classifiers"


__all__ = ["CACHE_ENV", "cache_dir"]
