"""Confidence a user can act on (issue 34): calibration measures in eval, `zsclip calibrate`, accept-or-review
rows, and the collection-level correction (--transductive), each through the `zsclip` command and read back
as a user would; the measures checked against references computed here (torchmetrics' ECE, torch's NLL)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import zsclip
from zsclip import shapes
from zsclip.calibration.measures import CalibrationMeasures
from zsclip.calibration.transductive import em_prior, sinkhorn_weights
from zsclip.classifier import ZeroShotClassifier
from zsclip.cli import main

FAST = ["--model", "demo", "--precision", "fp32", "-j", "0"]


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Held-out colour-shape pairs (the demo model is unsure of them): a calibration set and a test set."""
    root = tmp_path_factory.mktemp("calibration-world")
    shapes.write_dataset(root / "calib", 8, 31, "held-out", "both", size=32)
    shapes.write_dataset(root / "test", 5, 32, "held-out", "both", size=32)
    return root


@pytest.fixture(scope="module")
def calibrated(world, tmp_path_factory) -> Path:
    """A classifier built from labels with the photo templates and calibrated by `zsclip calibrate`."""
    output = tmp_path_factory.mktemp("calibrated") / "shapes.zsc"
    code, out, err = _run("calibrate", "--data", str(world / "calib" / "manifest.csv"), "--labels-file",
                          str(world / "calib" / "labels.txt"), "--templates", "photo", "-o", str(output), *FAST)
    assert code == 0, err
    assert "temperature" in out and "fitted on 64 images" in out
    return output


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return json.loads(handle.metadata()["zsclip"])


def _reference_logits(world: Path, classifier: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """open_clip's own image tower on the test images, scale * f @ W / T from the file's numbers."""
    from safetensors.numpy import load_file

    encoder = zsclip.load_model("demo", device="cpu")
    metadata = _metadata(classifier)
    weights = torch.from_numpy(load_file(str(classifier))["weights"])
    rows = list(csv.DictReader((world / "test" / "manifest.csv").open()))
    pixels = torch.stack([encoder.preprocess(Image.open(world / "test" / row["path"]).convert("RGB")) for row in rows])
    with torch.no_grad():
        features = encoder.model.encode_image(pixels, normalize=True)
    temperature = (metadata.get("calibration") or {}).get("temperature", 1.0)
    bias = torch.tensor((metadata.get("calibration") or {}).get("bias") or [0.0] * weights.shape[1])
    logits = (metadata["logit_scale"] * features @ weights / temperature + bias.float()).numpy()
    targets = np.array([metadata["classnames"].index(row["label"]) for row in rows])
    return logits, targets, [row["path"] for row in rows]


def test_streamed_measures_equal_reference_implementations():
    from torchmetrics.functional.classification import multiclass_calibration_error

    generator = np.random.default_rng(3)
    logits = generator.normal(size=(500, 7)) * 3
    targets = generator.integers(0, 7, 500)
    logits[np.arange(500), targets] += generator.normal(1.0, 1.0, 500)
    whole, blocks = CalibrationMeasures(), CalibrationMeasures()
    whole.update(logits, targets)
    for start in range(0, 500, 130):  # blocks scored elsewhere (Ray) add up to the same figures
        part = CalibrationMeasures()
        part.update(logits[start:start + 130], targets[start:start + 130])
        blocks.absorb(part.state())
    probabilities = torch.from_numpy(logits).softmax(dim=1)
    expected_ece = float(multiclass_calibration_error(probabilities, torch.from_numpy(targets), num_classes=7,
                                                      n_bins=15, norm="l1"))
    expected_nll = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)))
    onehot = np.eye(7)[targets]
    expected_brier = float(((probabilities.numpy() - onehot) ** 2).sum(axis=1).mean())
    confidence, predicted = probabilities.max(dim=1)
    order = np.argsort(-confidence.numpy(), kind="stable")
    wrong = (predicted.numpy() != targets)[order]
    expected_aurc = float(np.mean([wrong[:k].mean() for k in range(1, 501)]))
    for measured in (whole.result(), blocks.result()):
        assert measured["ece"] == pytest.approx(expected_ece, abs=1e-6)
        assert measured["nll"] == pytest.approx(expected_nll, rel=1e-9)
        assert measured["brier"] == pytest.approx(expected_brier, rel=1e-9)
        assert measured["aurc"] == pytest.approx(expected_aurc, rel=1e-9)
        assert sum(b["count"] for b in measured["reliability"]) == 500


@pytest.mark.slow
def test_eval_json_and_report_carry_the_measures_of_the_scores(world, calibrated, tmp_path):
    from torchmetrics.functional.classification import multiclass_calibration_error

    code, out, err = _run("eval", "--data", str(world / "test" / "manifest.csv"), "--classifier", str(calibrated),
                          "-o", str(tmp_path / "results.json"), "--report", str(tmp_path / "report"), *FAST)
    assert code == 0, err
    record = json.loads((tmp_path / "results.json").read_text())
    logits, targets, _ = _reference_logits(world, calibrated)
    probabilities = torch.from_numpy(logits).double().softmax(dim=1)
    expected = float(multiclass_calibration_error(probabilities, torch.from_numpy(targets), num_classes=48,
                                                  n_bins=15, norm="l1"))
    assert record["calibration"]["ece"] == pytest.approx(expected, abs=2e-4)
    expected_nll = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(),
                                                           torch.from_numpy(targets)))
    assert record["calibration"]["nll"] == pytest.approx(expected_nll, rel=1e-3)
    assert "ECE" in out
    page = (tmp_path / "report" / "index.html").read_text()
    assert "reliability.png" in page and "AURC" in page
    assert Image.open(tmp_path / "report" / "reliability.png").size[0] > 100
    assert Image.open(tmp_path / "report" / "risk_coverage.png").size[0] > 100


@pytest.mark.slow
def test_calibrate_stores_the_temperature_and_classify_applies_it(world, calibrated, tmp_path):
    calibration = _metadata(calibrated)["calibration"]
    assert calibration["fitted_on"]["num_images"] == 64
    assert calibration["nll_after"] < calibration["nll_before"]
    assert calibration["accept"]["num_images"] == 64
    temperature = calibration["temperature"]
    assert temperature != pytest.approx(1.0, abs=0.05)
    rows_file = tmp_path / "rows.csv"
    code, _, err = _run("classify", str(world / "test" / "images"), "-c", str(calibrated), "-o", str(rows_file),
                        "-k", "1", *FAST)
    assert code == 0, err
    logits, _, paths = _reference_logits(world, calibrated)
    expected = dict(zip([Path(p).name for p in paths], torch.from_numpy(logits).softmax(dim=1).max(dim=1).values
                        .tolist(), strict=True))
    rows = list(csv.DictReader(rows_file.open()))
    assert len(rows) == 40
    for row in rows:
        assert float(row["score"]) == pytest.approx(expected[Path(row["path"]).name], abs=2e-4)


def _threshold(table: dict, target: float) -> float:
    """The lowest confidence whose accepted calibration images reach ``target`` precision, from the table."""
    precision = np.cumsum(table["correct"]) / np.cumsum(table["total"])
    reached = np.nonzero(precision >= target)[0]
    return table["confidence"][reached[-1]] if len(reached) else float("inf")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_accept_precision_marks_every_row_in_every_sink(world, calibrated, tmp_path, suffix):
    threshold = _threshold(_metadata(calibrated)["calibration"]["accept"], 0.8)
    output = tmp_path / f"rows{suffix}"
    code, _, err = _run("classify", str(world / "test" / "images"), "-c", str(calibrated), "--accept-precision",
                        "0.8", "-o", str(output), *FAST)
    assert code == 0, err
    assert "64 calibration images" in err
    if suffix == ".csv":
        rows = [(float(r["score"]), r["accepted"]) for r in csv.DictReader(output.open())]
        flags = [{"true": True, "false": False}[a] for _, a in rows]
    elif suffix == ".jsonl":
        lines = [json.loads(line) for line in output.read_text().splitlines()]
        rows, flags = [(r["predictions"][0]["score"], None) for r in lines], [r["accepted"] for r in lines]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(output).to_pylist()
        rows, flags = [(r["scores"][0], None) for r in table], [r["accepted"] for r in table]
    assert len(flags) == 40
    assert flags == [score >= threshold - 1e-6 for score, _ in rows]


@pytest.mark.parametrize("args, message", [
    (["classify", "IMAGES", "--labels", "a,b", "--accept-precision", "0.9"], "needs a calibrated classifier file"),
    (["classify", "IMAGES", "-c", "CAL", "--accept-precision", "0.9", "--transductive"], "uncorrected scores"),
    (["classify", "IMAGES", "-c", "CAL", "--accept-precision", "1.5"], "between 0 and 1"),
    (["classify", "IMAGES", "-c", "CAL", "--scale", "50"], "leave out --scale"),
    (["classify", "IMAGES", "--labels", "a,b", "--multi-label", "--transductive"], "corrects flat labels"),
    (["classify", "IMAGES", "--labels", "a,b", "--transductive", "--reject", "0.5"], "corrects flat labels"),
    (["eval", "--data", "IMAGES", "--transductive", "--unknown", "IMAGES"], "corrects flat labels"),
    (["calibrate", "--data", "IMAGES", "-c", "CAL", "-o", "out.csv"], "name it .zsc"),
    (["calibrate", "--data", "IMAGES", "-c", "CAL", "--templates", "photo", "-o", "x.zsc"], "leave out"),
])
def test_combinations_that_cannot_apply_are_refused_in_one_line(tmp_path, args, message):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "one.png")
    calibrated = tmp_path / "calibrated.zsc"
    table = {"num_images": 3, "confidence": [0.9, 0.6, 0.4], "correct": [1, 1, 0], "total": [1, 1, 1]}
    weights = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 2)))[0].astype(np.float32)
    ZeroShotClassifier(weights, ["a", "b"], [["a"], ["b"]], 100.0, None, {"model": "demo"},
                       calibration={"temperature": 2.0, "accept": table}).save(calibrated)
    swapped = [str(images) if a == "IMAGES" else str(calibrated) if a == "CAL" else
               str(tmp_path / a) if a.startswith(("out", "x.")) else a for a in args]
    code, _, err = _run(*swapped, "--model", "demo")
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1


def _imbalanced(generator, counts: list[int], shift: float = 1.2):
    """Posteriors under a uniform prior of unit Gaussians whose class coordinate is shifted by ``shift``."""
    targets = np.repeat(np.arange(len(counts)), counts)
    features = generator.normal(size=(len(targets), len(counts)))
    features[np.arange(len(targets)), targets] += shift
    logits = shift * features
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return log_p, targets


def test_em_estimates_an_imbalanced_prior_and_sinkhorn_meets_its_marginal():
    generator = np.random.default_rng(0)
    log_p, targets = _imbalanced(generator, [3000, 300, 300, 30])
    chunks = lambda: (log_p[i:i + 1000] for i in range(0, len(log_p), 1000))  # noqa: E731
    log_w, prior, _ = em_prior(chunks, 4)
    truth = np.bincount(targets) / len(targets)
    assert np.abs(prior - truth).max() < 0.03  # the collection's frequencies, from scores alone
    before = (log_p.argmax(axis=1) == targets).mean()
    assert ((log_p + log_w).argmax(axis=1) == targets).mean() > before + 0.05
    uniform = np.full(4, 0.25)
    log_v, _ = sinkhorn_weights(chunks, 4, uniform)
    corrected = np.exp(log_p + log_v)
    corrected /= corrected.sum(axis=1, keepdims=True)
    assert np.allclose(corrected.mean(axis=0), uniform, atol=1e-4)  # the plan's class marginal is the prior


@pytest.mark.slow
def test_transductive_classify_and_eval_agree_and_are_deterministic(world, tmp_path):
    """An imbalanced collection (one held-out pair 10x the others): classify --transductive twice gives the same
    rows, eval --transductive reports the with/without figures side by side, and its acc1 is the rows'."""
    rows = list(csv.DictReader((world / "test" / "manifest.csv").open()))
    first = rows[0]["label"]
    manifest = tmp_path / "imbalanced.csv"
    kept = [r for r in rows if r["label"] == first] * 1 + [r for r in rows if r["label"] != first][::5]
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([(str(world / "test" / r["path"]), r["label"]) for r in kept])
    labels = str(world / "test" / "labels.txt")
    outputs = []
    for name in ("a.csv", "b.csv"):
        code, _, err = _run("classify", *[str(world / "test" / r["path"]) for r in kept], "--labels-file", labels,
                            "--templates", "photo", "--transductive", "-k", "1", "-o", str(tmp_path / name), *FAST)
        assert code == 0, err
        outputs.append((tmp_path / name).read_text())
    assert outputs[0] == outputs[1]
    code, out, err = _run("eval", "--data", str(manifest), "--labels-file", labels, "--templates", "photo",
                          "--transductive", "-o", str(tmp_path / "e.json"), *FAST)
    assert code == 0, err
    record = json.loads((tmp_path / "e.json").read_text())
    side = record["transductive"]
    assert side["method"] == "em" and side["without"]["acc1"] == record["metrics"]["acc1"]
    predicted = [r["label"] for r in csv.DictReader((tmp_path / "a.csv").open())]
    truth = [r["label"] for r in kept]
    assert side["metrics"]["acc1"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    assert "--transductive em" in out


@pytest.mark.slow
def test_the_service_serves_a_calibrated_file_with_accept_precision(world, calibrated):
    """A real server on 127.0.0.1 serving the calibrated file by id: calibrated probabilities, ``accepted``
    per result at the threshold the file's table gives, and a one-line 422 for an uncalibrated label set."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from test_serve import _start, _stop

    threshold = _threshold(_metadata(calibrated)["calibration"]["accept"], 0.8)
    logits, _, paths = _reference_logits(world, calibrated)
    expected = torch.from_numpy(logits).softmax(dim=1).max(dim=1).values.tolist()
    process, url = _start("--classifier", str(calibrated))
    try:
        files = [("images", (Path(p).name, (world / "test" / p).read_bytes(), "image/png")) for p in paths[:8]]
        response = httpx.post(f"{url}/v1/classify", files=files,
                              data={"classifier": calibrated.stem, "accept_precision": "0.8"}, timeout=60)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        for result, confidence in zip(results, expected[:8], strict=True):
            assert result["predictions"][0]["score"] == pytest.approx(confidence, abs=2e-4)
            assert result["accepted"] == (result["predictions"][0]["score"] >= threshold - 1e-6)
        refused = httpx.post(f"{url}/v1/classify", files=files[:1], data={"labels": "red star,blue ring",
                                                                          "accept_precision": "0.8"}, timeout=60)
        assert refused.status_code == 422 and "calibrated" in refused.json()["error"]
    finally:
        _stop(process)


# --- a label tree: a temperature per level, for each mode -------------------------------------------------------


@pytest.fixture(scope="module")
def tree_file(world, tmp_path_factory) -> Path:
    """A two-level tree over the calibration set's classes (shape -> colour shape), built as a tree file."""
    from zsclip.hierarchy.modes import TreeClassifier
    from zsclip.hierarchy.tree import read_tree

    root = tmp_path_factory.mktemp("calibration-tree")
    labels = (world / "calib" / "labels.txt").read_text().split("\n")
    labels = [label for label in labels if label]
    by_shape: dict[str, list[str]] = {}
    for label in labels:
        by_shape.setdefault(label.split()[-1], []).append(label)
    tree = root / "tree.yaml"
    tree.write_text("".join(f"{shape}:\n" + "".join(f"  - {label}\n" for label in members)
                            for shape, members in by_shape.items()))
    demo = zsclip.load_model("demo", device="cpu")
    TreeClassifier.build(demo, read_tree(tree), "photo", cache=False).save(root / "tree.zsct")
    return root / "tree.zsct"


def test_a_tree_gets_a_temperature_per_level_and_classify_reports_tempered_level_probabilities(
        world, tree_file, tmp_path):
    from zsclip.hierarchy.modes import LEVEL_FLOOR, TreeClassifier

    output = tmp_path / "calibrated.zsct"
    code, out, err = _run("calibrate", "--data", str(world / "calib" / "manifest.csv"), "-c", str(tree_file),
                          "-o", str(output), *FAST)
    assert code == 0, err
    fitted = TreeClassifier.load(output)
    modes = fitted.calibration["modes"]
    assert set(modes) == {"flat", "top-down", "chils"} and all(len(t) == 2 for t in modes.values())
    for mode, temperatures in modes.items():
        for level, temperature in zip(("level1", "level2"), temperatures, strict=True):
            assert f"{mode:9s} {level}: temperature {temperature:.4f} fitted on 64 images" in out
    lines = [line for line in out.splitlines() if "NLL" in line]
    for line in lines:  # the fit minimises NLL: never worse than untempered on the images it was fitted on
        before, after = (float(v) for v in line.split("NLL ")[1].split(",")[0].split(" -> "))
        assert after <= before + 1e-9, line
    # classify with the calibrated file: the same labels; each level's probability is its cut's tempered
    images = world / "test" / "images"
    rows = {}
    for name, path in (("raw", tree_file), ("calibrated", output)):
        code, _, err = _run("classify", str(images), "-c", str(path), "--tree-mode", "top-down", "-o",
                            str(tmp_path / f"{name}.csv"), *FAST)
        assert code == 0, err
        with open(tmp_path / f"{name}.csv", newline="") as handle:
            rows[name] = list(csv.DictReader(handle))
    assert [(r["level1"], r["level2"]) for r in rows["raw"]] == [(r["level1"], r["level2"]) for r in rows["calibrated"]]
    raw = TreeClassifier.load(tree_file)
    demo = zsclip.load_model("demo", device="cpu")
    first = Image.open(rows["raw"][0]["path"]).convert("RGB")
    prediction = raw.predict(demo.encode_images(demo.preprocess(first)[None], "fp32"), "top-down")
    for level, (distribution, temperature) in enumerate(zip(raw.level_distributions(prediction), modes["top-down"],
                                                            strict=True)):
        tempered = (distribution.clamp_min(LEVEL_FLOOR).log() / temperature).softmax(dim=-1)[0]
        chosen = raw.tree.find(rows["calibrated"][0][f"level{level + 1}"]).index
        column = [node.index for node in raw.tree.level(level + 1)].index(chosen)
        assert float(rows["calibrated"][0][f"level{level + 1}_probability"]) == pytest.approx(
            float(tempered[column]), abs=2e-6)


def test_a_damaged_tree_calibration_is_one_line(tree_file, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tree_file), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["zsclip"])
        weights = handle.get_tensor("weights")
    metadata["calibration"] = {"method": "temperature-per-level", "modes": {"flat": [1.0, float("nan")]}}
    damaged = tmp_path / "damaged.zsct"
    save_file({"weights": weights}, str(damaged), metadata={"zsclip": json.dumps(metadata)})
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "one.png")
    code, _, err = _run("classify", str(images), "-c", str(damaged), *FAST)
    assert code == 2 and "calibration temperature nan" in err and len(err.strip().splitlines()) == 1, err


# --- bias-corrected temperature scaling (--bias) ---------------------------------------------------------------


def test_temperature_and_bias_fit_recovers_planted_values():
    """Labels drawn from softmax(z / 2 + b*) with a known class bias b*: the fit finds T ~ 2 and b ~ b* (centred),
    and its NLL is below the temperature-only fit's (which cannot model a class bias)."""
    from zsclip.calibration.temperature import fit_temperature, fit_temperature_bias

    rng = np.random.default_rng(7)
    logits = rng.normal(size=(20000, 5)) * 3
    planted = np.array([1.0, -0.5, 0.0, 0.8, -1.3])
    shifted = logits / 2 + planted
    p = np.exp(shifted - shifted.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(5, p=row) for row in p])
    fit = fit_temperature_bias(logits, targets)
    assert fit.temperature == pytest.approx(2.0, rel=0.05)
    assert np.allclose(fit.bias, planted - planted.mean(), atol=0.06) and abs(sum(fit.bias)) < 1e-9
    assert fit.nll_after < fit_temperature(logits, targets).nll_after < fit.nll_before


@pytest.fixture(scope="module")
def biased_world(tmp_path_factory) -> Path:
    """Outlined shapes labelled by shape: a shift the demo model never saw, where its prompts favour some shapes
    for every image (the class bias the fit is for)."""
    root = tmp_path_factory.mktemp("biased-world")
    shapes.write_dataset(root / "calib", 3, 61, "all", "shape", size=48, style="outline")
    shapes.write_dataset(root / "test", 2, 62, "all", "shape", size=48, style="outline")
    return root


def test_calibrate_bias_is_stored_and_classify_answers_with_it(biased_world, tmp_path):
    output = tmp_path / "biased.zsc"
    code, out, err = _run("calibrate", "--data", str(biased_world / "calib" / "manifest.csv"), "--labels-file",
                          str(biased_world / "calib" / "labels.txt"), "--templates", "photo", "--bias",
                          "-o", str(output), *FAST)
    assert code == 0, err
    assert "class bias fitted with it" in out
    calibration = _metadata(output)["calibration"]
    names = _metadata(output)["classnames"]
    assert calibration["method"] == "temperature+bias" and len(calibration["bias"]) == len(names) == 6
    assert calibration["nll_after"] < calibration["nll_before"] and max(map(abs, calibration["bias"])) > 0.1
    rows_file = tmp_path / "rows.csv"
    code, _, err = _run("classify", str(biased_world / "test" / "images"), "-c", str(output), "-o", str(rows_file),
                        "-k", "1", *FAST)
    assert code == 0, err
    logits, _, paths = _reference_logits(biased_world, output)  # scale * f @ W / T + b from the file's numbers
    probabilities = torch.from_numpy(logits).softmax(dim=1)
    unbiased = logits - np.asarray(calibration["bias"], dtype=np.float32)
    assert (unbiased.argmax(axis=1) != logits.argmax(axis=1)).any()  # the bias changes answers on this set
    expected = {Path(p).name: (names[int(i)], float(v)) for p, v, i in
                zip(paths, *probabilities.max(dim=1), strict=True)}
    with open(rows_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(paths)
    for row in rows:
        label, score = expected[Path(row["path"]).name]
        assert row["label"] == label and float(row["score"]) == pytest.approx(score, abs=2e-4)


def test_a_damaged_bias_is_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "one.png")
    weights = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 2)))[0].astype(np.float32)
    for bias, message in (([0.1], "1 values for 2 classes"), ([0.1, "x"], "not a list of finite numbers")):
        damaged = tmp_path / "damaged.zsc"
        ZeroShotClassifier(weights, ["a", "b"], [["a"], ["b"]], 100.0, None, {"model": "demo"},
                           calibration={"temperature": 2.0, "bias": bias}).save(damaged)
        code, _, err = _run("classify", str(images), "-c", str(damaged), "--model", "demo")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_bias_with_a_tree_file_is_refused_in_one_line(world, tree_file, tmp_path):
    code, _, err = _run("calibrate", "--data", str(world / "calib" / "manifest.csv"), "-c", str(tree_file), "--bias",
                        "-o", str(tmp_path / "x.zsct"), *FAST)
    assert code == 2 and "leave out --bias" in err and len(err.strip().splitlines()) == 1, err
