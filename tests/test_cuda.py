"""The CUDA path (issue 17): device selection, precision choice, agreement with fp32 on the CPU,
and memory bounded by the batch size. The dispatch logic is tested everywhere; what needs a GPU is
skipped without one and run by `bash benchmarks/gpu_suite.sh`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import zsclip
from zsclip.encoders import resolve_device
from zsclip.errors import InputError
from zsclip.precision import resolve_precision
from zsclip.tasks.classify import classify_items

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_auto_picks_cuda_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_precision("auto", "cuda") == "fp16"  # e.g. a T4 or V100
    with pytest.raises(InputError, match="int8 is for CPUs"):
        resolve_precision("int8", "cuda")


def test_asking_for_cuda_without_it_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="CUDA is not available here"):
        resolve_device("cuda")


@cuda
def test_classifiers_built_on_cuda_agree_with_fp32_on_the_cpu():
    cpu = zsclip.load_model("demo", device="cpu")
    gpu = zsclip.load_model("demo", device="cuda")
    classes = [line for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line and line[0] != "#"]
    reference = zsclip.ZeroShotClassifier.build(cpu, classes, "openai-imagenet", precision="fp32", cache=False)
    for precision in ("fp32", "auto"):
        built = zsclip.ZeroShotClassifier.build(gpu, classes, "openai-imagenet", precision=precision, cache=False)
        cosine = (built.weights.cpu() * reference.weights).sum(dim=0)
        assert cosine.min() > (0.99999 if precision == "fp32" else 0.995), precision


@cuda
def test_classify_on_cuda_agrees_with_the_cpu_and_memory_follows_the_batch(tmp_path):
    for index, png in enumerate(sorted(EXAMPLES.glob("*.png")) * 20):
        Image.open(png).convert("RGB").resize((800, 800)).save(tmp_path / f"{index:03d}_{png.stem}.jpg")
    sources = list(zsclip.expand_inputs([str(tmp_path)]))
    classes = [line for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line and line[0] != "#"]
    cpu = zsclip.load_model("demo", device="cpu")
    gpu = zsclip.load_model("demo", device="cuda")
    reference = [p.labels for p in classify_items(sources, zsclip.ZeroShotClassifier.build(cpu, classes, "photo"),
                                                  cpu, top_k=1, options=zsclip.RunOptions(precision="fp32"))]
    classifier = zsclip.ZeroShotClassifier.build(gpu, classes, "photo")
    peaks = {}
    for count in (len(sources) // 4, len(sources)):
        torch.cuda.reset_peak_memory_stats()
        ours = [p.labels for p in classify_items(sources[:count], classifier, gpu, top_k=1,
                                                 options=zsclip.RunOptions(device="cuda", batch_size=16))]
        peaks[count] = torch.cuda.max_memory_allocated()
        agreement = sum(a == b for a, b in zip(ours, reference, strict=False)) / count
        assert agreement >= 0.99
    assert peaks[len(sources)] < 1.5 * peaks[len(sources) // 4]  # bounded by the batch, not the input count
