"""Tiny open_clip models saved in the real ``local-dir:`` layout (config JSON + safetensors).

Tests load them through ``zsclip.load_model("local-dir:...")``: the same code path as a user's
downloaded model, only small enough to run in milliseconds.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

#: Same, but with a bidirectional text tower that pools the last position (SigLIP-style).
TINY_BIDIRECTIONAL_CFG = copy.deepcopy(TINY_CLIP_CFG)
TINY_BIDIRECTIONAL_CFG["text_cfg"].update({"no_causal_mask": True, "pool_type": "last"})


def save_local_dir(path: Path, model_cfg: dict = TINY_CLIP_CFG, seed: int = 0) -> str:
    """Build a seeded random CLIP from ``model_cfg`` and save it as an open_clip local-dir folder."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**copy.deepcopy(model_cfg))
    # spread logits so that tiny random models give non-uniform probabilities
    with torch.no_grad():
        model.logit_scale.fill_(float(torch.tensor(100.0).log()))
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}}
    (path / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    return f"local-dir:{path}"
