"""One meaning of ``--precision auto`` at every entry point (issue 32 item 10).

On a CPU with native bf16 the CLI and Python used to resolve auto to bf16 while ``serve`` used fp32, so
one image got other scores over HTTP. Here every process is made to see such a CPU (torch's own bf16
probes answer yes, through a ``sitecustomize`` on the subprocesses' path and a monkeypatch in this one):
the CLI, the Python API and the service must give the same scores, and report the same precision."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import zsclip
from zsclip.cli import main

pytestmark = pytest.mark.slow  # each case starts zsclip processes (torch and the model: seconds each)

#: a green star is none of these: scores spread over the labels (bf16 moves them by about 1e-3), not saturated
LABELS = ["green circle", "green square", "green ring", "green triangle"]
NATIVE_BF16 = """
import torch
torch.cpu._is_avx512_bf16_supported = lambda: True
torch.cpu._is_amx_tile_supported = lambda: True
"""


@pytest.fixture
def bf16_cpu(tmp_path, monkeypatch):
    """This process and every zsclip subprocess see a CPU that reports native bf16 to torch."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(NATIVE_BF16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shim), *sys.path]))
    return shim


@pytest.fixture
def image(tmp_path):
    from zsclip import shapes

    path = tmp_path / "one.png"
    shapes.render(shapes.ShapeSpec("green", "star", "white", 0.3, (0.5, 0.5), 0.0), size=96).save(path)
    return path


def _cli_scores(image, tmp_path) -> dict[str, float]:
    out = tmp_path / "cli.csv"
    done = subprocess.run([sys.executable, "-m", "zsclip", "classify", str(image), "--labels", ",".join(LABELS),
                           "-m", "demo", "-t", "photo", "-k", "4", "-j", "0", "-o", str(out)],
                          capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as handle:
        header, values = list(csv.reader(handle, strict=True))
    labels = [values[i] for i, name in enumerate(header) if name.startswith("label")]
    scores = [float(values[i]) for i, name in enumerate(header) if name.startswith("score")]
    return dict(zip(labels, scores, strict=True))


def test_sitecustomize_reaches_the_subprocesses(bf16_cpu):
    """The shim works: a fresh interpreter's torch reports native bf16 (else the tests below prove nothing)."""
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cpu._is_avx512_bf16_supported())"],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert done.stdout.strip() == "True", done.stderr


def test_cli_python_and_eval_resolve_auto_alike_on_a_bf16_cpu(bf16_cpu, image, tmp_path):
    cli = _cli_scores(image, tmp_path)
    encoder = zsclip.load_model("demo")  # the Python entry: load_model, build, predict, all at "auto"
    row = zsclip.ZeroShotClassifier.build(encoder, LABELS, "photo").predict(str(image), top_k=4)[0]
    python = dict(row)  # TopK: (label, probability) pairs
    assert set(cli) == set(python) == set(LABELS)
    assert all(abs(cli[label] - python[label]) < 1e-6 for label in LABELS)  # the CSV's six decimals
    # and what it resolved to is reported: fp32, the same for images and for a store answered without a model
    for name in LABELS:  # a labelled folder of the classes (the image in each: only the record is read here)
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / image.name).write_bytes(image.read_bytes())
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "data"), "-m", "demo", "-t", "photo", "-j",
                                       "0", "-o", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text())["precision"] == "fp32"


@pytest.mark.slow
def test_http_scores_equal_the_cli_and_python_on_a_bf16_cpu(bf16_cpu, image, tmp_path):
    httpx = pytest.importorskip("httpx")
    from test_serve import TIMEOUT, _start, _stop

    cli = _cli_scores(image, tmp_path)
    process, url = _start("--device", "cpu")
    try:
        response = httpx.post(f"{url}/v1/classify", data={"labels": ",".join(LABELS), "top_k": "4"},
                              files=[("images", (image.name, image.read_bytes(), "image/png"))], timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        info = httpx.get(f"{url}/v1/info", timeout=TIMEOUT).json()
    finally:
        _stop(process)
    http = {entry["label"]: entry["score"] for entry in response.json()["results"][0]["predictions"]}
    assert set(http) == set(LABELS)
    assert all(abs(http[label] - cli[label]) < 1e-6 for label in LABELS), (http, cli)
    assert info["precision"] == "fp32"
