"""Calibration, accept-or-review and the collection-level correction, measured on the demo world.

    python benchmarks/calibration_demo.py                        # all parts
    python benchmarks/calibration_demo.py --parts time --rows 100000 --classes 1000

Images are drawn by ``zsclip.shapes`` with seeds no test uses (201-2xx), scored by the bundled demo model
(``--model demo``) through zsclip's own library calls (the same as the commands in each line):

(a) temperature scaling: `zsclip calibrate` on one set, ECE (15 bins) of a held-out set before and after;
(b) accept-or-review: `zsclip classify -c FILE --accept-precision 0.95` on the held-out set: the precision
    of the accepted rows against the true labels, and the share accepted;
(c) --transductive: accuracy with and without it (--methods: em, ot, ot-em) on a balanced collection and on
    long-tailed ones (class counts falling geometrically from the first to the last class, 10:1 and
    100:1), the class order shuffled per collection;
(d) the time --transductive adds to `zsclip classify` of a synthetic store (--rows x 512 float16 rows,
    --classes classes), against classify alone, same process.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import zsclip  # noqa: E402
from zsclip import RunOptions, evaluate, shapes  # noqa: E402
from zsclip.data.collections import manifest  # noqa: E402

OPTIONS = RunOptions(workers=0, precision="fp32", device="cpu")


def part_calibration(root: Path, encoder, per_class: int, style: str, templates: str, split: str = "all",
                     bias: bool = False) -> None:
    calib = shapes.write_dataset(root / f"calib-{style}-{split}", per_class, 201, split, "both", style=style)
    test = shapes.write_dataset(root / f"test-{style}-{split}", per_class, 202, split, "both", style=style)
    classes = shapes.classnames("both")
    before = evaluate(manifest(test, classes), encoder, templates, options=OPTIONS)
    fitted = zsclip.calibrate(str(calib), classes=classes, templates=templates, model="demo", options=OPTIONS,
                              bias=bias)
    path = fitted.classifier.save(root / f"calibrated-{style}-{split}.zsc")
    style = f"{style}/{split}" + (" +bias" if bias else "")
    after = evaluate(str(test), classifier=str(path), options=OPTIONS)
    first_before, first_after = next(iter(before.metrics.values())), next(iter(after.metrics.values()))
    print(f"(a) {style:8s} {before.num_images} held-out images, 48 classes, acc1 {first_before['acc1']:.1%} -> "
          f"{first_after['acc1']:.1%}: "
          f"ECE {first_before['calibration']['ece']:.4f} -> {first_after['calibration']['ece']:.4f} after "
          f"temperature {fitted.fit.temperature:.3f} (fitted on {fitted.fit.num_images} images; NLL "
          f"{first_before['calibration']['nll']:.3f} -> {first_after['calibration']['nll']:.3f})", flush=True)
    truth = {str(test.parent / row["path"]): row["label"] for row in csv.DictReader(test.open())}
    for target in (0.9, 0.95):
        rows = list(zsclip.classify(sorted(truth), classifier=str(path), accept_precision=target, top_k=1,
                                    options=OPTIONS))
        accepted = [row for row in rows if row.accepted]
        right = sum(row.labels[0] == truth[row.source] for row in accepted)
        precision = right / len(accepted) if accepted else float("nan")
        print(f"(b) {style:8s} --accept-precision {target}: precision of accepted rows {precision:.1%}, "
              f"{len(accepted)} of {len(rows)} accepted ({len(accepted) / len(rows):.1%})", flush=True)


def long_tail(counts_max: int, classes: int, ratio: float) -> list[int]:
    return [max(1, round(counts_max * ratio ** (-i / (classes - 1)))) for i in range(classes)]


def part_transductive(root: Path, encoder, label: str, style: str, templates: str, seed: int,
                      methods: tuple[str, ...] = ("em",), calibrated: bool = False, bias: bool = False) -> None:
    classes = shapes.classnames(label)
    head: dict = {"classifier": None}
    if calibrated:  # calibrate first, on a balanced labelled set of the same labelling and style (other images)
        calib = shapes.write_dataset(root / f"tcalib-{label}-{style}", 10, 301 + seed, "all", label, style=style)
        fitted = zsclip.calibrate(str(calib), classes=classes, templates=templates, model="demo", options=OPTIONS,
                                  bias=bias)
        head["classifier"] = str(fitted.classifier.save(root / f"tcalibrated-{label}-{style}.zsc"))
    per_pair = 40
    pool = shapes.write_dataset(root / f"pool-{label}-{style}", per_pair, 203 + seed, "all", label, style=style)
    by_class: dict[str, list[str]] = {}
    for row in csv.DictReader(pool.open()):
        by_class.setdefault(row["label"], []).append(str(pool.parent / row["path"]))
    largest = min(len(v) for v in by_class.values())
    rng = random.Random(seed)
    for ratio in (1, 10, 100):
        order = classes[:]
        rng.shuffle(order)
        counts = long_tail(largest, len(classes), ratio) if ratio > 1 else [largest // 2] * len(classes)
        rows = [(path, name) for name, count in zip(order, counts, strict=True)
                for path in rng.sample(by_class[name], count)]
        chosen = root / f"collection-{label}-{style}-{ratio}.csv"
        with chosen.open("w", newline="") as handle:
            csv.writer(handle).writerows([("path", "label"), *rows])
        figures = []
        for method in methods:
            if calibrated:
                result = evaluate(str(chosen), options=OPTIONS, transductive=method, **head)
            else:
                result = evaluate(manifest(chosen, classes), encoder, templates, options=OPTIONS, transductive=method)
            name = next(iter(result.metrics))
            without, corrected = result.metrics[name], result.transductive[name]
            figures.append(f"{method} {corrected['acc1']:.1%} ({(corrected['acc1'] - without['acc1']) * 100:+.1f})")
        print(f"(c) {label:6s} {style:8s} {('calibrated+bias ' if bias else 'calibrated ') if calibrated else ''}"
              f"{'balanced' if ratio == 1 else f'{ratio}:1':9s} {len(rows):4d} images: "
              f"acc1 without {without['acc1']:.1%}; with " + ", ".join(figures), flush=True)


def part_time(root: Path, encoder, rows: int, classes: int) -> None:
    import torch
    from store_speed import synthetic_store

    synthetic_store(root / "big.zse", rows, 512, encoder)
    weights = torch.nn.functional.normalize(torch.randn(512, classes, generator=torch.Generator().manual_seed(0)),
                                            dim=0)
    file = root / "big.zsc"
    zsclip.ZeroShotClassifier(weights, [f"c{i}" for i in range(classes)], [[f"c{i}"] for i in range(classes)],
                              logit_scale=100.0).save(file)
    timings = {}
    for method in (None, "em", "ot"):
        start = time.perf_counter()
        count = sum(1 for _ in zsclip.classify(str(root / "big.zse"),
                                               classifier=str(file), transductive=method, top_k=5))
        timings[method] = time.perf_counter() - start
    base = timings[None]
    print(f"(d) {count} stored rows x {classes} classes: classify {base:.2f} s; --transductive em "
          f"{timings['em']:.2f} s (+{timings['em'] - base:.2f} s, x{timings['em'] / base:.2f}); ot "
          f"{timings['ot']:.2f} s (+{timings['ot'] - base:.2f} s, x{timings['ot'] / base:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="calibration,transductive,time")
    parser.add_argument("--per-class", type=int, default=10, help="(a, b): images per colour-shape pair, per set.")
    parser.add_argument("--styles", default="plain,outline,noise")
    parser.add_argument("--split", default="all", help="(a, b): all 48 colour-shape pairs, or the 8 held-out ones.")
    parser.add_argument("--templates", default="openai-imagenet")
    parser.add_argument("--methods", default="em", help="(c): em, ot, ot-em, comma-separated (each a pass).")
    parser.add_argument("--labels", default="shape,colour", help="(c): how the collections are labelled.")
    parser.add_argument("--calibrated", action="store_true",
                        help="(c): calibrate the classifier first (zsclip calibrate on other images of the style).")
    parser.add_argument("--bias", action="store_true",
                        help="(a, b) and (c) with --calibrated: fit a bias per class too (zsclip calibrate --bias).")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    encoder = zsclip.load_model("demo", device="cpu")
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "calibration" in parts:
            for style in args.styles.split(","):
                part_calibration(root, encoder, args.per_class, style, args.templates, args.split, args.bias)
        if "transductive" in parts:
            for label in args.labels.split(","):
                for style in args.styles.split(","):
                    part_transductive(root, encoder, label, style, args.templates, seed=len(style),
                                      methods=tuple(args.methods.split(",")), calibrated=args.calibrated,
                                      bias=args.bias)
        if "time" in parts:
            part_time(root, encoder, args.rows, args.classes)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
