"""End-to-end fine-tuning of the image tower from the zero-shot model, with WiSE-FT weight mixing.

The head starts at logit_scale * zero-shot weights and trains with the image tower (cross-entropy
on the shots); the text tower is frozen, so it is the same on both sides of the mix. The model
stays in eval mode while training: normalisation statistics (BatchNorm in ResNet towers) are kept
frozen, which is what few-shot fine-tuning of a pretrained tower needs (a few images cannot
re-estimate them), and dropout is off. The result is mixed weight by weight with the zero-shot
model (WiSE-FT) and written as an open_clip ``local-dir`` model plus the matching classifier:

    OUT/open_clip_config.json      the source model's config (+ how it was fine-tuned)
    OUT/open_clip_model.safetensors
    OUT/classifier.zsc             the mixed head, built for OUT's own fingerprint

so ``zsclip.load_model("local-dir:OUT")`` and ``zsclip classify --model local-dir:OUT --classifier
OUT/classifier.zsc`` use it like any other model. open_clip models only (the transformers adapter
has no image-tower training path here yet).
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..classifier import ZeroShotClassifier
from ..data.images import load_image
from ..encoders.base import Encoder
from ..errors import ImageReadError, InputError
from .features import LabelledFeatures
from .wise import check_alpha, mix_state_dicts

CLASSIFIER_FILE = "classifier.zsc"


@dataclass
class FineTuneSettings:
    """Small, conservative defaults: few steps at a low learning rate (the shots are few)."""

    steps: int = 100
    lr: float = 1e-4
    head_lr: float | None = None  # default: lr * 10 (the head moves in logit units)
    weight_decay: float = 0.1
    batch_size: int = 32
    seed: int = 0


@dataclass
class FineTuned:
    """Zero-shot and fine-tuned weights and heads; ``model(alpha)`` / ``head(alpha)`` give the WiSE-FT mix."""

    encoder: Encoder
    zero_shot: ZeroShotClassifier
    zero_shot_state: dict[str, torch.Tensor]
    tuned_state: dict[str, torch.Tensor]
    tuned_head: torch.Tensor  # [D, C] in logit units (not divided by the scale)
    settings: FineTuneSettings
    shots: LabelledFeatures
    losses: list[float]

    def state(self, alpha: float) -> dict[str, torch.Tensor]:
        return mix_state_dicts(self.zero_shot_state, self.tuned_state, alpha)

    def model(self, alpha: float) -> torch.nn.Module:
        model = copy.deepcopy(self.encoder.model).eval()
        model.load_state_dict(self.state(alpha))
        return model

    def head(self, alpha: float) -> torch.Tensor:
        """[D, C] weights at the zero-shot classifier's scale: (1 - alpha) W_zs + alpha W_ft / scale."""
        alpha = check_alpha(alpha)
        return (1 - alpha) * self.zero_shot.weights + alpha * (self.tuned_head / self.zero_shot.logit_scale)

    def save(self, out_dir: str | os.PathLike, alpha: float) -> tuple[Path, ZeroShotClassifier]:
        """Write the alpha-mixed model as an open_clip local-dir folder with its classifier; returns
        (folder, classifier). The folder is written next to its final place and renamed into it."""
        alpha = check_alpha(alpha)
        out = Path(out_dir)
        if out.exists() and any(out.iterdir()):
            raise InputError(f"--output {out} exists and is not empty: choose a new folder for the fine-tuned model")
        config = source_config(self.encoder)
        config["zsclip_finetune"] = {"alpha": alpha, "source_model": self.encoder.name,
                                     "source_fingerprint": self.encoder.fingerprint,
                                     "shots": _shots_record(self.shots), "data": self.shots.data_fingerprint,
                                     "steps": self.settings.steps, "lr": self.settings.lr,
                                     "weight_decay": self.settings.weight_decay,
                                     "batch_size": self.settings.batch_size, "seed": self.settings.seed}
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in self.state(alpha).items()}
            save_file(state, str(staging / "open_clip_model.safetensors"))
            (staging / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            from ..encoders import load_model

            mixed = load_model(f"local-dir:{staging}", device="cpu")
            classifier = self._classifier(alpha, mixed.fingerprint, f"local-dir:{out}")
            classifier.save(staging / CLASSIFIER_FILE)
            if out.exists():
                out.rmdir()
            os.replace(staging, out)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return out, classifier

    def _classifier(self, alpha: float, fingerprint: str, model_name: str) -> ZeroShotClassifier:
        zs = self.zero_shot
        adaptation = {"method": "finetune", "shots": _shots_record(self.shots), "num_images": len(self.shots),
                      "alpha": alpha, "data": self.shots.data_fingerprint, "source_model": self.encoder.name,
                      "source_fingerprint": self.encoder.fingerprint, "steps": self.settings.steps}
        provenance = {**zs.provenance, "model": model_name, "pretrained": None, "fingerprint": fingerprint,
                      "adaptation": adaptation}
        return ZeroShotClassifier(self.head(alpha), list(zs.classnames), [list(s) for s in zs.synonyms],
                                  zs.logit_scale, zs.logit_bias, provenance)


def load_pixels(names: Sequence[str], encoder: Encoder) -> tuple[torch.Tensor, list[dict]]:
    """Decode and preprocess images by path: ([n_ok, 3, H, W], failures). Bad files are reported, skipped."""
    transform = encoder.image_transform()
    pixels, failures = [], []
    for name in names:
        try:
            pixels.append(transform(load_image(name, encoder.image_size)))
        except ImageReadError as error:
            failures.append({"path": name, "error": str(error)})
    return (torch.stack(pixels) if pixels else torch.empty(0)), failures


def finetune(
    encoder: Encoder,
    zero_shot: ZeroShotClassifier,
    shots: LabelledFeatures,
    settings: FineTuneSettings | None = None,
    *,
    pixels: torch.Tensor | None = None,
    progress: bool = False,
) -> FineTuned:
    """Fine-tune ``encoder``'s image tower and the head on ``shots`` (their images are decoded again
    from ``shots.names`` unless ``pixels`` are given, in the same order)."""
    settings = settings or FineTuneSettings()
    model0 = getattr(encoder, "model", None)
    visual = getattr(model0, "visual", None)
    if encoder.backend != "open_clip" or visual is None:
        raise InputError(f"--method finetune needs an open_clip model with an image tower; {encoder.name} "
                         f"({encoder.backend}) is not supported: use --method linear or tip-adapter")
    if zero_shot.is_sigmoid:
        raise InputError("--method finetune supports softmax (CLIP-style) models only")
    if pixels is None:
        pixels, failures = load_pixels(shots.names, encoder)
        if failures:
            raise InputError(f"{len(failures)} shot image(s) changed since they were encoded, e.g. "
                             f"{failures[0]['path']}: {failures[0]['error']}")
    if len(pixels) != len(shots):
        raise InputError(f"{len(pixels)} images for {len(shots)} shots")
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    device = encoder.device
    model = copy.deepcopy(model0).to(device).eval()  # eval: frozen norm statistics, no dropout
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("visual."))
    head = (zero_shot.weights * zero_shot.logit_scale).to(device).clone().requires_grad_(True)
    tower = [p for p in model.visual.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for p in tower if p.ndim >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in tower if p.ndim < 2], "weight_decay": 0.0},
        {"params": [head], "lr": settings.head_lr or settings.lr * 10, "weight_decay": 0.0},
    ], lr=settings.lr)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    targets = shots.targets.to(device)
    order: list[int] = []
    losses = []
    with torch.enable_grad(), tqdm(total=settings.steps, desc="fine-tuning", disable=not progress, leave=False) as bar:
        for step in range(settings.steps):
            if len(order) < settings.batch_size:
                fresh = list(range(len(shots)))
                rng.shuffle(fresh)
                order += fresh
            batch, order = order[: settings.batch_size], order[settings.batch_size :]
            cosine = 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / settings.steps)))
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * float(cosine)
            features = F.normalize(model.encode_image(pixels[batch].to(device)), dim=-1)
            loss = F.cross_entropy(features @ head, targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*tower, head], 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
    zero_state = {k: v.detach().cpu().clone() for k, v in model0.state_dict().items()}
    tuned_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return FineTuned(encoder, zero_shot, zero_state, tuned_state, head.detach().cpu(), settings, shots, losses)


@torch.inference_mode()
def encode_pixels(model: torch.nn.Module, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Normalised image features of preprocessed pixels with a (mixed) open_clip model."""
    device = next(model.parameters()).device
    chunks = [F.normalize(model.encode_image(pixels[i:i + batch_size].to(device)).float(), dim=-1).cpu()
              for i in range(0, len(pixels), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def source_config(encoder: Encoder) -> dict:
    """open_clip_config.json for a model of ``encoder``'s architecture: the source folder's own
    file for demo / local-dir: models, else open_clip's config for the named model."""
    import open_clip

    from ..encoders.openclip import DEMO_MODEL, demo_model_dir

    if encoder.name == DEMO_MODEL or encoder.name.startswith("local-dir:"):
        folder = demo_model_dir() if encoder.name == DEMO_MODEL else Path(encoder.name.removeprefix("local-dir:"))
        config = json.loads((folder.expanduser() / "open_clip_config.json").read_text(encoding="utf-8"))
        return {key: value for key, value in config.items() if key in ("model_cfg", "preprocess_cfg")}
    model_cfg = open_clip.get_model_config(encoder.name)
    if model_cfg is None:
        raise InputError(f"no open_clip config known for {encoder.name}: fine-tune a named or local-dir: model")
    return {"model_cfg": model_cfg, "preprocess_cfg": open_clip.get_model_preprocess_cfg(encoder.model)}


def _shots_record(shots: LabelledFeatures) -> int | list[int]:
    counts = shots.class_counts()
    return min(counts) if len(set(counts)) == 1 else counts
