"""The model's image forward as one TorchScript graph when serving on a CPU, where it gives the same features.

Why: in eager mode every layer of the forward returns to Python and takes the interpreter lock back.
In a server that lock is busy with HTTP, multipart, decoding and JSON, so the model thread queues
for it between every two layers (measured on 2 cores, demo model, a batch of 8: 21 ms alone, 122 ms
beside one busy Python thread). A traced forward runs the whole graph in C++ with the lock released
(15 ms alone, 32 ms beside the same thread), so the model and the request work really run at once.

It serves only where it is checked: CPU, fp32, an ``nn.Module`` model, and features equal to the
eager forward's, bit for bit, at two batch sizes other than the one traced. Otherwise (or when
tracing fails) the eager forward serves and the log says why.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch

from ..encoders.base import Encoder

log = logging.getLogger("zsclip.serve")


class _ImageTower(torch.nn.Module):
    """The encoder's image forward as a module that owns the model's weights (so tracing sees parameters)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.model = encoder.model
        self.image_forward = encoder._image_forward

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_forward(pixels)


def traced_encoder(encoder: Encoder, precision: str, example: torch.Tensor) -> Encoder:
    """A shallow copy of ``encoder`` whose image forward is a traced graph, or ``encoder`` itself when the
    trace cannot apply or does not give the eager features. ``example``: one preprocessed image [3, H, W]."""
    from ..precision import resolve_precision

    if encoder.device.type != "cpu" or resolve_precision(precision, encoder.device) != "fp32" \
            or not isinstance(encoder.model, torch.nn.Module) or getattr(encoder, "runtime", "torch") != "torch":
        return encoder  # (an inference runtime's graph already runs without the GIL)
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values: the check below decides
            graph = torch.jit.trace(_ImageTower(encoder), torch.randn(2, *example.shape, generator=generator),
                                    check_trace=False)
            for size in (1, 3):
                probe = torch.randn(size, *example.shape, generator=generator)
                if not torch.equal(graph(probe), encoder._image_forward(probe)):
                    log.info("zsclip serve: the traced image forward differs from the eager one: serving eager")
                    return encoder
    except Exception as error:  # any model a tracer cannot follow: the eager forward serves
        log.info("zsclip serve: the image forward cannot be traced (%s): serving eager",
                 str(error).splitlines()[0][:200] if str(error) else type(error).__name__)
        return encoder
    twin = copy.copy(encoder)
    twin._image_forward = graph  # encode_images calls it: same precision, normalisation and output as eager
    return twin


__all__ = ["traced_encoder"]
