"""Both towers on an inference runtime vs eager PyTorch (issue 36), one run, same threads, as ratios.

    python benchmarks/bench_runtime.py                       # demo model + ViT-B-32 (random weights), ~5 min
    python benchmarks/bench_runtime.py --models demo --classify-images 1000
    python benchmarks/bench_runtime.py --threads 2 --batches 1,8,64 --json runtime.json
    python benchmarks/bench_runtime.py --threads 1 --variants "eager fp32,int8" --batches 8,64 --no-text

Per model: image images/s and text prompts/s at each batch size for eager fp32, eager bf16 (autocast),
ONNX Runtime fp32 / int8, OpenVINO fp32 / int8 (/ bf16 where the CPU has native bf16); the fraction of
the CPU's peak fp32 FLOP/s the image tower reaches (FLOPs counted by torch's FlopCounterMode on the eager
tower; peak = cores x clock x FLOPs per cycle from the CPU's flags); top-1 agreement of each precision with
fp32 on held-out shapes images (zsclip's int8 gate's measurement); int8 calibrated on N rendered shapes images
(``--calibration-images``' static int8: weights and activations; another seed than the gate's images) per
runtime, with the seconds its calibration took; end-to-end ``zsclip classify`` of N
images and a 1,000-class ``zsclip build`` per runtime (demo model), as wall-clock ratios to eager.
Every variant runs with the same thread budget: torch.set_num_threads(T) and the runtimes' intra-op T.
ViT-B-32 is built with random weights (speed does not depend on them; its agreement figures on shapes
images say how much int8 moves its answers, not its accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import zsclip
from zsclip import shapes
from zsclip.encoders import gate, graphs
from zsclip.encoders.runtime import RuntimeEncoder
from zsclip.errors import InputError
from zsclip.runtimes import GRAPH_RUNTIMES, cpu_flags, cpu_has_bf16, installed


def peak_flops(threads: int) -> tuple[float, str]:
    """fp32 FLOP/s the CPU can reach on ``threads`` cores: clock x FMA width x FMA units x 2."""
    flags = cpu_flags()
    mhz = 0.0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            mhz = next(float(line.split(":")[1]) for line in handle if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        mhz = 2000.0
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = lanes * 2 * 2  # two FMA pipes, an FMA is two FLOPs
    unit = "AVX-512" if lanes == 16 else "AVX2"
    how = f"{threads} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle ({unit} FMA x2)"
    return threads * mhz * 1e6 * per_cycle, how


def image_flops(encoder) -> float:
    """FLOPs (2 per multiply-add) of one image through the eager image tower."""
    from torch.utils.flop_counter import FlopCounterMode

    side = encoder.image_size or 224
    # with gradients on, nn.MultiheadAttention takes its plain path, whose projections the counter sees (its
    # fused inference kernel hides them: ViT-B-32 would count 5.9 instead of 8.7 GFLOP = 2 x 4.4 GMAC)
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        encoder._image_forward(torch.zeros(1, 3, side, side))
    return float(counter.get_total_flops())


def best_seconds(calls: dict[str, object], rounds: int, warm_up: bool = True) -> dict[str, float]:
    """Fastest of ``rounds`` timed calls per variant, the variants interleaved round by round (after one
    warm-up call each): on a shared machine, load that comes and goes then hits every variant alike, and the
    best of several calls is the one least disturbed."""
    for call in calls.values() if warm_up else ():
        call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


#: set by main(): rendered calibration images for the calibrated int8 variants, and which variants run
CALIBRATION: list[str] = []
CHOSEN: list[str] = []
TEXT = [True]
CALIBRATION_SECONDS: dict[str, dict[str, float]] = {}


def calibration_images(folder: Path, count: int) -> list[str]:
    """``count`` rendered shapes images (seed 7, not the gate's) as PNG files: what a user would point
    ``--calibration-images`` at."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(shapes.sample_specs(count, 7, split="all")):
        path = folder / f"cal{i:04d}.png"
        shapes.render(spec, size=64).save(path)
        paths.append(str(path))
    return paths


def variants(encoder, threads: int) -> dict[str, tuple]:
    """name -> (image call(pixels), text call(prompts, batch), precision label); int8 graphs run ungated here
    (the speed of each is measured; the gate's figure is reported beside it)."""
    found = _variants(encoder, threads)
    return {name: calls for name, calls in found.items() if not CHOSEN or any(part in name for part in CHOSEN)
            or name == "eager fp32"}


def _variants(encoder, threads: int) -> dict[str, tuple]:
    found = {"eager fp32": (lambda p: encoder.encode_images(p, "fp32"),
                            lambda t, b: encoder.encode_text(t, "fp32", batch_size=b)),
             "eager bf16": (lambda p: encoder.encode_images(p, "bf16"),
                            lambda t, b: encoder.encode_text(t, "bf16", batch_size=b)),
             "eager int8": (lambda p: encoder.encode_images(p, "int8"), None)}
    try:
        encoder.prepare("int8")
    except InputError:  # PyTorch's int8 quantizes nn.Linear forwards; some towers run none (the demo's)
        del found["eager int8"]
    for runtime in GRAPH_RUNTIMES:
        if not installed(runtime):
            continue
        wrapped = RuntimeEncoder(encoder, runtime)
        wrapped.prepare("fp32")
        found[f"{runtime} fp32"] = (lambda p, w=wrapped: w.encode_images(p, "fp32"),
                                    lambda t, b, w=wrapped: w.encode_text(t, "fp32", batch_size=b))
        int8 = wrapped._engine.load(wrapped.int8_graph(graphs.tower_graph(encoder, "image")), "int8", threads)
        found[f"{runtime} int8"] = (lambda p, run=int8: run({"pixels": p.numpy()}), None)
        if CALIBRATION and (not CHOSEN or any(part in f"{runtime} int8 calibrated" for part in CHOSEN)):
            calibrated = RuntimeEncoder(encoder, runtime, CALIBRATION)
            start = time.perf_counter()
            made = calibrated.int8_graph(graphs.tower_graph(encoder, "image"))
            CALIBRATION_SECONDS.setdefault(encoder.name, {}).setdefault(runtime, time.perf_counter() - start)
            static = wrapped._engine.load(made, "int8", threads)
            found[f"{runtime} int8 calibrated"] = (lambda p, run=static: run({"pixels": p.numpy()}), None)
        if runtime == "openvino" and cpu_has_bf16():
            found["openvino bf16"] = (lambda p, w=wrapped: w.encode_images(p, "bf16"),
                                      lambda t, b, w=wrapped: w.encode_text(t, "bf16", batch_size=b))
    return found


def agreement(encoder, threads: int, count: int) -> dict[str, dict]:
    """Top-1 agreement with eager fp32 (and accuracy) on ``count`` held-out shapes images, per precision
    (the int8 gate's images and classifier)."""
    specs = shapes.sample_specs(count, gate.SEED, split="all")
    names = shapes.classnames("both")
    pixels = torch.stack([encoder.preprocess(shapes.render(spec, size=64)) for spec in specs])
    truth = torch.tensor([names.index(shapes.label_of(spec)) for spec in specs])
    text = encoder.encode_text([f"a photo of a {name}." for name in names], "fp32")
    tops = {}
    heavy = image_flops(encoder) > 1e9
    for name, (images, _) in variants(encoder, threads).items():
        if heavy and emulated_bf16(name):
            continue
        rows = [torch.as_tensor(images(pixels[i:i + 64])) for i in range(0, len(pixels), 64)]
        features = torch.nn.functional.normalize(torch.cat(rows).float(), dim=-1)
        tops[name] = (features @ text.T).argmax(dim=-1)
    return {name: {"agreement": float((top == tops["eager fp32"]).float().mean()),
                   "accuracy": float((top == truth).float().mean())} for name, top in tops.items()}


def emulated_bf16(variant: str) -> bool:
    """Eager bf16 on a CPU without native bf16 is emulated, several times slower than fp32 (ViT-B-32: 0.3
    images/s here): timed at the smallest batch only, so the run stays minutes long."""
    return variant == "eager bf16" and not cpu_has_bf16()


def towers(encoder, batches: list[int], threads: int, rounds: int) -> dict:
    side = encoder.image_size or 224
    words = [f"{a} {b}" for a in ("red", "big", "old", "small", "wet", "dark", "shiny", "tiny")
             for b in ("dog", "cat", "car", "tree", "house", "boat", "bird", "lamp")]
    found = variants(encoder, threads)
    results: dict[str, dict] = {name: {} for name in found}
    heavy = image_flops(encoder) > 1e9
    for batch in batches:
        pixels = torch.randn(batch, 3, side, side)
        calls = {name: (lambda run=images, p=pixels: run(p)) for name, (images, _) in found.items()
                 if batch == min(batches) or not emulated_bf16(name)}
        # a large model's largest batch: one timed call each (the smaller batches warmed every graph up)
        once = heavy and batch == max(batches) and len(batches) > 1
        best = best_seconds(calls, 1 if once else rounds, warm_up=not once)
        for name, seconds in best.items():
            results[name][f"image b{batch}"] = batch / seconds
        prompts = [f"a photo of a {w}, number {i}." for i, w in enumerate((words * 4)[:max(batch, 64)])]
        best = best_seconds({name: (lambda run=text, p=prompts, b=batch: run(p, b)) for name, (_, text) in found.items()
                             if TEXT[0] and text is not None and (batch == min(batches) or not emulated_bf16(name))},
                            rounds)
        for name, seconds in best.items():
            results[name][f"text b{batch}"] = len(prompts) / seconds
        print(f"  batch {batch}: " + ", ".join(f"{name} {row[f'image b{batch}']:.1f} img/s" for name, row
                                                in results.items() if f"image b{batch}" in row),
              file=sys.stderr, flush=True)
    return results


def end_to_end(threads: int, images: int, classes: int) -> dict:
    """Wall-clock seconds of `zsclip classify` (N shapes images) and `zsclip build` (C classes), per runtime."""
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = shapes.write_dataset(Path(tmp) / "imgs", per_class=max(1, images // 48), seed=3).parent
        labels = Path(tmp) / "classes.txt"
        labels.write_text("\n".join(f"class {i} thing" for i in range(classes)) + "\n", encoding="utf-8")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        for runtime in ("torch", *[r for r in GRAPH_RUNTIMES if installed(r)]):
            times = {}
            for what, args in (("classify", ["classify", str(folder / "images"), "--labels-file",
                                             str(folder / "labels.txt"), "-o", f"{tmp}/{runtime}.csv"]),
                               ("build", ["build", "--labels-file", str(labels), "--templates", "photo", "--no-cache",
                                          "-o", f"{tmp}/{runtime}.zsc"])):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "zsclip", *args, "--model", "demo", "--device", "cpu",
                                "--runtime", runtime], check=True, env=env, capture_output=True)
                times[what] = time.perf_counter() - start
            out[runtime] = times
            print(f"  e2e {runtime}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()), file=sys.stderr)
        out["images"] = len(list((folder / "images").iterdir()))
        out["classes"] = classes
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,ViT-B-32")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per variant and cell (the best counts)")
    parser.add_argument("--classify-images", type=int, default=1000)
    parser.add_argument("--build-classes", type=int, default=1000)
    parser.add_argument("--agreement-images", type=int, default=gate.HELD_OUT_IMAGES)
    parser.add_argument("--calibration-images", type=int, default=64,
                        help="rendered images that calibrate the static int8 variants (0: leave them out)")
    parser.add_argument("--variants", default="", help="comma-separated parts of the variant names to run "
                        "(eager fp32 always runs: every ratio is to it); default all")
    parser.add_argument("--no-text", action="store_true", help="time the image tower only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    CHOSEN.extend(part.strip() for part in args.variants.split(",") if part.strip())
    TEXT[0] = not args.no_text
    if args.calibration_images:
        CALIBRATION.extend(calibration_images(Path(tempfile.mkdtemp(prefix="zsclip-calibration-")),
                                              args.calibration_images))
    batches = [int(b) for b in args.batches.split(",")]
    peak, how = peak_flops(args.threads)
    report = {"threads": args.threads, "peak_flops": peak, "peak": how, "bf16_native": cpu_has_bf16(), "models": {}}
    print(f"peak fp32: {peak / 1e9:.0f} GFLOP/s ({how}); native bf16: {cpu_has_bf16()}", file=sys.stderr)
    for name in [model for model in args.models.split(",") if model and model != "none"]:  # none: end to end only
        encoder = zsclip.load_model(name, "random" if name != "demo" else None, device="cpu")
        flops = image_flops(encoder)
        print(f"{name}: {flops / 1e9:.2f} GFLOP per image", file=sys.stderr)
        speeds = towers(encoder, batches, args.threads, args.rounds)
        report["models"][name] = {"image_gflop": flops / 1e9, "speed": speeds,
                                  "agreement": agreement(encoder, args.threads, args.agreement_images),
                                  "calibration_seconds": CALIBRATION_SECONDS.get(encoder.name, {}),
                                  "calibration_images": args.calibration_images}
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.classify_images:
        report["end_to_end"] = end_to_end(args.threads, args.classify_images, args.build_classes)
    print_tables(report, batches)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")


def print_tables(report: dict, batches: list[int]) -> None:
    for name, model in report["models"].items():
        speed = model["speed"]
        base = speed["eager fp32"]
        print(f"\n### {name} ({model['image_gflop']:.2f} GFLOP/image, {report['threads']} threads)\n")
        head = [f"images/s b{b}" for b in batches] + [f"prompts/s b{b}" for b in batches]
        print("| variant | " + " | ".join(head) + " | peak FLOP/s at best | agreement / acc. |")
        print("|---" * (len(head) + 3) + "|")
        for variant, row in speed.items():
            cells = []
            for kind in ("image", "text"):
                for b in batches:
                    key = f"{kind} b{b}"
                    cells.append(f"{row[key]:.1f} ({row[key] / base[key]:.2f}x)" if key in row else "-")
            best = max(row[f"image b{b}"] for b in batches if f"image b{b}" in row)
            fraction = best * model["image_gflop"] * 1e9 / report["peak_flops"]
            agree = model["agreement"].get(variant, {})
            print(f"| {variant} | " + " | ".join(cells) + f" | {fraction:.0%} | "
                  f"{agree.get('agreement', float('nan')):.1%} / {agree.get('accuracy', float('nan')):.1%} |")
        for runtime, seconds in model.get("calibration_seconds", {}).items():
            print(f"\n{runtime} int8 calibrated: calibration on {model['calibration_images']} images took "
                  f"{seconds:.1f} s")
    e2e = report.get("end_to_end")
    if e2e:
        print(f"\n### end to end (demo model): classify {e2e['images']} images, build {e2e['classes']} classes\n")
        print("| runtime | classify s | vs eager | build s | vs eager |\n|---|---|---|---|---|")
        for runtime in ("torch", "onnxruntime", "openvino"):
            if runtime in e2e:
                t = e2e[runtime]
                print(f"| {runtime} | {t['classify']:.1f} | {e2e['torch']['classify'] / t['classify']:.2f}x | "
                      f"{t['build']:.1f} | {e2e['torch']['build'] / t['build']:.2f}x |")


if __name__ == "__main__":
    main()
