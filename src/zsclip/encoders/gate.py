"""The int8 gate: an int8 image tower is used only when it gives fp32's answers.

Careless post-training quantisation costs CLIP towers 5-10 points of top-1 in public notebooks, and how
much a given model loses cannot be known without measuring it. So before a runtime's int8 image graph
runs for the first time, this measures the top-1 agreement of int8 with fp32 on held-out labelled images
(zsclip.shapes renders them, so the measurement needs no download and is the same on every machine):
both classify the images against the same fp32 classifier (the shapes' class names in a photo prompt).
Below ``AGREEMENT_FLOOR`` the run is refused in one line with the figure; the figure is kept beside the
int8 graph (``<runtime>-int8.json``), so the gate runs once per model and runtime.

An int8 graph calibrated on the user's images (ptq.py) is also measured on the held-out part of those images
(never used to calibrate it), against fp32's own top-1 on the same classifier; it must pass both. Its note is
``<runtime>-int8-static-<calibration fingerprint>.json``: other calibration images, another note.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import shapes
from ..errors import InputError
from . import graphs

if TYPE_CHECKING:
    from .runtime import RuntimeEncoder

AGREEMENT_FLOOR = 0.99
HELD_OUT_IMAGES = 256
SEED = 20240601
GATE_VERSION = 1
#: bumped for the calibrated graphs' notes (they record the held-out user images as well)
STATIC_GATE_VERSION = 1


def checked_int8(encoder: RuntimeEncoder, source: Path) -> dict:
    """The gate's record for ``encoder``'s int8 image graph (measured now unless kept); refused below the floor."""
    calibrated = getattr(encoder, "calibration", None) is not None
    note = source.with_name(f"{encoder.int8_name()}.json")
    version = STATIC_GATE_VERSION if calibrated else GATE_VERSION
    record = read_note(note)
    if record is None or record.get("version") != version:
        record = measure(encoder, source)
        record["version"] = version
        with graphs.staged(note) as temporary:
            temporary.write_text(json.dumps(record, indent=1), encoding="utf-8")
    fix = ("drop --calibration-images (weight-only / dynamic int8), give calibration images more like the ones you "
           "classify, or use --precision fp32" if calibrated else "use --precision fp32 for this model")
    what = "calibrated int8" if calibrated else "int8"
    if record["agreement"] < AGREEMENT_FLOOR:
        raise InputError(f"{what} on {encoder.runtime} agrees with fp32 on {record['agreement']:.1%} of "
                         f"{record['images']} held-out images, below the {AGREEMENT_FLOOR:.0%} gate: {fix}")
    held = record.get("calibration")
    if held and held["agreement"] < AGREEMENT_FLOOR:
        raise InputError(f"{what} on {encoder.runtime} agrees with fp32 on {held['agreement']:.1%} of the "
                         f"{held['held_out_images']} held-out calibration images (not used to calibrate), below the "
                         f"{AGREEMENT_FLOOR:.0%} gate: {fix}")
    return record


def note_path(source: Path, runtime: str, precision: str) -> Path:
    """Where the notes of a variant (its measured agreement) are kept: beside the graph."""
    return source.with_name(f"{runtime}-{precision}.json")


def read_note(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def measure(encoder: RuntimeEncoder, source: Path, count: int = HELD_OUT_IMAGES) -> dict:
    """Top-1 agreement of the int8 image graph with the fp32 one, and each one's accuracy, on ``count``
    held-out shapes images classified against an fp32 classifier of the shapes' class names."""
    specs = shapes.sample_specs(count, SEED, split="all")
    names = shapes.classnames("both")
    with torch.inference_mode():
        text = encoder.encode_text([f"a photo of a {name}." for name in names], "fp32")
        pixels = torch.stack([encoder.preprocess(shapes.render(spec, size=64)) for spec in specs])
        fp32 = encoder.tower_run("image", "fp32")
        int8 = encoder._engine.load(encoder.int8_graph(source), "int8", torch.get_num_threads())
        top = {label: _top1(run, pixels.numpy(), text) for label, run in (("fp32", fp32), ("int8", int8))}
        calibration = getattr(encoder, "calibration", None)
        if calibration is not None:
            held = calibration.pixels(encoder, "held_out")
            user = {label: _top1(run, held, text) for label, run in (("fp32", fp32), ("int8", int8))}
    truth = torch.tensor([names.index(shapes.label_of(spec)) for spec in specs])
    record = {"version": GATE_VERSION, "runtime": encoder.runtime, "graph": encoder.int8_name(),
              "agreement": float((top["fp32"] == top["int8"]).float().mean()), "images": count,
              "held_out": "zsclip.shapes (all colour-shape pairs, plain style)",
              "accuracy_fp32": float((top["fp32"] == truth).float().mean()),
              "accuracy_int8": float((top["int8"] == truth).float().mean()), "floor": AGREEMENT_FLOOR}
    if calibration is not None:
        record["calibration"] = {**calibration.describe(),
                                 "agreement": float((user["fp32"] == user["int8"]).float().mean())}
    return record


def _top1(run, pixels, text: torch.Tensor) -> torch.Tensor:
    """Top-1 class of each image in ``pixels`` (numpy [N, 3, H, W]) against the classifier ``text`` [C, D]."""
    rows = [torch.from_numpy(run({"pixels": pixels[i:i + 64]})) for i in range(0, len(pixels), 64)]
    features = torch.nn.functional.normalize(torch.cat(rows).float(), dim=-1)
    return (features @ text.T).argmax(dim=-1)


__all__ = ["AGREEMENT_FLOOR", "HELD_OUT_IMAGES", "checked_int8", "measure", "note_path", "read_note"]
