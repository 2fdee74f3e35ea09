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


@pytest.mark.slow  # zsclip processes and a server (torch and the model: seconds each)
def test_cli_python_and_http_score_an_image_alike_on_a_bf16_cpu(bf16_cpu, image, tmp_path):
    httpx = pytest.importorskip("httpx")
    from test_serve import TIMEOUT, _start, _stop

    # the shim works: a fresh interpreter's torch reports native bf16 (else this test proves nothing)
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cpu._is_avx512_bf16_supported())"],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert done.stdout.strip() == "True", done.stderr
    cli = _cli_scores(image, tmp_path)
    encoder = zsclip.load_model("demo")  # the Python entry: load_model, build, predict, all at "auto"
    python = dict(zsclip.ZeroShotClassifier.build(encoder, LABELS, "photo").predict(str(image), top_k=4)[0])
    assert set(cli) == set(python) == set(LABELS)
    assert all(abs(cli[label] - python[label]) < 1e-6 for label in LABELS)  # the CSV's six decimals
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
    assert info["precision"] == "fp32"  # what auto resolved to, reported


def test_eval_reports_the_precision_auto_resolved_to(bf16_cpu, image, tmp_path):
    for name in LABELS:  # a labelled folder of the classes (the image in each: only the record is read here)
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / image.name).write_bytes(image.read_bytes())
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "data"), "-m", "demo", "-t", "photo", "-j",
                                       "0", "-o", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text())["precision"] == "fp32"
