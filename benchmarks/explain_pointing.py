"""Pointing game for heatmaps (issue 35) on demo-world scenes, and what an explanation costs.

Scenes of two or three shapes placed at random (zsclip.shapes.sample_scene: distinct colour-shape pairs,
distinct colours, no overlap; each shape's box is its centre +- its radius). For each scene one shape is
asked (its class is present once) and one class not in the scene. Per method (and without upscaling):

- asked: share of heatmaps of the asked class whose maximum falls inside the asked shape's box (goal >= 90%);
- absent, same box: the same share for the class not in the scene (a control: a map that ignores the text
  scores as high here as for the asked class; lower is better);
- absent, any box: share whose maximum still falls on some shape.

Cost: seconds per image of ``zsclip.explain`` (top-1 label, files written) against ``zsclip.classify`` of the
same image files with the same loaded model, in the same run; peak memory (max RSS) of a fresh process
explaining the images against one classifying them.

    PYTHONPATH=src python benchmarks/explain_pointing.py --scenes 200
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import zsclip
from zsclip import shapes
from zsclip.heatmaps import METHODS, image_heatmaps


def box(spec, size):
    return ((spec.centre[0] - spec.radius) * size, (spec.centre[1] - spec.radius) * size,
            (spec.centre[0] + spec.radius) * size, (spec.centre[1] + spec.radius) * size)


def inside(heat, b) -> bool:
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return b[0] <= x + 0.5 <= b[2] and b[1] <= y + 0.5 <= b[3]


def pointing(encoder, classifier, scenes, size, seed):
    rng = random.Random(seed)
    names = classifier.classnames
    images = [shapes.render_scene(scene, size) for scene in scenes]
    asked = [rng.choice(scene.shapes) for scene in scenes]
    absent = [rng.choice([n for n in names if n not in scene.labels]) for scene in scenes]
    columns = classifier.weights
    targets = [torch.stack([columns[:, names.index(a.label)], columns[:, names.index(b)]])
               for a, b in zip(asked, absent, strict=True)]
    rows = []
    for method in METHODS:
        for upscale in (None, 1):
            maps = []
            for start in range(0, len(images), 8):
                maps += image_heatmaps(encoder, images[start:start + 8], targets[start:start + 8], method=method,
                                       upscale=upscale)
            hit = [inside(m[0], box(spec, size)) for m, spec in zip(maps, asked, strict=True)]
            absent_same = [inside(m[1], box(spec, size)) for m, spec in zip(maps, asked, strict=True)]
            absent_any = [any(inside(m[1], box(s, size)) for s in scene.shapes)
                          for m, scene in zip(maps, scenes, strict=True)]
            rows.append({"method": method, "upscale": "auto" if upscale is None else upscale,
                         "asked": float(np.mean(hit)), "absent_same_box": float(np.mean(absent_same)),
                         "absent_any_box": float(np.mean(absent_any)), "scenes": len(scenes)})
    return rows


def cost(encoder, classnames, folder: Path, repeats: int):
    files = sorted(folder.glob("*.png"))
    options = zsclip.RunOptions(device=str(encoder.device), workers=0)
    list(zsclip.classify(files, classnames, encoder=encoder, options=options))  # warm: classifier built, cached
    timings = {}
    for _ in range(repeats):
        start = time.perf_counter()
        list(zsclip.classify(files, classnames, encoder=encoder, options=options))
        timings.setdefault("classify", []).append(time.perf_counter() - start)
        for method in METHODS:
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                list(zsclip.explain(files, classnames, encoder=encoder, method=method, output_dir=out,
                                    options=options))
                timings.setdefault(method, []).append(time.perf_counter() - start)
    best = {key: min(values) / len(files) for key, values in timings.items()}
    return {"images": len(files), "seconds_per_image": best,
            "ratio_to_classify": {m: best[m] / best["classify"] for m in METHODS}}


_PEAK = """
import sys, tempfile, zsclip
files, kind = [f for f in sys.argv[1:-1] if f.endswith('.png')], sys.argv[-1]
names = [line for line in open(sys.argv[-2]).read().splitlines() if line]
opts = zsclip.RunOptions(device='cpu', workers=0)
enc = zsclip.load_model('demo', device='cpu')
list(zsclip.explain(files[:1], names, encoder=enc, options=opts))  # warm: classifier built, first batch run
def status(key):
    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith(key)) / 1024
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
base = status('VmRSS:')
if kind == 'classify':
    list(zsclip.classify(files, names, encoder=enc, options=opts))
else:
    with tempfile.TemporaryDirectory() as out:
        list(zsclip.explain(files, names, encoder=enc, method=kind, output_dir=out, options=opts))
print(status('VmHWM:') - base)
"""


def peak_memory(folder: Path):
    files = [str(p) for p in sorted(folder.glob("*.png"))]
    out = {}
    for kind in ("classify", *METHODS):
        result = subprocess.run([sys.executable, "-c", _PEAK, *files, str(folder / "labels.txt"), kind],
                                capture_output=True, text=True, check=True)
        out[kind] = float(result.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--size", type=int, default=128, help="scene side in pixels (the demo model sees 64)")
    parser.add_argument("--seed", type=int, default=35)
    parser.add_argument("--cost-images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = zsclip.load_model("demo", device=args.device)
    classnames = shapes.classnames()
    classifier = zsclip.ZeroShotClassifier.build(encoder, classnames)
    rng = random.Random(args.seed)
    scenes = [shapes.sample_scene(rng) for _ in range(args.scenes)]
    rows = pointing(encoder, classifier, scenes, args.size, args.seed + 1)
    print("| method | upscale | asked class: max in its box | absent class: max in that box "
          "| absent: max on any shape |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['upscale']} | {row['asked']:.1%} | {row['absent_same_box']:.1%} "
              f"| {row['absent_any_box']:.1%} |")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for index, scene in enumerate(scenes[: args.cost_images]):
            shapes.render_scene(scene, args.size).save(folder / f"scene_{index:04d}.png")
        (folder / "labels.txt").write_text("\n".join(classnames) + "\n")
        timing = cost(encoder, classnames, folder, args.repeats)
        memory = peak_memory(folder) if args.device == "cpu" else {}
    print(f"\n{timing['images']} images on {args.device}, seconds per image (best of {args.repeats}):")
    for key, value in timing["seconds_per_image"].items():
        ratio = "" if key == "classify" else f"  ({timing['ratio_to_classify'][key]:.1f}x classify)"
        print(f"  {key}: {value * 1000:.1f} ms{ratio}")
    if memory:
        print("peak RSS growth while handling the images, after a warm first image (MiB): "
              + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"pointing": rows, "cost": timing, "peak_rss_mib": memory}, indent=2))


if __name__ == "__main__":
    main()
