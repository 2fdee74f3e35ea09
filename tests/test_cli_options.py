"""Every option of every command reaches the library, or is refused in one line (issue 32, "Tests").

Generated from the commands' own click option tables: for each option of each command, the real
``zsclip`` command runs in-process twice, without and with the option (plus the options it needs,
``NEEDS``), and stops where the command hands its job to the library (``STOPS``: the calls it
makes, replaced by recorders; nothing loads a model). The option is honoured when what reached the
library differs; an option whose run is refused must be listed in ``REFUSED`` with the line it gets.
An option added to a command without a probe value here fails the test: it cannot land untested,
and an option that works from Python but is ignored by the command line cannot land again.
``tests/test_readme.py`` checks that the README's command lines parse; this checks what they mean.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from zsclip.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Stopped(Exception):
    """Raised by a stop: the command got as far as handing its job to the library."""


class Recorder:
    """What the command handed to the library, in order; ``stopped`` when it reached a stop."""

    def __init__(self) -> None:
        self.calls: list = []
        self.stopped = False

    def stop(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            self.stopped = True
            raise Stopped(name)
        return call

    def record(self, name, returns=None):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return returns(*args, **kwargs) if callable(returns) else returns
        return call


def describe(value, depth: int = 0):
    """A comparable picture of what reached the library: dataclasses and objects by their fields (and
    type), containers item by item, paths as text; deep or opaque things by their type."""
    if depth > 6:
        return type(value).__name__
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): describe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [describe(v, depth + 1) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **{f.name: describe(getattr(value, f.name), depth + 1)
                                                 for f in dataclasses.fields(value)}}
    if hasattr(value, "__dict__") and not callable(value):
        return {"type": type(value).__name__, **{k: describe(v, depth + 1) for k, v in vars(value).items()
                                                 if not k.startswith("__")}}
    return type(value).__name__


class FakePool:
    """Encoded shots as ``zsclip adapt`` uses them, without a model."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder, self.failures, self.names, self.classnames = recorder, [], [], ["red", "blue"]

    def __len__(self) -> int:
        return 2

    def few_shot(self, shots, seed):
        self.recorder.calls.append(("few_shot", (shots, seed), {}))
        return self

    def class_counts(self):
        return [1, 1]


class FakeJob:
    """A planned job without a model: a head with no rejector, calibration or accept table."""

    def __init__(self) -> None:
        self.head, self.source = SimpleNamespace(columns=["red", "blue"]), SimpleNamespace(timed=False)


class Unread:
    """Answers that stop the run when read: what was asked for them is recorded, nothing is computed."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __iter__(self):
        self.recorder.stopped = True
        raise Stopped("answers read")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Small files every probe can name: a class-per-folder tree, manifests, a label tree, descriptions,
    captions, a classifier file (random weights of the demo model's width: no model is loaded)."""
    import numpy as np
    import torch

    import zsclip
    from zsclip.calibration.accept import AcceptTable

    root = tmp_path_factory.mktemp("options")
    tree = root / "tree"
    for name, image in (("red", "red_triangle.png"), ("blue", "blue_star.png")):
        (tree / name).mkdir(parents=True)
        shutil.copy(EXAMPLES / image, tree / name / image)
    (root / "labels.txt").write_text("blue | navy\nred\n")  # the folders' sorted order, one with a synonym
    (root / "renamed.txt").write_text("azure\ncrimson\n")  # new names for the folders' classes
    (root / "tags.csv").write_text(f"path,labels\n{tree / 'red' / 'red_triangle.png'},red\n"
                                   f"{tree / 'blue' / 'blue_star.png'},blue;red\n")
    (root / "captions.csv").write_text(f"path,caption\n{tree / 'red' / 'red_triangle.png'},a red triangle\n")
    (root / "labels.yaml").write_text("colours:\n  red:\n  blue:\n")
    (root / "descriptions.json").write_text(json.dumps({"red": ["a red thing"], "blue": ["a blue thing"]}))
    weights = torch.nn.functional.normalize(torch.randn(64, 2), dim=0)
    classifier = zsclip.ZeroShotClassifier(weights, ["red", "blue"], [["red"], ["blue"]], 100.0, None,
                                           {"model": "demo", "templates": ["{}"]})
    classifier.save(root / "colours.zsc")
    # as `zsclip calibrate` leaves it: a temperature and an accept table (for --accept-precision)
    table = AcceptTable.from_predictions(np.array([0.9, 0.8, 0.6, 0.4]), np.array([True, True, False, True]))
    classifier.calibration = {"method": "temperature", "temperature": 1.5, "accept": table.to_data()}
    classifier.save(root / "calibrated.zsc")
    return {"root": root, "tree": tree, "image": tree / "red" / "red_triangle.png"}


def _values(world: dict[str, Path], tmp: Path) -> dict[str, list[str]]:
    """A probe value for each option (by its long name): valid, and unlike the default."""
    root = world["root"]
    return {
        "--labels": ["red,blue,green"], "--labels-file": [str(root / "labels.txt")], "--templates": ["photo"],
        "--classifier": [str(root / "colours.zsc")], "--top-k": ["7"], "--output": [str(tmp / "out.csv")],
        "--per-video": [], "--labels-tree": [str(root / "labels.yaml")], "--tree-mode": ["chils"], "--beam": ["2"],
        "--descriptions": [str(root / "descriptions.json")], "--reject": ["0.37"],
        "--reject-calibrate": [str(world["tree"])], "--tpr": ["0.37"], "--reject-score": ["max-prob"],
        "--reject-label": ["nothing-here"], "--multi-label": [], "--multi-score": ["softmax"], "--threshold": ["0.37"],
        "--calibrate": [str(root / "tags.csv")], "--target-precision": ["0.37"], "--model": ["demo"],
        "--pretrained": ["tag-x"], "--device": ["cpu"], "--precision": ["fp32"], "--cache-dir": [str(tmp / "c")],
        "--no-cache": [], "--batch-size": ["7"], "--workers": ["3"], "--max-pixels": ["123457"], "--decode": ["cpu"],
        "--url-timeout": ["0.37"], "--frames": ["7"], "--segment": ["0.37"], "--max-video-frames": ["7"],
        "--scale": ["0.37"], "--ray": ["auto"], "--ray-stall-timeout": ["37"], "--ray-actors": ["3"],
        "--task": ["retrieval"], "--captions": [str(root / "captions.csv")], "--dataset": ["my-data"],
        "--report": [str(tmp / "report")], "--unknown": [str(world["tree"] / "blue")], "--select-templates": ["2"],
        "--labelled": [], "--dtype": ["float32"], "--commit-every": ["7"], "--image": [str(world["image"])],
        "--all": [], "--shots": ["2"], "--seed": ["7"], "--alpha": ["0.37"],
        "--sweep-alpha": [], "--eval": [str(world["tree"])], "--steps": ["7"], "--lr": ["0.37"],
        "--store": [str(tmp / "served.zse")], "--host": ["127.0.0.2"], "--port": ["7"], "--max-batch-size": ["7"],
        "--max-wait-ms": ["0.37"], "--queue-limit": ["77"], "--decode-workers": ["3"], "--threads": ["3"],
        "--max-request-mb": ["0.37"], "--max-images": ["7"], "--max-labels": ["7"], "--max-classifiers": ["7"],
        "--request-timeout": ["0.37"], "--header-timeout": ["0.37"], "--max-connections": ["7"],
        "--api-key": ["key-x"], "--cors-origin": ["https://app.example"], "--root-path": ["/px"],
        "--graceful-timeout": ["0.37"], "--log-level": ["debug"],
        "--format": ["label-studio"], "--image-prefix": ["https://files.example/"],
        "--image-root": [str(world["root"])], "--files": ["hardlink"], "--accept-precision": ["0.37"],
        "--transductive": ["ot"], "--explain": [str(tmp / "explained")], "--upscale": ["3"], "--reembed": [],
        "--bias": [],
        "--label-studio-url": ["http://ls.example:8080"], "--label-studio-token": ["token-x"],
        "--text": ["a red star"], "--accept": ["0.37"], "--runtime": ["onnxruntime"],
        "--calibration-images": [str(world["tree"])],
        "--exact": [], "--rebuild": [], "--lists": ["7"], "--probes": ["3"], "--check": ["7"], "--remove": [],
        "--neighbours": ["7"], "--pack": [],
    }


#: a probe value that differs by command (eval writes JSON; build, adapt, calibrate a classifier; embed a store;
#: embed's labels file renames the folders' classes); "world:NAME" is a file of the shared world, else a new one;
#: a list is the value itself (an option name two commands use for different things: --method)
PER_COMMAND = {("eval", "--output"): "m.json", ("dedup", "--output"): "d.csv",
               ("build", "--output"): "c.zsc", ("adapt", "--output"): "c.zsc",
               ("calibrate", "--output"): "c.zsc",
               ("embed", "--output"): "f.zse", ("embed", "--labels-file"): "world:renamed.txt",
               ("adapt", "--method"): ["tip-adapter"], ("classify", "--method"): ["gradcam"],
               ("explain", "--method"): ["gradcam"]}


def _commands(world: dict[str, Path], tmp: Path) -> dict[str, dict]:
    """Per command: the base invocation, what each option needs beside it (``NEEDS``, which may replace
    the base's arguments), and the calls where the job reaches the library."""
    root, tree = world["root"], str(world["tree"])
    flat = ["--labels", "red,blue"]
    picture = [str(world["image"]), "-o", str(tmp / "x")]  # explain's base without its labels
    into = [tree, "--into", str(tmp / "sorted"), "--accept", "0.9"]  # sort's base without its labels
    return {
        "classify": {"base": [tree, *flat], "needs": {
            "--labels-file": ([], [tree]), "--classifier": ([], [tree]), "--labels-tree": ([], [tree]),
            "--tree-mode": (["--labels-tree", str(root / "labels.yaml")], [tree]),
            "--beam": (["--labels-tree", str(root / "labels.yaml"), "--tree-mode", "top-down"], [tree]),
            "--tpr": (["--reject-calibrate", tree], None), "--reject-score": (["--reject", "0.37"], None),
            "--reject-label": (["--reject", "0.37"], None), "--multi-score": (["--multi-label"], None),
            "--threshold": (["--multi-label"], None), "--calibrate": (["--multi-label"], None),
            "--target-precision": (["--multi-label", "--calibrate", str(root / "tags.csv")], None),
            "--ray-stall-timeout": (["--ray", "auto"], None), "--ray-actors": (["--ray", "auto"], None),
            "--format": (["-o", str(tmp / "tasks.json")], None),
            "--image-prefix": (["-o", str(tmp / "tasks.json"), "--format", "label-studio"], None),
            "--image-root": (["-o", str(tmp / "tasks.json"), "--format", "label-studio"], None),
            "--files": (["-o", str(tmp / "dataset"), "--format", "fiftyone"], None),
            "--accept-precision": (["-c", str(root / "calibrated.zsc")], [tree]),
            "--method": (["--explain", str(tmp / "explained")], None),
            "--upscale": (["--explain", str(tmp / "explained")], None)},
            # past the plan (a stand-in job: no model) to where the answers are written or explained
            "stops": {"zsclip.job.plan": lambda rec: rec.record("plan", FakeJob()),
                      "zsclip.tasks.classify.answers": lambda rec: rec.record("answers", Unread(rec)),
                      "zsclip.tasks.classify.open_sink": "stop", "zsclip.tasks.explain.explanations": "stop",
                      "zsclip.outputs.rows.ResultWriter.check": "spy"}},
        "build": {"base": [*flat, "-o", str(tmp / "b.zsc")], "needs": {
            "--labels-file": ([], ["-o", str(tmp / "b.zsc")]),
            "--multi-score": (["--multi-label"], None), "--threshold": (["--multi-label"], None),
            "--calibrate": (["--multi-label"], None),
            "--target-precision": (["--multi-label", "--calibrate", str(root / "tags.csv")], None)},
            "stops": {"zsclip.tasks.models.resolve_classifier": "stop", "zsclip.cli.build.check_writable": "spy",
                      "zsclip.tasks.models.resolve_model": "fake",
                      "zsclip.job.plan.calibration_for": "fake", "zsclip.job.heads.build_head": "stop"}},
        "eval": {"base": ["--data", tree], "needs": {
            "--task": (["--data", str(root / "captions.csv")], []), "--captions": (["--task", "retrieval"], None),
            "--tpr": (["--unknown", str(world["tree"] / "blue")], None),
            "--beam": (["--labels-tree", str(root / "labels.yaml")], None),
            "--multi-score": (["--multi-label", "--data", str(root / "tags.csv")], []),
            "--threshold": (["--multi-label", "--data", str(root / "tags.csv")], []),
            "--calibrate": (["--multi-label", "--data", str(root / "tags.csv")], []),
            "--multi-label": (["--data", str(root / "tags.csv")], []),
            "--target-precision": (["--multi-label", "--data", str(root / "tags.csv"), "--calibrate",
                                    str(root / "tags.csv")], []),
            "--ray-stall-timeout": (["--ray", "auto"], None), "--ray-actors": (["--ray", "auto"], None)},
            "stops": {"zsclip.tasks.evaluate.evaluate": "stop", "zsclip.tasks.multilabel.evaluate_multilabel": "stop",
                      "zsclip.tasks.retrieval.evaluate_retrieval": "stop", "zsclip.cli.eval._select_templates": "stop",
                      "zsclip.encoders.resolve.resolve_model": "fake", "zsclip.cli.eval.check_writable": "spy",
                      "zsclip.cli.eval._check_report_folder": "spy"}},
        "embed": {"base": [tree, "-o", str(tmp / "e.zse")], "needs": {
            "--labels-file": (["--labelled"], None),
            "--ray-stall-timeout": (["--ray", "auto"], None), "--ray-actors": (["--ray", "auto"], None)},
            "stops": {"zsclip.cli.embed._open_store": lambda rec: rec.record("_open_store", (None, SimpleNamespace())),
                      "zsclip.store.embed": "stop", "zsclip.cluster.tasks.embed_on_ray": "stop"}},
        "index": {"base": [str(tmp / "s.zse")], "needs": {},
                  "stops": {"zsclip.tasks.indexing.index_store": "stop"}},
        "dedup": {"base": [str(tmp / "s.zse")], "needs": {},
                  "stops": {"zsclip.tasks.dedup.find_duplicates": "stop"}},
        "search": {"base": [tree, "red"], "needs": {
            "--image": ([], [tree]),
            "--ray-stall-timeout": (["--ray", "auto"], None), "--ray-actors": (["--ray", "auto"], None)},
            "stops": {"zsclip.tasks.search.search": "stop"}},
        "adapt": {"base": ["--data", tree, "-o", str(tmp / "a.zsc")], "needs": {
            "--steps": (["--method", "finetune", "-o", str(tmp / "tuned")], ["--data", tree]),
            "--lr": (["--method", "finetune", "-o", str(tmp / "tuned")], ["--data", tree]),
            "--sweep-alpha": (["--eval", tree], None), "--report": (["--eval", tree], None)},
            "stops": {"zsclip.load_model": "fake", "zsclip.encoders.pick.with_runtime": "fake",
                      "zsclip.adapt.features.encode_collection": lambda rec: rec.record(
                          "encode_collection", lambda *a, **k: FakePool(rec)),
                      "zsclip.adapt.features.check_shots": "fake",
                      "zsclip.ZeroShotClassifier.build": "fake",
                      "zsclip.cli.adapt._head": "stop", "zsclip.cli.adapt._finetune": "stop",
                      "zsclip.cli.eval._check_report_folder": "spy"}},
        "explain": {"base": [*picture, *flat], "needs": {
            "--labels-file": ([], picture), "--classifier": ([], picture), "--labels-tree": ([], picture),
            "--tree-mode": (["--labels-tree", str(root / "labels.yaml")], picture),
            "--beam": (["--labels-tree", str(root / "labels.yaml"), "--tree-mode", "top-down"], picture),
            "--tpr": (["--reject-calibrate", tree], None), "--reject-score": (["--reject", "0.37"], None),
            "--reject-label": (["--reject", "0.37"], None), "--multi-score": (["--multi-label"], None),
            "--threshold": (["--multi-label"], None), "--calibrate": (["--multi-label"], None),
            "--target-precision": (["--multi-label", "--calibrate", str(root / "tags.csv")], None),
            "--ray-stall-timeout": (["--ray", "auto"], None), "--ray-actors": (["--ray", "auto"], None)},
            "stops": {"zsclip.tasks.explain.explain": "stop"}},
        "sort": {"base": [*into, *flat], "needs": {
            "--labels-file": ([], into), "--classifier": ([], into), "--labels-tree": ([], into),
            "--tree-mode": (["--labels-tree", str(root / "labels.yaml")], into),
            "--beam": (["--labels-tree", str(root / "labels.yaml"), "--tree-mode", "top-down"], into),
            "--accept-precision": (["-c", str(root / "calibrated.zsc")], into[:-2]),
            "--tpr": (["--reject-calibrate", tree], None), "--reject-score": (["--reject", "0.37"], None),
            "--reject-label": (["--reject", "0.37"], None),
            "--ray-stall-timeout": (["--ray", "auto"], None), "--ray-actors": (["--ray", "auto"], None)},
            # past the plan (a stand-in job) to the sorter, which gets the folder, threshold and --files
            "stops": {"zsclip.job.plan": lambda rec: rec.record("plan", FakeJob()),
                      "zsclip.outputs.labelling.LabelSpace.of": "fake",
                      "zsclip.tasks.sort.accept_threshold": "fake", "zsclip.tasks.sort.Sorter": "stop"}},
        "compact": {"base": [str(tmp / "c.zse")], "needs": {},
                    "stops": {"zsclip.store.store.EmbeddingStore.open": "fake",
                              "zsclip.store.compact.compact": "stop"}},
        "calibrate": {"base": ["--data", tree, "-o", str(tmp / "cal.zsc")], "needs": {
            "--ray-stall-timeout": (["--ray", "auto"], None), "--ray-actors": (["--ray", "auto"], None)},
            "stops": {"zsclip.tasks.calibrate.calibrate": "stop"}},
        "serve": {"base": [], "needs": {  # Label Studio's two options go together
            "--label-studio-token": (["--label-studio-url", "http://ls.example:8080"], None),
            "--label-studio-url": (["--label-studio-token", "token-x"], None)},
                  "stops": {"zsclip.cli.serve.bind_listener": lambda rec: rec.record(
                      "bind_listener", SimpleNamespace(close=lambda: None)),
                      "zsclip.cli.serve._load": lambda rec: rec.record(
                          "_load", SimpleNamespace(device=SimpleNamespace(type="cpu"))),
                      "zsclip.cli.serve._forward_threads": "fake", "zsclip.cli.serve._on_runtime": "fake",
                      "zsclip.cli.serve._run": "stop"}},
    }


#: what an option needs beside it in every command that has it (unless the command's own ``needs`` says otherwise)
COMMON_NEEDS = {"--calibration-images": (["--runtime", "onnxruntime", "--precision", "int8"], None)}

#: options refused where the probe gives them, with words of the one line they get
REFUSED = {
    ("embed", "--cache-dir"): "classifier", ("embed", "--no-cache"): "classifier",  # embed builds none
    ("classify", "--per-video"): "no videos",  # the probe's inputs are photos (tests/test_video.py has videos)
    ("sort", "--per-video"): "no videos", ("embed", "--reembed"): "no video",  # likewise
    ("sort", "--segment"): "add --per-video",  # sort places whole files: clips only pooled per video
}
#: honoured, but not before the stops: probed by what they do (tests named beside them)
ELSEWHERE = {
    ("models", "--all"): "test_models_options_are_honoured",
    ("models", "--cache-dir"): "test_models_options_are_honoured",
}


#: task modules that bind library names (``plan``, ...) when first imported: imported before any stop is patched,
#: so a stand-in never outlives its probe inside a module that a later test uses
BINDING_MODULES = ("classify", "search", "explain", "evaluate", "multilabel", "retrieval")


def _run(command: str, args: list[str], spec: dict, monkeypatch) -> tuple[Recorder, object]:
    import importlib

    for name in BINDING_MODULES:
        importlib.import_module(f"zsclip.tasks.{name}")
    recorder = Recorder()
    with monkeypatch.context() as patch:
        for target, how in spec["stops"].items():
            module, _, name = target.rpartition(".")
            owner = _resolve(module)
            fake = (recorder.stop(name) if how == "stop" else recorder.record(name) if how == "fake"
                    else recorder.record(name, getattr(owner, name)) if how == "spy" else how(recorder))
            patch.setattr(owner, name, fake, raising=False)
        result = CliRunner().invoke(main, [command, *args])
    return recorder, result


def _resolve(dotted: str):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            owner = getattr(owner, attribute)
        return owner
    raise ImportError(dotted)


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]


@pytest.mark.parametrize("name", [n for n in main.commands if n != "models"])
def test_every_option_reaches_the_library_or_is_refused_in_one_line(name, world, tmp_path, monkeypatch):
    if name == "serve":
        pytest.importorskip("fastapi")
    monkeypatch.chdir(tmp_path)
    values = _values(world, tmp_path)
    spec = _commands(world, tmp_path)[name]
    baseline_cache: dict[tuple, list] = {}
    problems = []
    for option in _options(main.commands[name]):
        long = max(option.opts, key=len)
        if (name, long) in ELSEWHERE or option.required:  # a required option is in every run
            continue
        if long not in values and not isinstance(PER_COMMAND.get((name, long)), list):
            problems.append(f"{long}: no probe value (add one to _values)")
            continue
        named = PER_COMMAND.get((name, long))
        value = (values[long] if named is None else named if isinstance(named, list)
                 else [str(world["root"] / named.removeprefix("world:")) if named.startswith("world:")
                       else str(tmp_path / named)])
        given = [long, *value] if not option.is_flag else [long]
        needs, base = spec["needs"].get(long, COMMON_NEEDS.get(long, ([], None)))
        before = (base if base is not None else spec["base"]) + needs
        if (name, long) in REFUSED:
            _, result = _run(name, before + given, spec, monkeypatch)
            lines = result.stderr.strip().splitlines()
            if result.exit_code != 2 or len(lines) != 1 or REFUSED[(name, long)] not in lines[0]:
                problems.append(f"{long}: should be refused in one line, got {result.exit_code}: {result.output!r}")
            continue
        key = tuple(before)
        if key not in baseline_cache:
            recorder, result = _run(name, before, spec, monkeypatch)
            if not recorder.stopped:  # an alternative to the base's own (--labels-file for --labels): vs the base
                recorder, result = _run(name, spec["base"], spec, monkeypatch)
            assert recorder.stopped, f"zsclip {name} {' '.join(before)}: {result.output}"
            baseline_cache[key] = describe(recorder.calls)
        recorder, result = _run(name, before + given, spec, monkeypatch)
        if not recorder.stopped:
            problems.append(f"{long}: refused or failed ({result.exit_code}): {result.output.strip()[:300]}")
        elif describe(recorder.calls) == baseline_cache[key]:
            problems.append(f"{long}: silently ignored (nothing reached the library changed)")
    assert not problems, f"zsclip {name}:\n  " + "\n  ".join(problems)


def test_models_options_are_honoured(tmp_path, monkeypatch):
    """`zsclip models`: --cache-dir is the folder listed, --all lists every registry model."""
    import zsclip

    cache = tmp_path / "elsewhere"
    cache.mkdir()
    import torch

    zsclip.ZeroShotClassifier(torch.eye(4)[:, :2], ["red", "blue"], [["red"], ["blue"]], 100.0, None,
                              {"model": "demo"}).save(cache / "abc.zsc")
    short = CliRunner().invoke(main, ["models"])
    full = CliRunner().invoke(main, ["models", "--all", "--cache-dir", str(cache)])
    assert short.exit_code == full.exit_code == 0, (short.output, full.output)
    assert len(full.stdout.splitlines()) > len(short.stdout.splitlines()) + 10
    assert f"cached classifiers in {cache}: 1" in full.stdout and "abc.zsc" in full.stdout
    assert str(cache) not in short.stdout
