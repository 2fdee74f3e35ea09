"""Imports run down the layers only: every ``zsclip`` import (module level or inside a function)
goes to a module of the same or a lower layer, so heads never import tasks, the classifier layer
never imports adaptation code, and a classifier file loads without any task."""

import ast
from pathlib import Path

import pytest

import zsclip

ROOT = Path(zsclip.__file__).parent

#: Lowest first. A module belongs to the longest prefix listed.
LAYERS = [
    ["_lazy", "_process", "errors", "precision", "outputs.text", "outputs.atomic", "data.textfiles", "data.urls"],
    ["data", "prompts", "options", "calibration"],
    ["encoders"],
    ["pipeline"],
    ["classifier", "hierarchy", "heads"],
    ["store", "shapes", "testing"],
    ["cluster"],
    ["job"],
    ["tasks", "adapt", "outputs"],
    ["cli", "serve", "__main__", ""],
]
#: Within a layer these packages may import each other only in this order (left may not import right).
ORDER_IN_LAYER = {"classifier": 0, "hierarchy": 1, "heads": 2}


def layer_of(module: str) -> tuple[int, str]:
    best = (-1, "", "")
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".") or prefix == "") and len(prefix) >= len(best[1]):
                best = (index, prefix, prefix)
    return best[0], best[1]


def imports() -> list[tuple[str, str]]:
    edges = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).with_suffix("")
        parts = list(relative.parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    edges.append((module, ".".join([*base, node.module])))
                    continue
                for alias in node.names:  # ``from .. import heads``: each name is a module of that package
                    if not base and alias.name == "__version__":
                        continue  # the version string, defined before anything else is imported
                    edges.append((module, ".".join([*base, alias.name])))
    return edges


@pytest.mark.parametrize("module,target", imports())
def test_imports_run_down_the_layers(module, target):
    (low, _), (high, _) = layer_of(target), layer_of(module)
    assert low <= high, f"zsclip.{module} (layer {high}) imports zsclip.{target} (layer {low}): an import up the layers"
    top_m, top_t = module.split(".")[0], target.split(".")[0]
    if low == high and top_m in ORDER_IN_LAYER and top_t in ORDER_IN_LAYER:
        assert ORDER_IN_LAYER[top_t] <= ORDER_IN_LAYER[top_m], f"zsclip.{module} imports zsclip.{target}"
