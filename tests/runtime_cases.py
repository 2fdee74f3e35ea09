"""Both towers on an inference runtime (issue 36): `--runtime onnxruntime|openvino|auto`.

fp32 on a runtime equals eager PyTorch (max |difference| of normalised embeddings <= 1e-5) per tower and
per runtime, on the demo model and tiny models of each family, at several batch sizes and prompt lengths
(the text graph keeps the padding-free batching); graphs are exported once per model fingerprint and
reused; the commands, the service and Ray's actor reach the runtime; int8 only behind the agreement gate;
combinations that cannot apply are refused while parsing, in one line.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import zsclip
from zsclip.cli import main
from zsclip.errors import ZsclipWarning
from zsclip.runtimes import GRAPH_RUNTIMES, INSTALL_HINT, cpu_has_bf16, installed

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOLERANCE = 1e-5
PROMPTS = ["a", "a photo of a red circle.", "x y z", "a photo of a very large green triangle in the middle of a field.",
           "blue star", "a bad photo of a small purple cross on a white background, seen from far away."]


def _need(runtime: str) -> None:
    if not installed(runtime):
        pytest.skip(f"{runtime} not installed ({INSTALL_HINT})")


# --- refused while parsing, in one line (quick) --------------------------------------------------------
def _refusal(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("extra, words", [
    (["--runtime", "openvino", "--device", "cuda"], "runs on the CPU, not on device cuda"),
    (["--runtime", "onnxruntime", "--precision", "fp16"], "not fp16"),
    (["--runtime", "onnxruntime", "--precision", "bf16"], "onnxruntime has no bf16 kernels"),
])
def test_combinations_that_cannot_apply_are_refused_while_parsing(extra, words, tmp_path):
    _need(extra[1])
    line = _refusal(["classify", str(tmp_path), "--labels", "a,b", "--model", "demo", *extra])
    assert words in line


def test_bf16_on_a_cpu_without_it_is_refused_in_one_line(tmp_path):
    if cpu_has_bf16():
        pytest.skip("this CPU has native bf16")
    _need("openvino")
    line = _refusal(["embed", str(tmp_path), "-o", str(tmp_path / "s.zse"), "--model", "demo", "--runtime", "openvino",
                     "--precision", "bf16"])
    assert "no native bf16" in line and "--precision fp32" in line


def test_a_missing_runtime_names_the_extra_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    for args in (["classify", str(tmp_path), "--labels", "a,b"], ["build", "--labels", "a,b", "-o", "c.zsc"]):
        line = _refusal([*args, "--model", "demo", "--runtime", "openvino"])
        assert "openvino is not installed" in line and 'pip install "zsclip[runtime]"' in line


def test_finetuning_is_refused_on_a_runtime(tmp_path):
    _need("onnxruntime")
    line = _refusal(["adapt", "--data", str(tmp_path), "-o", str(tmp_path / "tuned"), "--method", "finetune",
                     "--runtime", "onnxruntime"])
    assert "--method finetune trains the image tower" in line


def test_the_service_refuses_a_runtime_on_a_gpu():
    pytest.importorskip("fastapi")
    _need("openvino")
    result = CliRunner().invoke(main, ["serve", "--model", "demo", "--runtime", "openvino", "--device", "cuda"])
    assert result.exit_code != 0 and "runs on the CPU" in result.output


# --- export, parity, cache (slow: each model's towers are exported once per module) ---------------------
@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture
def shared_cache(isolated_cache, graph_cache, monkeypatch) -> Path:
    """One cache for the module: each model's graphs are exported once, not per test."""
    monkeypatch.setenv("ZSCLIP_CACHE_DIR", str(graph_cache))
    return graph_cache


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, str]:
    from zsclip.testing.tiny_hf import save_tiny_clip, save_tiny_siglip

    root = tmp_path_factory.mktemp("hf")
    return {"clip": str(save_tiny_clip(root / "clip")), "siglip": str(save_tiny_siglip(root / "siglip"))}


def _model(kind: str, tiny_clip_dir: str, tiny_bidir_dir: str, hf_dirs: dict[str, str]) -> zsclip.Encoder:
    name = {"demo": "demo", "open_clip": tiny_clip_dir, "open_clip-bidirectional": tiny_bidir_dir,
            "hf-clip": f"transformers:{hf_dirs['clip']}", "hf-siglip": f"transformers:{hf_dirs['siglip']}"}[kind]
    return zsclip.load_model(name, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["demo", "open_clip", "hf-clip", "hf-siglip"])
def test_fp32_on_each_runtime_equals_eager_per_tower(kind, shared_cache, tiny_clip_dir, tiny_bidir_dir, hf_dirs):
    """Each model is exported once (both runtimes read the same ONNX graphs); then, per runtime and tower,
    image batches of 1, 3 and 8 and prompts of many lengths in batches of 1, 2 and all (each batch cut to its
    longest prompt where the tower allows: open_clip and HF CLIP; SigLIP runs the full padded context)."""
    from zsclip.encoders.runtime import RuntimeEncoder

    eager = _model(kind, tiny_clip_dir, tiny_bidir_dir, hf_dirs)
    side = eager.image_size or 224
    images = [torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(batch)) for batch in (1, 3, 8)]
    expected_images = [eager.encode_images(pixels, "fp32") for pixels in images]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZsclipWarning)  # SigLIP's 64-token context cuts the longest prompt
        expected_text = {size: eager.encode_text(PROMPTS, "fp32", batch_size=size) for size in (1, 2, 256)}
        ran = []
        for runtime in GRAPH_RUNTIMES:
            if not installed(runtime):
                continue
            graph = RuntimeEncoder(eager, runtime)
            for pixels, expected in zip(images, expected_images, strict=True):
                difference = (graph.encode_images(pixels, "fp32") - expected).abs().max()
                assert difference <= TOLERANCE, f"{runtime} image tower, batch {len(pixels)}: {difference}"
            for size, expected in expected_text.items():
                difference = (graph.encode_text(PROMPTS, "fp32", batch_size=size) - expected).abs().max()
                assert difference <= TOLERANCE, f"{runtime} text tower, batches of {size}: {difference}"
            assert graph.fingerprint == eager.fingerprint  # classifiers and stores are shared with eager runs
            ran.append(runtime)
    if not ran:
        pytest.skip(f"no runtime installed ({INSTALL_HINT})")


@pytest.mark.slow
def test_graphs_are_exported_once_and_reused_by_the_next_run(shared_cache, tiny_clip_dir, monkeypatch, tmp_path):
    _need("onnxruntime")
    from zsclip.encoders import graphs

    folder = graphs.model_dir(zsclip.load_model(tiny_clip_dir, device="cpu"))
    assert folder.is_relative_to(shared_cache)
    graphs.remove_model(zsclip.load_model(tiny_clip_dir, device="cpu"))  # exported by an earlier test: afresh
    args = ["classify", str(EXAMPLES), "--labels-file", str(EXAMPLES / "labels.txt"), "--model", tiny_clip_dir,
            "--device", "cpu", "--runtime", "onnxruntime", "-j", "0"]
    first = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "first.csv")])
    assert first.exit_code == 0, first.output
    files = {path: path.stat().st_mtime_ns for path in folder.rglob("model.onnx")}
    assert sorted(path.parent.name for path in files) == ["image", "text"]  # both towers, exported by this run

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(graphs, "export_tower", no_export)
    second = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "second.csv")])
    assert second.exit_code == 0, second.output
    assert {path: path.stat().st_mtime_ns for path in files} == files
    assert _rows(tmp_path / "first.csv") == _rows(tmp_path / "second.csv")


def _embeddings(store: Path) -> dict:
    """path -> stored embedding, read from the shards the store's manifest lists (as a user would, with pyarrow)."""
    import numpy as np
    import pyarrow.parquet as pq

    from zsclip.store.format import MANIFEST

    vectors = {}
    for shard in json.loads((store / MANIFEST).read_text())["shards"]:
        for row in pq.read_table(store / shard["file"], columns=["path", "embedding"]).to_pylist():
            vectors[row["path"]] = np.asarray(row["embedding"], dtype=np.float32)
    return vectors


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _close_rows(a: list[dict], b: list[dict]) -> None:
    assert [row["path"] for row in a] == [row["path"] for row in b]
    for left, right in zip(a, b, strict=True):
        assert left["label"] == right["label"]
        assert abs(float(left["score"]) - float(right["score"])) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("runtime", GRAPH_RUNTIMES)
def test_classify_embed_and_build_on_a_runtime_give_eager_answers(runtime, shared_cache, tmp_path):
    _need(runtime)
    import numpy as np

    labels = ["--labels-file", str(EXAMPLES / "labels.txt")]
    base = ["--model", "demo", "--device", "cpu"]
    results = {}
    for chosen in ("torch", runtime):
        out = tmp_path / chosen
        out.mkdir()
        for args in (["classify", str(EXAMPLES), *labels, "-o", str(out / "rows.csv"), "-j", "0"],
                     ["embed", str(EXAMPLES), "-o", str(out / "store.zse"), "-j", "0"],
                     ["build", *labels, "-o", str(out / "c.zsc"), "--no-cache"]):
            result = CliRunner().invoke(main, [*args, *base, "--runtime", chosen])
            assert result.exit_code == 0, result.output
        results[chosen] = (_rows(out / "rows.csv"), _embeddings(out / "store.zse"),
                           zsclip.ZeroShotClassifier.load(out / "c.zsc"))
    _close_rows(results["torch"][0], results[runtime][0])
    eager, graph = results["torch"][1], results[runtime][1]
    assert sorted(eager) == sorted(graph) and len(eager) == len(list(EXAMPLES.glob("*.png")))
    assert max(float(np.abs(eager[path] - graph[path]).max()) for path in eager) <= TOLERANCE
    weights = [np.asarray(results[name][2].weights) for name in ("torch", runtime)]
    assert np.abs(weights[0] - weights[1]).max() <= TOLERANCE


@pytest.mark.slow
def test_int8_is_used_only_behind_the_gate_and_its_figure_is_kept(shared_cache, tmp_path, monkeypatch):
    _need("openvino")
    from zsclip.encoders import gate

    args = ["classify", str(EXAMPLES), "--labels-file", str(EXAMPLES / "labels.txt"), "--model", "demo",
            "--device", "cpu", "--runtime", "openvino", "--precision", "int8", "-j", "0"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "int8.csv")])
    assert result.exit_code == 0, result.output
    notes = list((shared_cache / "graphs").rglob("openvino-int8.json"))
    assert len(notes) == 1
    record = json.loads(notes[0].read_text())
    assert record["images"] == gate.HELD_OUT_IMAGES and record["agreement"] >= gate.AGREEMENT_FLOOR
    # the labels agree with fp32 on the examples too
    fp32 = CliRunner().invoke(main, [*args[:-4], "-j", "0", "-o", str(tmp_path / "fp32.csv")])
    assert fp32.exit_code == 0, fp32.output
    assert [r["label"] for r in _rows(tmp_path / "int8.csv")] == [r["label"] for r in _rows(tmp_path / "fp32.csv")]
    # below the floor: refused in one line with the kept figure (not measured again)
    monkeypatch.setattr(gate, "AGREEMENT_FLOOR", 1.01)
    monkeypatch.setattr(gate, "measure", lambda *a, **k: pytest.fail("measured again"))
    refused = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "no.csv")])
    lines = refused.stderr.strip().splitlines()
    assert refused.exit_code != 0 and len(lines) == 1, refused.output
    assert f"{record['agreement']:.1%} of {record['images']} held-out images" in lines[0]
    assert not (tmp_path / "no.csv").exists()


@pytest.mark.slow
def test_auto_measures_once_and_says_what_it_picked(shared_cache, tiny_clip_dir, tmp_path):
    args = ["build", "--labels", "red,blue", "--model", tiny_clip_dir, "--device", "cpu", "--runtime", "auto",
            "--no-cache"]
    first = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a.zsc")])
    assert first.exit_code == 0, first.output
    said = [line for line in first.stderr.splitlines() if line.startswith("zsclip: runtime auto:")]
    assert len(said) == 1 and "measured now" in said[0]
    picked = said[0].split("runtime auto: ")[1].split()[0]
    assert picked in ("torch", *[r for r in GRAPH_RUNTIMES if installed(r)])
    second = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b.zsc")])
    assert second.exit_code == 0, second.output
    again = [line for line in second.stderr.splitlines() if line.startswith("zsclip: runtime auto:")]
    assert len(again) == 1 and "as measured before" in again[0] and f"auto: {picked} " in again[0]


@pytest.mark.slow
def test_the_ray_actor_loads_the_model_on_the_same_runtime(shared_cache):
    _need("onnxruntime")
    from zsclip.cluster.pipeline import EncodeActor, ModelSpec
    from zsclip.encoders.resolve import resolve_model
    from zsclip.options import RunOptions

    options = RunOptions(device="cpu", runtime="onnxruntime")
    driver = resolve_model("demo", None, options)
    spec = ModelSpec.of(driver, options)
    assert spec.runtime == "onnxruntime"
    ray = pytest.importorskip("ray")
    connected = ray.is_initialized()
    actor = EncodeActor(spec)  # the class Ray runs remotely, built here in-process
    assert ray.is_initialized() == connected  # building it outside Ray starts no Ray (a stray one ended the suite)
    assert getattr(actor.encoder, "runtime", None) == "onnxruntime"
    assert actor.encoder.fingerprint == driver.fingerprint


@pytest.mark.slow
def test_the_service_serves_on_the_runtime(shared_cache):
    _need("onnxruntime")
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from test_serve import LABELS, _files, _start, _stop

    names = [p.name for p in sorted(EXAMPLES.glob("*.png"))]
    answers = {}
    for runtime in ("torch", "onnxruntime"):
        process, url = _start("--device", "cpu", "--runtime", runtime)
        try:
            info = httpx.get(f"{url}/v1/info", timeout=30).json()
            assert info["runtime"] == runtime
            response = httpx.post(f"{url}/v1/classify", files=_files(*names), data={"labels": LABELS}, timeout=60)
            assert response.status_code == 200, response.text
            answers[runtime] = response.json()["results"]
        finally:
            _stop(process)
    for eager, graph in zip(answers["torch"], answers["onnxruntime"], strict=True):
        assert eager["filename"] == graph["filename"]
        assert [p["label"] for p in eager["predictions"]] == [p["label"] for p in graph["predictions"]]
        for a, b in zip(eager["predictions"], graph["predictions"], strict=True):
            assert abs(a["score"] - b["score"]) <= 1e-4
    assert os.environ["ZSCLIP_CACHE_DIR"] == str(shared_cache)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_the_runtime_runs_with_torchs_thread_budget(threads, shared_cache, tiny_clip_dir, monkeypatch):
    """A comparison with eager PyTorch in the same process gives both the same number of threads."""
    _need("onnxruntime")
    from zsclip.encoders.runtime import RuntimeEncoder

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        graph = RuntimeEncoder(zsclip.load_model(tiny_clip_dir, device="cpu"), "onnxruntime")
        seen = []
        load = graph._engine.load
        monkeypatch.setattr(graph._engine, "load", lambda path, at, n: seen.append(n) or load(path, at, n))
        graph.prepare("fp32")
    finally:
        torch.set_num_threads(before)
    assert seen == [threads, threads]  # the image and the text graph
