"""A broken torch install named as such: the Python environment, not zsclip, with the line that repairs it.

The common case is a torchvision built for another torch (``pip install torch`` upgraded one of the pair):
importing it fails with ``operator torchvision::nms does not exist`` while it registers its C++ operators,
wherever torchvision is first imported (open_clip, transformers' image processors). A torch whose own
shared libraries do not load (``undefined symbol``, a missing ``libtorch*.so``) is the same kind of problem.
Versions are read from the installed packages' metadata, never by importing them (that is what fails).
"""

from __future__ import annotations

import re
from importlib import metadata

REINSTALL = ("pip install --force-reinstall torch torchvision (the pair for your platform and CUDA: "
             "https://pytorch.org/get-started/locally/)")
_MISSING_OPERATOR = re.compile(r"operator (torchvision|torchaudio)::\w+ does not exist")
_BROKEN_LIBRARY = re.compile(r"(undefined symbol|cannot open shared object file|image not found|DLL load failed)")
_TORCH_LIBRARIES = ("torch", "libtorch", "libc10", "torchvision", "libtorchvision", "torchaudio")


def broken_install(error: BaseException) -> str | None:
    """One line when ``error`` (or what caused it) comes from a torch install that cannot work, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = " ".join(str(error).split())
        missing = _MISSING_OPERATOR.search(text)
        if missing:
            package = missing.group(1)
            return (f"{package} {_version(package)} does not match torch {_version('torch')} (it was built for "
                    f"another torch: {missing.group(0)}): the Python environment is broken, not zsclip; "
                    f"reinstall the two together: {REINSTALL}")
        if isinstance(error, (ImportError, OSError)) and _BROKEN_LIBRARY.search(text) \
                and any(name in text for name in _TORCH_LIBRARIES):
            return (f"torch {_version('torch')} cannot load its libraries ({text[:160]}): the Python environment "
                    f"is broken, not zsclip; reinstall it: {REINSTALL}")
        error = error.__cause__ or error.__context__
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


__all__ = ["broken_install", "REINSTALL"]
