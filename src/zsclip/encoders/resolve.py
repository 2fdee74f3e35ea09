"""Which model a run loads: the default, and loading with the run's device and precision. Every
entry point and every Ray actor resolves models here, so they pick the same model for the same
arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..options import RunOptions
from . import TRANSFORMERS_PREFIX, load_model

if TYPE_CHECKING:
    from .base import Encoder

#: The model used when none is named: open_clip's ViT-B/32 with LAION-2B weights (~600 MB, downloaded once).
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

def default_weights(model: str | None, pretrained: str | None) -> tuple[str, str | None]:
    """(model, pretrained) with the defaults applied: the default model gets its default weights."""
    model = model or DEFAULT_MODEL
    if model == DEFAULT_MODEL and pretrained is None:
        pretrained = DEFAULT_PRETRAINED
    return model, pretrained


def resolve_model(
    model: str | None = None,
    pretrained: str | None = None,
    options: RunOptions | None = None,
    *,
    cache_dir: str | None = None,
) -> Encoder:
    """Load ``model`` (default: ViT-B-32 with LAION-2B weights) on ``options.device``, its towers run by
    ``options.runtime`` (eager PyTorch, or graphs on ONNX Runtime / OpenVINO: see encoders/runtime.py)."""
    options = options or RunOptions()
    model, pretrained = default_weights(model, pretrained)
    if model.startswith(TRANSFORMERS_PREFIX):
        quiet_transformers()
    encoder = load_model(model, pretrained, device=options.model_device, cache_dir=cache_dir)
    if options.runtime != "torch":
        from .pick import with_runtime

        encoder = with_runtime(encoder, options.runtime, options.precision, options.calibration)
    encoder.prepare(options.precision)  # e.g. int8 on a tower it cannot speed up: one line now, not mid-run
    return encoder


def quiet_transformers() -> None:
    """transformers prints weight-loading bars and config notes; our own lines are what users read."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


__all__ = ["DEFAULT_MODEL", "DEFAULT_PRETRAINED", "default_weights", "resolve_model", "quiet_transformers"]
