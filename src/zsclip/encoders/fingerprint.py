"""Model fingerprints: a stable id of a model's config and weights, used as the cache key of
every classifier and store built with it, and to refuse a classifier built for another model.

Equal for the same weights on any machine, device or path; different when any weight changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with a model; a stored-feature job reads FINGERPRINT_VERSION without it
    import torch

#: bumped whenever the fingerprint's recipe changes (w2: per-tensor SHA-256); classifiers built
#: under another recipe are told apart from classifiers built for another model
FINGERPRINT_VERSION = "w2"


def state_dict_digest(module: torch.nn.Module) -> str:
    """Content hash of a module's parameters and buffers (names, shapes, dtypes, bytes).

    Every run that looks up a cached classifier pays this, so it is made cheap: SHA-256 (hardware
    accelerated on current CPUs, ~2x blake2b) over each tensor's memory without copying it, CPU
    tensors hashed in parallel threads (hashlib releases the GIL), then one digest over the
    per-tensor ones. Tensors on a GPU are copied and hashed one at a time, on this thread.
    """
    items = sorted(module.state_dict().items())
    on_cpu = all(tensor.device.type == "cpu" for _, tensor in items)
    if on_cpu and len(items) > 1:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            digests = list(pool.map(_tensor_digest, [tensor for _, tensor in items]))
    else:
        digests = [_tensor_digest(tensor) for _, tensor in items]
    combined = hashlib.sha256()
    for (name, tensor), digest in zip(items, digests, strict=True):
        combined.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}:{digest}\n".encode())
    return combined.hexdigest()[:32]


def _tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's values as raw bytes, for any dtype (float8, bool, complex, quantized)."""
    import torch

    data = tensor.detach()
    extra = b""
    if data.is_quantized:
        extra = f"{data.qscheme()}".encode()
        if data.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            extra += f":{data.q_scale()}:{data.q_zero_point()}".encode()
        else:
            extra += _tensor_digest(data.q_per_channel_scales()).encode()
            extra += _tensor_digest(data.q_per_channel_zero_points()).encode()
        data = data.int_repr()
    data = data.cpu().resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)
    digest = hashlib.sha256(data.numpy())
    digest.update(extra)
    return digest.hexdigest()


def model_fingerprint(backend: str, config: dict, model: torch.nn.Module) -> str:
    """``BACKEND:VERSION:DIGEST`` over the adapter's identifying config and the weights' digest."""
    parts = dict(config, backend=backend, weights=state_dict_digest(model))
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{backend}:{FINGERPRINT_VERSION}:{hashlib.sha256(blob).hexdigest()[:24]}"
