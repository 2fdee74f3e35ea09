"""Start-up stays light: ``import zsclip``, ``zsclip --help`` and every subcommand's ``--help`` load no
torch, open_clip, transformers, pyarrow or ray (measured in a fresh interpreter, so nothing this test
process already imported can hide an import); every lazy export still resolves."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zsclip

HEAVY = ("torch", "open_clip", "transformers", "pyarrow", "ray")
COMMANDS = ("classify", "build", "eval", "embed", "search", "models", "adapt", "serve")
SRC = str(Path(zsclip.__file__).parent.parent)

PROBE = """
import json, sys
import click
HEAVY = {heavy!r}
def loaded():
    return sorted({{name.split(".")[0] for name in sys.modules}} & set(HEAVY))
report = {{}}
import zsclip
report["import zsclip"] = loaded()
from zsclip.cli import main
for args in {runs!r}:
    try:
        main(args, prog_name="zsclip", standalone_mode=False)
    except (SystemExit, click.ClickException):  # a command's one-line refusal (standalone_mode=False raises it)
        pass
    report["zsclip " + " ".join(args)] = loaded()
zsclip.Encoder  # the probe sees a heavy import when there is one (the encoder interface is torch's)
report["sanity"] = loaded()
print(json.dumps(report))
"""


def _probe(runs: list[list[str]]) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, runs=runs)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_and_every_help_load_no_heavy_module():
    runs = [["--help"], ["--version"]] + [[command, "--help"] for command in COMMANDS]
    report = _probe(runs)
    assert "torch" in report.pop("sanity")
    assert report == {name: [] for name in report}, {name: mods for name, mods in report.items() if mods}
    assert len(report) == len(runs) + 1


def _lazy_packages() -> list[str]:
    root = Path(zsclip.__file__).parent
    found = []
    for init in sorted(root.rglob("__init__.py")):
        if "_EXPORTS" in init.read_text() or "lazy_exports" in init.read_text():
            parts = init.relative_to(root.parent).parent.parts
            found.append(".".join(parts))
    return found


@pytest.mark.parametrize("package", _lazy_packages())
def test_every_lazy_export_resolves_and_is_declared_for_type_checkers(package):
    module = importlib.import_module(package)
    names = getattr(module, "__all__", [])
    for name in names:
        assert getattr(module, name) is not None, f"{package}.{name}"
    exports = getattr(module, "_EXPORTS", None)
    if exports is None:
        return
    # the TYPE_CHECKING block imports exactly the lazy names (tests/test_layers.py checks those imports' direction)
    tree = ast.parse(Path(module.__file__).read_text())
    declared: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                if isinstance(child, ast.ImportFrom) and child.level:
                    key = "." * child.level + (child.module or "")
                    declared.setdefault(key, []).extend(alias.name for alias in child.names)
    assert {key: sorted(value) for key, value in declared.items()} == \
        {key: sorted(value) for key, value in exports.items()}
    assert set(names) <= {name for value in exports.values() for name in value} | set(vars(module))


def test_an_export_named_like_its_module_stays_the_export():
    """``zsclip.tasks.classify`` is the function even after ``zsclip/tasks/classify.py`` was imported."""
    importlib.import_module("zsclip.tasks.classify")
    importlib.import_module("zsclip.store.embed")
    assert callable(zsclip.tasks.classify) and not isinstance(zsclip.tasks.classify, type(zsclip))
    assert callable(zsclip.store.embed) and not isinstance(zsclip.store.embed, type(zsclip))
    assert zsclip.classify is zsclip.tasks.classify


def test_what_is_decided_before_a_model_loads_imports_no_torch(tmp_path):
    """Issue 38 item 6: a missing store for search or serve, an embed rerun with nothing new, and a
    second `zsclip models` are answered without torch, open_clip or transformers (a fresh interpreter)."""
    from click.testing import CliRunner

    from zsclip.cli import main

    examples = Path(__file__).resolve().parents[1] / "examples"
    store = tmp_path / "photos.zse"
    made = CliRunner().invoke(main, ["embed", str(examples), "--model", "demo", "-o", str(store), "--workers", "0"])
    assert made.exit_code == 0, made.output
    missing = str(tmp_path / "missing.zse")
    runs = [["search", missing, "a red star"], ["embed", str(examples), "-o", str(store)], ["models"]]
    if importlib.util.find_spec("fastapi") is not None:
        runs.append(["serve", "--store", missing, "--port", "0"])
    import open_clip

    from zsclip.classifier.cache import cache_dir
    from zsclip.encoders.catalog import list_pretrained

    # the first `zsclip models` asks open_clip (imported) and remembers; the next ones read what it remembered
    registry = [tuple(pair) for pair in open_clip.list_pretrained()]
    assert list_pretrained(cache_dir()) == list_pretrained(cache_dir()) == registry
    report = _probe(runs)
    report.pop("sanity"), report.pop("import zsclip")
    assert len(report) == len(runs)
    model_side = {"torch", "open_clip", "transformers", "ray"}
    assert all(not set(mods) & model_side for mods in report.values()), report
