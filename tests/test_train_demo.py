"""tools/train_demo_model.py: a smoke run writes a model zsclip loads; captions and loss are right."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

import zsclip
from zsclip import shapes

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "train_demo_model.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


train_demo = _load_script()


def test_smoke_run_writes_a_local_dir_model_that_zsclip_loads(tmp_path):
    out = tmp_path / "model"
    args = train_demo.parse_args(["--out", str(out), "--steps", "3", "--batch-size", "8", "--workers", "0",
                                  "--eval-every", "0", "--log-every", "1", "--threads", "1"])
    meta = train_demo.train(args)
    assert meta["steps"] == 3 and meta["held_out"] == [f"{c} {s}" for c, s in shapes.HELD_OUT]
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"] == train_demo.MODEL_CFG
    encoder = zsclip.load_model(f"local-dir:{out}", device="cpu")
    clf = zsclip.ZeroShotClassifier.build(encoder, ["red star", "blue ring"], "photo", cache=False)
    spec = shapes.sample_specs(1, seed=0)[0]
    top = clf.predict([shapes.render(spec)], top_k=2)[0]  # proves load + run, not accuracy (3 steps)
    assert sorted(label for label, _ in top) == ["blue ring", "red star"]
    # training moved the weights away from the seeded initialisation
    torch.manual_seed(args.seed)
    initial = open_clip.CLIP(**json.loads(json.dumps(train_demo.MODEL_CFG))).state_dict()
    trained = encoder.model.state_dict()
    assert not torch.equal(initial["visual.conv1.weight"], trained["visual.conv1.weight"])


def test_the_training_stream_is_a_function_of_its_seed():
    stream = train_demo.ShapeStream(6, seed=4, image_size=64, context_length=32)
    first, second = next(iter(stream)), next(iter(stream))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    other = next(iter(train_demo.ShapeStream(6, seed=5, image_size=64, context_length=32)))
    assert not torch.equal(first[0], other[0])
    # through a DataLoader worker process, as train() reads it: the same batches
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1)
    assert all(torch.equal(a, b) for a, b in zip(next(iter(loader)), first, strict=True))


def test_training_never_draws_or_names_a_held_out_pair():
    stream = train_demo.ShapeStream(100, seed=1, image_size=16, context_length=32, unnamed_fraction=0.25)
    batches = [batch for batch, _ in zip(stream.scenes(), range(30), strict=False)]
    specs = [spec for spec_batch, _ in batches for spec in spec_batch]
    texts = [caption.text for _, captions in batches for caption in captions]
    assert not any((s.colour, s.shape) in shapes.HELD_OUT for s in specs)
    held_out_names = re.compile("|".join(rf"\b{colour} {shape}\b" for colour, shape in shapes.HELD_OUT))
    assert not any(held_out_names.search(text) for text in texts)
    assert held_out_names.search("the embroidered red triangle.")  # ("embroidered triangle" is no match)
    assert {(s.colour, s.shape) for s in specs if s.colour in shapes.COLOURS} == set(shapes.combinations("seen"))
    unnamed = [s for s in specs if s.colour not in shapes.COLOURS]
    assert 0.2 < len(unnamed) / len(specs) < 0.3  # 0.25 asked for
    assert {s.shape for s in unnamed} == set(shapes.SHAPES)


def test_captions_are_true_and_unnamed_colours_are_captioned_by_shape_only():
    rng = random.Random(2)
    specs = shapes.sample_specs(300, seed=2)
    captions = [train_demo.caption_for(spec, rng) for spec in specs]
    assert all(caption.describes(spec) for caption, spec in zip(captions, specs, strict=True))
    words = " ".join(c.text for c in captions)
    assert all(name in words for name in ("red", "star", "background"))
    assert any(c.shape is None for c in captions) and any(c.colour is None for c in captions)
    unnamed = shapes.ShapeSpec("#40e0d0", "ring", "black", 0.3, (0.5, 0.5), 0)
    caption = train_demo.caption_for(unnamed, rng)
    assert "ring" in caption.text and caption.colour is None and caption.describes(unnamed)
    red_ring = shapes.ShapeSpec("red", "ring", "black", 0.3, (0.5, 0.5), 0)
    assert not train_demo.Caption("a red.", "red", None, None).describes(unnamed)
    assert train_demo.Caption("a red.", "red", None, None).describes(red_ring)


def test_soft_loss_is_clips_loss_when_only_own_captions_match():
    torch.manual_seed(0)
    images, texts = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    reference = open_clip.ClipLoss()(images, texts, scale)
    ours = train_demo.soft_contrastive_loss(images, texts, scale, torch.eye(6, dtype=torch.bool))
    assert torch.allclose(ours, reference, atol=1e-6)
    # caption 0 truly describes images 0, 1 and 2: each image spreads its target over its true
    # captions (rows), each caption over its true images (columns)
    shared = torch.eye(6, dtype=torch.bool)
    shared[1, 0] = shared[2, 0] = True
    logits = scale * images @ texts.T
    targets = shared.float()
    expected = (F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
                + F.cross_entropy(logits.T, (targets / targets.sum(0, keepdim=True)).T)) / 2
    assert torch.allclose(train_demo.soft_contrastive_loss(images, texts, scale, shared), expected, atol=1e-6)
    assert not torch.allclose(expected, reference)
