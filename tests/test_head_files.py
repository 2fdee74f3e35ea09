"""Classifier files of every registered head: a tampered file is one line naming it, never a
traceback and never NaN probabilities (issue 22, class 11)."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import zsclip
from zsclip.classifier.tip_adapter import TipAdapterClassifier
from zsclip.cli import main
from zsclip.errors import ClassifierFileError
from zsclip.heads import load_head_file
from zsclip.hierarchy import TreeClassifier, parse_tree

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    demo = zsclip.load_model("demo")
    root = tmp_path_factory.mktemp("heads")
    flat = zsclip.ZeroShotClassifier.build(demo, ["red star", "blue ring", "green circle"], "photo", cache=False)
    tip = TipAdapterClassifier(flat.weights, flat.classnames, flat.synonyms, flat.logit_scale, None, flat.provenance,
                               cache_keys=torch.nn.functional.normalize(torch.randn(6, flat.weights.shape[0]), dim=1),
                               cache_values=torch.tensor([0, 1, 2, 0, 1, 2]), alpha=1.0, beta=2.0)
    tip.save(root / "tip.zsc")
    tree = parse_tree("shapes:\n  star: [red star]\n  ring: [blue ring]\n", "yaml")
    TreeClassifier.build(demo, tree, "photo", cache=False).save(root / "tree.zsct")
    return root


def _tamper(source, target, metadata_change=None, tensor_change=None):
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["zsclip"])
    tensors = load_file(str(source))
    if metadata_change:
        metadata_change(metadata)
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, str(target), metadata={"zsclip": json.dumps(metadata)})
    return target


TAMPERING = [
    ("tip.zsc", lambda m: m["tip_adapter"].update(alpha="a lot"), None, "tip_adapter.alpha"),
    ("tip.zsc", lambda m: m["tip_adapter"].update(alpha=float("nan")), None, "tip_adapter.alpha"),
    ("tip.zsc", lambda m: m.update(tip_adapter=[1, 2]), None, "tip_adapter.alpha"),
    ("tip.zsc", lambda m: m.pop("tip_adapter"), None, "tip_adapter.alpha"),
    ("tip.zsc", None, lambda t: t.update(cache_keys=t["cache_keys"] * float("nan")), "NaN"),
    ("tip.zsc", None, lambda t: t.update(cache_values=torch.tensor([0, 1, 9, 0, 1, 2])), "do not fit"),
    ("tree.zsct", lambda m: m.update(logit_scale="big"), None, "logit_scale"),
    ("tree.zsct", lambda m: m.update(logit_bias=[1]), None, "logit_bias"),
    ("tree.zsct", None, lambda t: t.update(weights=t["weights"] * float("inf")), "NaN or infinite"),
    ("tree.zsct", lambda m: m.update(tree=5), None, "tree"),
    ("tree.zsct", lambda m: m.update(format="zsclip-banana/9"), None, "unsupported classifier format"),
]


@pytest.mark.parametrize("name,metadata_change,tensor_change,message", TAMPERING)
def test_a_tampered_head_file_is_one_line_naming_it(files, tmp_path, name, metadata_change, tensor_change, message):
    bad = _tamper(files / name, tmp_path / f"bad-{name}", metadata_change, tensor_change)
    with pytest.raises(ClassifierFileError, match=message) as caught:
        load_head_file(bad)
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)
    result = CliRunner().invoke(main, ["classify", str(EXAMPLES), "--classifier", str(bad), "--model", "demo"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("zsclip: error:")]
    assert len(errors) == 1 and bad.name in errors[0], result.output


def test_good_head_files_load_as_their_kind(files):
    assert isinstance(load_head_file(files / "tip.zsc"), TipAdapterClassifier)
    assert isinstance(load_head_file(files / "tree.zsct"), TreeClassifier)
