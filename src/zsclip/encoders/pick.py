"""Which runtime runs a loaded model's towers (``--runtime``): the one asked for, or for ``auto`` the fastest
measured on this machine for this model, at the run's precision.

``auto`` times every candidate (eager PyTorch and each installed graph runtime) on one image batch of 8 and one
text batch of 32 prompts, with the same thread budget, after a warm-up, best of three rounds taken in turns. The
choice is kept beside the model's graphs, keyed by this machine (CPU model, flags, threads) and precision, so it
is measured once. It says in one line (stderr) what it picked and the times it picked by. A candidate that cannot
run here (its int8 gate refuses, say) is left out. On a GPU ``auto`` is eager PyTorch: the runtimes here are
CPU-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence

import torch

from ..errors import InputError
from ..precision import resolve_precision
from ..runtimes import GRAPH_RUNTIMES, cpu_flags, installed
from . import graphs
from .base import Encoder

PROMPTS = [f"a photo of a {word}." for word in ("dog", "cat", "red car", "small bird", "tree", "house", "boat",
                                                   "blue star", "plane", "horse", "green field", "person")] * 3


def with_runtime(encoder: Encoder, runtime: str, precision: str, calibration: Sequence[str] = ()) -> Encoder:
    """``encoder`` with its towers on ``runtime`` ("torch" returns it as it is), prepared for ``precision``
    (graphs exported or found, loaded, int8 gated), so a model that cannot run fails here in one line.
    ``calibration``: image files that calibrate a static int8 image tower (ptq.py; named runtimes only)."""
    if calibration and runtime not in GRAPH_RUNTIMES:
        raise InputError(f"calibration images apply to runtime onnxruntime or openvino, not {runtime}")
    if runtime == "torch":
        return encoder
    if runtime == "auto":
        return pick(encoder, precision)
    from .runtime import RuntimeEncoder

    wrapped = RuntimeEncoder(encoder, runtime, calibration)
    wrapped.prepare(precision)
    return wrapped


def pick(encoder: Encoder, precision: str) -> Encoder:
    """The fastest of eager PyTorch and the installed runtimes for ``encoder`` at ``precision`` (see module doc)."""
    if encoder.device.type != "cpu":
        return encoder
    from .runtime import RuntimeEncoder

    precision = resolve_precision(precision, encoder.device)
    key = _machine_key(precision)
    path = graphs.model_dir(encoder) / "auto.json"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}
    candidates: dict[str, Encoder] = {"torch": encoder}
    for runtime in GRAPH_RUNTIMES:
        if installed(runtime):
            candidates[runtime] = RuntimeEncoder(encoder, runtime)
    record = kept.get(key)
    if record is None or record.get("picked") not in candidates:
        seconds = _times(candidates, precision)
        if not seconds:  # nothing runs at this precision: eager PyTorch says why, in its own line
            return encoder
        record = {"picked": min(seconds, key=seconds.get), "seconds": seconds}
        kept[key] = record
        path.parent.mkdir(parents=True, exist_ok=True)
        with graphs.staged(path) as temporary:
            temporary.write_text(json.dumps(kept, indent=1), encoding="utf-8")
        how = "measured now"
    else:
        how = "as measured before on this machine"
    times = ", ".join(f"{name} {value * 1000:.0f} ms" for name, value in sorted(record["seconds"].items(),
                                                                                 key=lambda item: item[1]))
    print(f"zsclip: runtime auto: {record['picked']} for {encoder.name} at {precision} ({how}: 8 images + 32 "
          f"prompts take {times})", file=sys.stderr)
    chosen = candidates[record["picked"]]
    chosen.prepare(precision)
    return chosen


def _times(candidates: dict[str, Encoder], precision: str, rounds: int = 3) -> dict[str, float]:
    """Best of ``rounds`` seconds per candidate for one image batch of 8 and one text batch of 32 prompts,
    after a warm-up, the candidates taking turns round by round (load that comes and goes on a shared machine
    then hits each alike). A candidate that cannot run (its int8 gate refuses, say) is left out."""
    side = next(iter(candidates.values())).image_size or 224
    pixels = torch.randn(8, 3, side, side, generator=torch.Generator().manual_seed(0))

    def once(encoder: Encoder) -> float:
        start = time.perf_counter()
        encoder.encode_images(pixels, precision)
        encoder.encode_text(PROMPTS[:32], precision, batch_size=32)
        return time.perf_counter() - start

    ready = {}
    for runtime, candidate in candidates.items():
        try:
            candidate.prepare(precision)
            once(candidate)  # the warm-up
        except InputError:
            continue
        ready[runtime] = candidate
    best = dict.fromkeys(ready, float("inf"))
    for _ in range(rounds):
        for runtime, candidate in ready.items():
            best[runtime] = min(best[runtime], once(candidate))
    return best


def _machine_key(precision: str) -> str:
    """This machine as the measurement sees it: CPU model and flags, the thread budget, the precision."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    blob = json.dumps([model, sorted(cpu_flags()), os.cpu_count(), torch.get_num_threads(), torch.__version__])
    return f"{precision}:{torch.get_num_threads()}t:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


__all__ = ["with_runtime", "pick"]
