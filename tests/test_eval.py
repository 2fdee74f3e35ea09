"""`zsclip eval` and evaluate(): reference metrics on folders and manifests, one image pass for
several template sets, failures counted not fatal, CLIP_benchmark's JSON layout."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import zsclip
from zsclip import RunOptions, evaluate
from zsclip.cli import main
from zsclip.data.collections import image_folder

COLOURS = {"blue": (20, 20, 220), "dark_green": (20, 120, 20), "red": (220, 20, 20), "white": (240, 240, 240),
           "yellow": (230, 220, 30), "black": (10, 10, 10)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Six classes, three images each (with some noise), plus one corrupt file."""
    root = tmp_path_factory.mktemp("colours")
    generator = torch.Generator().manual_seed(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir()
        for i in range(3):
            noise = (torch.rand(24, 24, 3, generator=generator) * 60 - 30)
            pixels = (torch.tensor(rgb).float() + noise).clamp(0, 255).byte().numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def _reference_accuracy(encoder, collection, classifier):
    """open_clip's zero-shot loop on the same classifier: 100 * f @ W, target among the top 1 / 5."""
    good = [item for item in collection.items if not item.name.endswith("broken.jpg")]
    pixels = torch.stack([encoder.preprocess(Image.open(item.name).convert("RGB")) for item in good])
    with torch.no_grad():
        features = encoder.model.encode_image(pixels, normalize=True)
    logits = 100.0 * features @ classifier.weights
    targets = torch.tensor([item.target for item in good])
    top5 = logits.topk(5, dim=1).indices
    acc1 = (top5[:, 0] == targets).float().mean().item()
    acc5 = (top5 == targets[:, None]).any(dim=1).float().mean().item()
    return acc1, acc5, len(good)


def test_metrics_equal_the_open_clip_loop_and_images_are_encoded_once(tiny_clip, tree, monkeypatch):
    collection = image_folder(tree)
    calls = []
    encode = tiny_clip.encode_images
    monkeypatch.setattr(tiny_clip, "encode_images", lambda pixels, precision="fp32": calls.append(len(pixels))
                        or encode(pixels, precision))
    result = evaluate(collection, tiny_clip, ["photo", "openai-imagenet-7"],
                      options=RunOptions(precision="fp32", batch_size=8, workers=0))
    assert sum(calls) == 18 and len(calls) == 3  # 19 files in batches of 8, once for both template sets
    for name in ("photo", "openai-imagenet-7"):
        classifier = zsclip.ZeroShotClassifier.build(tiny_clip, collection.classnames, name, precision="fp32")
        acc1, acc5, count = _reference_accuracy(tiny_clip, collection, classifier)
        assert result.metrics[name]["acc1"] == pytest.approx(acc1) and result.metrics[name]["num_images"] == count
        assert result.metrics[name]["acc5"] == pytest.approx(acc5)
    assert [f["path"].endswith("broken.jpg") for f in result.failures] == [True]


def test_eval_cli_writes_clip_benchmark_json(tiny_clip_dir, tree, tmp_path):
    out = tmp_path / "results.json"
    result = CliRunner().invoke(main, ["eval", "--data", str(tree), "--model", tiny_clip_dir, "--templates",
                                       "photo,openai-imagenet-7", "--workers", "0", "--output", str(out)])
    assert result.exit_code == 1, result.output  # one image failed: results written, status says so
    record = json.loads(out.read_text())
    assert record["pretrained"] == "" and record["language"] == "en"  # CLIP_benchmark's build chokes on null
    assert record["task"] == "zeroshot_classification" and record["dataset"] == tree.name
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert record["num_images"] == 18 and record["num_failed"] == 1 and record["templates"] == "photo"
    assert set(record["template_comparison"]) == {"photo", "openai-imagenet-7"}
    assert record["classnames"][:3] == ["black", "blue", "dark green"]  # sorted folders, _ as space
    assert len(record["confusion_matrix"]) == 6 and sum(map(sum, record["confusion_matrix"])) == 18
    assert "photo" in result.stdout and "acc1" in result.stdout and "broken.jpg" in result.stderr


def test_eval_on_a_manifest_with_a_labels_file(tiny_clip_dir, tree, tmp_path):
    labels = tmp_path / "classes.txt"
    labels.write_text("azure | blue\ncrimson | red\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{tree}/blue/0.png,azure\n{tree}/red/1.png,1\n{tree}/red/broken.jpg,crimson\n")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["eval", "--data", str(manifest), "--labels-file", str(labels), "--model",
                                       tiny_clip_dir, "--templates", "photo", "--workers", "0", "--output", str(out)])
    assert result.exit_code == 1, result.output
    record = json.loads(out.read_text())
    assert record["classnames"] == ["azure", "crimson"] and record["num_images"] == 2
    assert record["metrics"]["acc5"] is None and record["num_failed"] == 1


def test_eval_usage_errors(tiny_clip_dir, tmp_path):
    for data, message in [(str(tmp_path / "nope"), "not a folder"), ("shards/{000..009}.tar", "--labels-file")]:
        result = CliRunner().invoke(main, ["eval", "--data", data, "--model", tiny_clip_dir])
        assert result.exit_code == 2 and message in result.stderr


def test_imagenet_synset_folders_get_imagenet_class_names(tiny_clip_dir, tmp_path):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    for index in range(1000):  # wnids sort in ImageNet-1k class order; fake ones sort the same way
        (tmp_path / "val" / f"n{index:08d}").mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "val" / "n00000001" / "x.png")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "val"), "--dataset", "imagenet1k", "--model",
                                       tiny_clip_dir, "--templates", "photo", "--workers", "0", "--output", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["classnames"] == list(IMAGENET_CLASSNAMES) and record["dataset"] == "imagenet1k"
    assert record["num_images"] == 1 and sum(record["confusion_matrix"][1]) == 1
    # without --dataset: 1000 WordNet-id folders are recognised as ImageNet-1k
    auto = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "val"), "--model", tiny_clip_dir, "--templates",
                                     "photo", "--workers", "0", "--output", str(out)])
    assert auto.exit_code == 0 and json.loads(out.read_text())["classnames"][1] == IMAGENET_CLASSNAMES[1]


def test_report_folder_has_page_plots_metrics_and_predictions(tiny_clip_dir, tree, tmp_path):
    report = tmp_path / "report"
    result = CliRunner().invoke(main, ["eval", "--data", str(tree), "--model", tiny_clip_dir, "--templates",
                                       "photo,openai-imagenet-7", "--workers", "0", "--report", str(report)])
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in report.iterdir()) == ["confusion.png", "index.html", "metrics.json",
                                                        "per_class_recall.png", "predictions.csv", "reliability.png",
                                                        "risk_coverage.png"]
    for plot in ("confusion.png", "per_class_recall.png", "reliability.png", "risk_coverage.png"):
        with Image.open(report / plot) as image:
            assert image.format == "PNG" and image.width > 300
    page = (report / "index.html").read_text()
    assert "openai-imagenet-7" in page and "broken.jpg" in page and 'src="confusion.png"' in page
    metrics = json.loads((report / "metrics.json").read_text())
    confusions = sum(c for t, row in enumerate(metrics["confusion_matrix"]) for p, c in enumerate(row) if t != p)
    assert sum(pair["count"] for pair in metrics["confused_pairs"]) == confusions  # fewer than 20 pairs here
    rows = (report / "predictions.csv").read_text().splitlines()
    assert rows[0] == "path,true_label,label_1,label_2,label_3,label_4,label_5" and len(rows) == 19
    correct = sum(row.split(",")[1] == row.split(",")[2] for row in rows[1:])
    assert correct / 18 == pytest.approx(metrics["metrics"]["acc1"])


def test_confusion_plot_keeps_the_most_confused_classes_beyond_fifty(tmp_path):
    from zsclip.outputs.report import classes_to_show, confused_pairs, write_report

    classes = [f"class {i}" for i in range(80)]
    confusion = [[0] * 80 for _ in range(80)]
    for i in range(80):
        confusion[i][i] = 5
    confusion[3][7], confusion[7][3], confusion[60][2] = 4, 2, 1
    assert confused_pairs(confusion, classes)[:2] == [{"true": "class 3", "predicted": "class 7", "count": 4},
                                                      {"true": "class 7", "predicted": "class 3", "count": 2}]
    record = {"dataset": "d", "templates": "photo", "metrics": {"acc1": 0.9, "acc5": 1.0, "mean_per_class_recall": 0.9},
              "classnames": classes, "confusion_matrix": confusion, "num_images": 407, "num_failed": 0,
              "failures": [], "images_per_second": 1.0,
              "per_class": {"per_class_recall": [0.9] * 80, "per_class_precision": [0.9] * 80}}
    shown = classes_to_show(confusion)
    assert len(shown) == 50 and {2, 3, 7, 60} <= set(shown) and shown == sorted(shown)
    assert classes_to_show(confusion[:10]) == list(range(10))
    write_report(tmp_path, record, {"model": "m"})
    assert (tmp_path / "confusion.png").stat().st_size > 10_000


def _add(archive, name: str, data: bytes) -> None:
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tree, tmp_path_factory):
    """The tree's images as two WebDataset shards, labels as cls / txt / json, plus bad samples."""
    import io
    import tarfile

    folder = tmp_path_factory.mktemp("shards")
    classes = sorted(p.name for p in tree.iterdir())
    samples = [(c, p.read_bytes()) for c in classes for p in sorted((tree / c).glob("*.png"))]
    for shard_index in range(2):
        with tarfile.open(folder / f"shard-{shard_index:02d}.tar", "w") as archive:
            for i, (label, data) in enumerate(samples[shard_index::2]):
                key = f"s{shard_index}/{i:04d}"
                _add(archive, f"{key}.png", data)
                kind = i % 3
                if kind == 0:
                    _add(archive, f"{key}.cls", str(classes.index(label)).encode())
                elif kind == 1:
                    _add(archive, f"{key}.txt", label.replace("_", " ").encode())
                else:
                    _add(archive, f"{key}.json", json.dumps({"label": classes.index(label)}).encode())
            _add(archive, f"bad{shard_index}.png", b"not a png")
            _add(archive, f"bad{shard_index}.cls", b"0")
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8)).save(buffer, format="PNG")
            _add(archive, f"nolabel{shard_index}.png", buffer.getvalue())
    labels = folder / "classes.txt"
    labels.write_text("\n".join(c.replace("_", " ") for c in classes) + "\n")
    return folder, labels


@pytest.mark.parametrize("workers", ["0", "2"])
def test_webdataset_shards_match_the_folder_and_report_bad_samples(tiny_clip_dir, tree, shards, tmp_path, workers):
    folder, labels = shards
    by_folder, by_shards = tmp_path / "folder.json", tmp_path / "shards.json"
    common = ["--model", tiny_clip_dir, "--templates", "photo", "--labels-file", str(labels)]
    assert CliRunner().invoke(main, ["eval", "--data", str(tree), *common, "--workers", "0",
                                     "--output", str(by_folder)]).exit_code == 1
    result = CliRunner().invoke(main, ["eval", "--data", f"{folder}/shard-{{00..01}}.tar", *common,
                                       "--workers", workers, "--output", str(by_shards)])
    assert result.exit_code == 1, result.output
    a, b = json.loads(by_folder.read_text()), json.loads(by_shards.read_text())
    assert b["num_images"] == a["num_images"] == 18
    assert b["metrics"] == pytest.approx(a["metrics"]) and b["confusion_matrix"] == a["confusion_matrix"]
    reasons = sorted(f["error"] for f in b["failures"])
    assert len(reasons) == 4 and sum("not an image" in r for r in reasons) == 2
    assert sum("no label" in r for r in reasons) == 2


def test_missing_shards_and_shards_without_labels_file(tiny_clip_dir, shards):
    folder, labels = shards
    missing = CliRunner().invoke(main, ["eval", "--data", f"{folder}/shard-{{00..05}}.tar", "--model", tiny_clip_dir,
                                        "--labels-file", str(labels)])
    assert missing.exit_code == 2 and "4 of 6 shards not found" in missing.stderr
    unlabeled = CliRunner().invoke(main, ["eval", "--data", f"{folder}/shard-00.tar", "--model", tiny_clip_dir])
    assert unlabeled.exit_code == 2 and "need --labels-file" in unlabeled.stderr


def test_a_truncated_shard_yields_its_readable_samples_then_one_error(shards, tmp_path):
    from zsclip.data.shards import shard_samples

    folder, _ = shards
    data = (folder / "shard-00.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    items = list(shard_samples(str(cut)))
    assert items[-1][2] is not None and "cannot read shard" in items[-1][2]
    assert len(items) > 2 and all(error is None for _, _, error in items[:-1])
    complete = [name for name, _, _ in shard_samples(str(folder / "shard-00.tar"))]
    assert [name.split("#")[1] for name, _, _ in items[:-2]] == [n.split("#")[1] for n in complete[: len(items) - 2]]
