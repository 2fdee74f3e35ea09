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
def test_graphs_are_exported_once_and_reused_by_the_next_run(shared_cache, tiny_clip_dir, monkeypatch, tmp_path):
    """First in the module, so its export of the tiny model is the one the parity test reuses (one export of
    ~14 s, not two); run on its own or later, it removes the model's graphs first and exports them afresh."""
    _need("onnxruntime")
    from zsclip.encoders import graphs

    folder = graphs.model_dir(zsclip.load_model(tiny_clip_dir, device="cpu"))
    assert folder.is_relative_to(shared_cache)
    graphs.remove_model(zsclip.load_model(tiny_clip_dir, device="cpu"))  # when run after others: afresh
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


def _embeddings(store: Path) -> dict:
    """path -> stored embedding, read from the shards the store's manifest lists (as a user would, with pyarrow)."""
    import numpy as np
    import pyarrow.parquet as pq

    from zsclip.store.format import MANIFEST

    vectors = {}
    manifest = json.loads((store / MANIFEST).read_text())
    for shard in manifest["shards"]:
        for row in pq.read_table(store / shard["file"], columns=["path", "embedding"]).to_pylist():
            stored = row["embedding"]  # packed: the values little-endian (store/format.py)
            values = np.frombuffer(stored, {"float16": "<f2", "float32": "<f4"}[manifest["dtype"]]) \
                if isinstance(stored, bytes) else stored
            vectors[row["path"]] = np.asarray(values, dtype=np.float32)
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


# --- int8 calibrated on the user's images (--calibration-images): full post-training quantisation ---------
@pytest.mark.parametrize("extra, words", [
    (["--runtime", "openvino"], "--calibration-images calibrates int8 activations, and the precision is auto"),
    (["--runtime", "onnxruntime", "--precision", "fp32"], "and the precision is fp32: add --precision int8"),
    (["--precision", "int8"], "applies to --runtime onnxruntime or openvino"),
    (["--runtime", "auto", "--precision", "int8"], "not --runtime auto: name one of them"),
])
def test_calibration_images_where_they_cannot_apply_are_refused_while_parsing(extra, words, tmp_path):
    _need("openvino")
    _need("onnxruntime")
    for args in (["classify", str(tmp_path), "--labels", "a,b"], ["embed", str(tmp_path), "-o", str(tmp_path / "s")]):
        line = _refusal([*args, "--model", "demo", "--calibration-images", str(EXAMPLES), *extra])
        assert words in line


@pytest.mark.parametrize("make, words", [
    (lambda root: root / "missing", "no such file or directory"),
    (lambda root: root, "no image files there"),
])
def test_calibration_images_that_are_not_there_are_refused_in_one_line(make, words, tmp_path):
    _need("openvino")
    (tmp_path / "notes.txt").write_text("not an image")
    line = _refusal(["classify", str(EXAMPLES), "--labels", "a,b", "--model", "demo", "--runtime", "openvino",
                     "--precision", "int8", "--calibration-images", str(make(tmp_path))])
    assert f"--calibration-images {make(tmp_path)}" in line and words in line


def _calibrated_args(runtime: str, calibration, output: Path) -> list[str]:
    return ["classify", str(EXAMPLES), "--labels-file", str(EXAMPLES / "labels.txt"), "--model", "demo", "--device",
            "cpu", "--runtime", runtime, "--precision", "int8", "--calibration-images", str(calibration), "-j", "0",
            "-o", str(output)]


def _loaded_graphs(monkeypatch, runtime: str) -> list[str]:
    """The file names of every graph ``runtime`` loads from now on (recorded, then loaded as usual)."""
    from zsclip.encoders import runtime as module

    engine = module._OnnxRuntime if runtime == "onnxruntime" else module._OpenVino
    seen: list[str] = []
    real = engine.load
    monkeypatch.setattr(engine, "load", lambda self, path, *rest: seen.append(Path(path).name) or
                        real(self, path, *rest))
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("runtime", GRAPH_RUNTIMES)
def test_int8_calibrated_on_the_users_images_passes_the_gate_and_gives_fp32s_answers(runtime, shared_cache, tmp_path,
                                                                                   monkeypatch):
    """The demo model, calibrated on the examples: static int8 (weights and activations) is made, gated on the
    shapes and on the held-out examples, its figure kept beside it, and it is the graph that runs."""
    _need(runtime)
    from zsclip.encoders import gate, ptq

    loaded = _loaded_graphs(monkeypatch, runtime)
    result = CliRunner().invoke(main, _calibrated_args(runtime, EXAMPLES, tmp_path / "int8.csv"))
    assert result.exit_code == 0, result.output
    static = [name for name in loaded if name.startswith(f"{runtime}-int8-static-")]
    assert len(static) == 2, loaded  # the gate's measurement, then the run's own graph
    assert static[0] == static[1]
    notes = list((shared_cache / "graphs").rglob(f"{Path(static[0]).stem}.json"))
    assert len(notes) == 1  # the gate's figure, beside the graph
    record = json.loads(notes[0].read_text())
    images = len(list(EXAMPLES.glob("*.png")))
    held = len([i for i in range(images) if i % ptq.HELD_OUT_EVERY == ptq.HELD_OUT_EVERY - 1])
    assert record["calibration"]["calibration_images"] == images - held
    assert record["calibration"]["held_out_images"] == held
    assert record["images"] == gate.HELD_OUT_IMAGES and record["agreement"] >= gate.AGREEMENT_FLOOR
    assert record["calibration"]["agreement"] >= gate.AGREEMENT_FLOOR
    if runtime == "openvino":  # NNCF's quantizers are in the saved graph: activations are int8 too
        graph = notes[0].with_suffix(".xml").read_text()
        assert graph.count('type="FakeQuantize"') > 10
    else:  # QDQ: activations quantized and dequantized around every MatMul / Conv
        import onnx

        ops = [node.op_type for node in onnx.load(str(notes[0].with_suffix(".onnx"))).graph.node]
        assert ops.count("QuantizeLinear") > 10
    fp32 = CliRunner().invoke(main, [*_calibrated_args(runtime, EXAMPLES, tmp_path / "fp32.csv")[:-8], "-j", "0",
                                     "-o", str(tmp_path / "fp32.csv")])
    assert fp32.exit_code == 0, fp32.output
    ours, theirs = _rows(tmp_path / "int8.csv"), _rows(tmp_path / "fp32.csv")
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    differences = [abs(float(a["score"]) - float(b["score"])) for a, b in zip(ours, theirs, strict=True)]
    # quantised (not fp32's graph), close to fp32: the demo's scale of 100 turns small logit moves into up to
    # ~0.1 of probability (measured: 0.098 on onnxruntime, whose uint8 activations move most)
    assert 0 < max(differences) <= 0.15


@pytest.mark.slow
def test_the_gate_refuses_a_degenerate_calibration_in_one_line(shared_cache, tmp_path):
    """Ten near-black images fix every activation's range near zero: the shapes then saturate, and the gate
    refuses with its figure (measured: 57-66% agreement), writing nothing."""
    _need("onnxruntime")
    from PIL import Image

    folder = tmp_path / "dark"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (64, 64), (i, i, i)).save(folder / f"dark{i}.png")
    result = CliRunner().invoke(main, _calibrated_args("onnxruntime", folder, tmp_path / "no.csv"))
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert "calibrated int8 on onnxruntime agrees with fp32 on" in lines[0] and "below the 99% gate" in lines[0]
    figure = float(lines[0].split("agrees with fp32 on ")[1].split("%")[0]) / 100
    assert figure < 0.99
    from zsclip.encoders import ptq

    calibration = ptq.CalibrationSet(tuple(str(path) for path in folder.glob("*.png")))
    note = next((shared_cache / "graphs").rglob(f"{ptq.graph_name('onnxruntime', calibration.fingerprint)}.json"))
    assert abs(json.loads(note.read_text())["agreement"] - figure) < 0.001  # the figure is kept with the graph
    assert not (tmp_path / "no.csv").exists()


@pytest.mark.slow
def test_the_calibrated_graph_is_keyed_on_the_images_content(shared_cache, tmp_path, monkeypatch):
    """The same images again: the same graph, not quantised again. One image changed under the same name: a new
    graph (and gate) of its own. Held-out calibration images below the floor are refused with their figure."""
    _need("onnxruntime")
    import shutil

    from PIL import Image

    from zsclip.encoders import gate

    folder = tmp_path / "mine"
    shutil.copytree(EXAMPLES, folder)
    first = CliRunner().invoke(main, _calibrated_args("onnxruntime", folder, tmp_path / "a.csv"))
    assert first.exit_code == 0, first.output
    made = {p: p.stat().st_mtime_ns for p in (shared_cache / "graphs").rglob("onnxruntime-int8-static-*.onnx")}
    import onnxruntime.quantization

    with monkeypatch.context() as patched:  # the same images: found by their content, not quantised again
        patched.setattr(onnxruntime.quantization, "quantize_static", lambda *a, **k: pytest.fail("quantised again"))
        again = CliRunner().invoke(main, _calibrated_args("onnxruntime", folder, tmp_path / "b.csv"))
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in (shared_cache / "graphs").rglob("onnxruntime-int8-static-*.onnx")} == made
    image = Image.open(folder / "red_triangle.png").convert("RGB").rotate(90)
    image.save(folder / "red_triangle.png")  # same name, other pixels
    changed = CliRunner().invoke(main, _calibrated_args("onnxruntime", folder, tmp_path / "c.csv"))
    assert changed.exit_code == 0, changed.output
    now = list((shared_cache / "graphs").rglob("onnxruntime-int8-static-*.onnx"))
    assert len(now) == len(made) + 1 and set(made) < set(now)
    # a kept figure below the floor on the held-out calibration images: refused in one line with it
    note = max((shared_cache / "graphs").rglob("onnxruntime-int8-static-*.json"), key=lambda p: p.stat().st_mtime_ns)
    record = json.loads(note.read_text())
    record["calibration"]["agreement"] = 0.5
    note.write_text(json.dumps(record))
    monkeypatch.setattr(gate, "measure", lambda *a, **k: pytest.fail("measured again"))
    refused = CliRunner().invoke(main, _calibrated_args("onnxruntime", folder, tmp_path / "d.csv"))
    lines = refused.stderr.strip().splitlines()
    assert refused.exit_code != 0 and len(lines) == 1, refused.output
    assert f"50.0% of the {record['calibration']['held_out_images']} held-out calibration images" in lines[0]


@pytest.mark.slow
def test_a_store_calibrates_through_its_image_files_or_is_refused(shared_cache, tmp_path):
    """A store keeps embeddings, not pixels: its image files, where still there, calibrate; none left: one line."""
    _need("openvino")
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(EXAMPLES, folder)
    store = tmp_path / "photos.zse"
    embedded = CliRunner().invoke(main, ["embed", str(folder), "-o", str(store), "--model", "demo", "--device", "cpu",
                                         "-j", "0"])
    assert embedded.exit_code == 0, embedded.output
    from zsclip.job.calibration_images import calibration_images

    assert sorted(Path(p).name for p in calibration_images(str(store))) == sorted(p.name for p in
                                                                                   EXAMPLES.glob("*.png"))
    shutil.rmtree(folder)
    line = _refusal(_calibrated_args("openvino", store, tmp_path / "x.csv"))
    assert "a store keeps embeddings, not pixels" in line and "none of the 10 image files" in line


@pytest.mark.slow
def test_a_vision_transformer_is_calibrated_as_one_and_gated(shared_cache, tiny_clip_dir):
    """A tiny open_clip ViT (random weights: no margin between classes) goes through NNCF's transformer recipe;
    the gate measures it and refuses it in one line with its figure, which is kept beside the graph."""
    _need("openvino")
    from zsclip.encoders import ptq
    from zsclip.encoders.runtime import RuntimeEncoder
    from zsclip.errors import InputError

    encoder = zsclip.load_model(tiny_clip_dir, device="cpu")
    assert ptq.is_transformer(encoder) and not ptq.is_transformer(zsclip.load_model("demo", device="cpu"))
    graph = RuntimeEncoder(encoder, "openvino", [str(p) for p in sorted(EXAMPLES.glob("*.png"))])
    try:
        graph.prepare("int8")
        passed = True
    except InputError as error:
        passed = False
        assert "calibrated int8 on openvino agrees with fp32 on" in str(error) and "\n" not in str(error)
    from zsclip.encoders import graphs

    note = graphs.model_dir(encoder) / "image" / f"{graph.int8_name()}.json"
    record = json.loads(note.read_text())
    assert (min(record["agreement"], record["calibration"]["agreement"]) >= 0.99) == passed
    assert note.with_suffix(".xml").read_text().count('type="FakeQuantize"') > 4


def test_the_service_refuses_calibration_images_without_int8():
    pytest.importorskip("fastapi")
    _need("openvino")
    result = CliRunner().invoke(main, ["serve", "--model", "demo", "--runtime", "openvino", "--calibration-images",
                                       str(EXAMPLES)])
    assert result.exit_code != 0 and "--calibration-images calibrates int8 activations" in result.output


@pytest.mark.slow
def test_the_ray_actor_loads_the_same_calibrated_int8(shared_cache):
    """Ray's actors get the calibration images with the runtime, so they run the driver's calibrated graph."""
    _need("onnxruntime")
    pytest.importorskip("ray")
    from zsclip.cluster.pipeline import EncodeActor, ModelSpec
    from zsclip.encoders.resolve import resolve_model
    from zsclip.options import RunOptions

    images = tuple(str(path) for path in sorted(EXAMPLES.glob("*.png")))
    options = RunOptions(device="cpu", runtime="onnxruntime", precision="int8", calibration=images)
    driver = resolve_model("demo", None, options)
    spec = ModelSpec.of(driver, options)
    assert spec.calibration == images
    actor = EncodeActor(spec)
    assert actor.encoder.int8_name() == driver.int8_name() and "-int8-static-" in driver.int8_name()
