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
    ["_lazy", "_process", "errors", "precision", "runtimes", "cachedirs", "shapes", "outputs.text", "outputs.atomic",
     "data.textfiles", "data.urls"],
    ["data", "prompts", "options", "calibration"],
    ["encoders"],
    ["pipeline"],
    ["classifier", "hierarchy", "heads", "heatmaps"],
    ["store", "testing"],
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


# --- no circles between files (issue 38, item 10) ------------------------------------------------------
def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                                         or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST):
    """Every import statement that can run: module level or inside a function, not under ``if TYPE_CHECKING``
    (annotations only; they never run)."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking(node):
            yield from (inner for child in node.orelse for inner in _runtime_imports(ast.Module([child], [])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_imports(node)


def file_graph() -> dict[str, set[str]]:
    """zsclip module -> the zsclip modules (files) it imports at run time, relative or absolute imports alike."""
    files = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = (path, parts)

    def module_of(name: str) -> str | None:  # ``a.b.c`` where ``c`` may be a name defined in module ``a.b``
        while name not in files and "." in name:
            name = name.rpartition(".")[0]
        return name if name in files else None

    graph: dict[str, set[str]] = {}
    for module, (path, parts) in files.items():
        package = parts[:-1]
        targets = []
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets += [alias.name[len("zsclip."):] for alias in node.names if alias.name.startswith("zsclip.")]
                continue
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
            elif node.module == "zsclip" or (node.module or "").startswith("zsclip."):
                base, node.module = "", node.module[len("zsclip."):] if "." in node.module else None
            else:
                continue
            prefix = ".".join(p for p in (base, node.module) if p)
            targets += [f"{prefix}.{alias.name}" if prefix else alias.name for alias in node.names]
        graph[module] = {t for t in map(module_of, targets) if t is not None and t != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_sees_function_level_imports_inside_a_package():
    module = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
                       "def f():\n    from .c import g\n")
    assert [n.module for n in _runtime_imports(module) if n.module != "typing"] == ["c"]
    assert circles({"p.a": {"p.c"}, "p.c": {"p.a"}, "p.b": {"p.a"}}) == [["p.a", "p.c"]]
    assert circles({"p.a": {"p.b"}, "p.b": {"p.c"}}) == []


def test_no_file_imports_itself_through_others():
    """A file never imports one that imports it back, directly or round a longer loop, module level or inside
    a function (a format dispatch goes in a module above the formats it chooses between)."""
    graph = file_graph()
    assert graph["job.registry"] >= {"job.openers"} and "classifier.zeroshot" in graph["classifier.files"]
    assert circles(graph) == []
