"""Lazy exports for package ``__init__`` files: a name loads its module on first use.

    __getattr__, __dir__ = lazy_exports(__name__, {".zeroshot": ["ZeroShotClassifier"]})

so importing a package (or one small module inside it) costs nothing beyond that module: ``import zsclip``
and every ``--help`` import no torch, open_clip, transformers, pyarrow or ray. Each package keeps the same
imports under ``if TYPE_CHECKING:`` for type checkers (and tests/test_layers.py checks their direction).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable


class _ExportsFirst(types.ModuleType):
    """A package whose export shares its name with a sub-module (``zsclip.tasks.classify`` is the function
    in ``zsclip/tasks/classify.py``): importing the sub-module does not replace the export, as it did not
    when the package imported its names eagerly."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_SHADOWED", ()):
            return
        super().__setattr__(name, value)


def is_loaded_instance(value: object, module: str, name: str) -> bool:
    """``isinstance(value, module.name)`` without importing ``module``: no instance of a class can exist
    before its module is loaded, so a light path (a store answered without torch) never loads it to ask."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(value, getattr(loaded, name))


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[Callable, Callable]:
    """(``__getattr__``, ``__dir__``) for ``package``: ``exports`` maps a relative module to the names it
    defines. A sub-module that is not an export loads too (``zsclip.hierarchy`` after ``import zsclip``)."""
    where = {name: module for module, names in exports.items() for name in names}
    shadowed = {name for name, module in where.items() if module == f".{name}"}
    if shadowed:
        this = sys.modules[package]
        this._SHADOWED = frozenset(shadowed)
        this.__class__ = _ExportsFirst

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        sys.modules[package].__dict__[name] = value  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
