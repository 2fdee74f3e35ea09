"""Few-shot adaptation and WiSE-FT on the demo world: zero-shot vs linear vs Tip-Adapter vs finetune.

    python benchmarks/adapt_demo.py --out /tmp/adapt_bench            # ~10 min on 2 CPU cores

The demo model is adapted on one style of the shapes world (``--adapt-style``, default "outline":
hollow shapes, zero-shot ~49% on 48 classes) from 1, 2, 4, 8 and 16 shots per class and measured
on fresh images of that style, of a shifted style (``--shift-style``, default "outline+tiny",
zero-shot ~28%) and of the plain style it was trained on (forgetting). Every method is mixed with
the zero-shot classifier at alpha in 0..1 (WiSE-FT); numbers are means over 3 seeds (the shots
drawn and, for finetune, the training order). Images are encoded once per style and reused; only
finetune re-encodes (its image tower changes), at fewer settings (--finetune-shots, 5 alphas).

Writes OUT/results.json and OUT/wise_<method>_<shots>shot.png (WiSE-FT's figure), and prints the
tables of docs_adapt.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from zsclip import ZeroShotClassifier, load_model, shapes
from zsclip.adapt import encode_collection, linear_probe, sweep_heads, tip_adapter
from zsclip.adapt.finetune import FineTuneSettings, encode_pixels, finetune, load_pixels
from zsclip.adapt.report import plot_sweep
from zsclip.adapt.wise import DEFAULT_ALPHAS
from zsclip.data.collections import manifest

FINETUNE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--adapt-style", default="outline")
    parser.add_argument("--shift-style", default="outline+tiny")
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--finetune-shots", default="1,4,16")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool-per-class", type=int, default=32, help="Adaptation-style images to draw shots from.")
    parser.add_argument("--eval-per-class", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="finetune steps")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    start = time.perf_counter()
    encoder = load_model("demo", device="cpu")
    names = shapes.classnames("both")
    zero_shot = ZeroShotClassifier.build(encoder, names, "openai-imagenet", cache=False)
    styles = {"adapt": args.adapt_style, "shifted": args.shift_style, "plain": "plain"}
    cache = out / "cache"
    pool = encode_collection(manifest(shapes.write_dataset(out / "data" / "pool", args.pool_per_class, 1001,
                                                           style=args.adapt_style), names),
                             encoder, workers=0, cache_dir=cache)
    evals = {key: encode_collection(manifest(shapes.write_dataset(out / "data" / key, args.eval_per_class, 2002,
                                                                  style=style), names),
                                    encoder, workers=0, cache_dir=cache)
             for key, style in styles.items()}
    print(f"encoded {len(pool)} pool + {sum(len(e) for e in evals.values())} eval images "
          f"({time.perf_counter() - start:.0f}s)", flush=True)
    pixels = {key: load_pixels(data.names, encoder)[0] for key, data in evals.items()}
    runs = []  # {"method", "shots", "seed", "rows": [{"alpha", adapt, shifted, plain}], "chosen"}
    for shots in [int(s) for s in args.shots.split(",")]:
        for seed in range(args.seeds):
            chosen = pool.few_shot(shots, seed)
            for method, fit in (("linear", linear_probe), ("tip-adapter", tip_adapter)):
                head = fit(zero_shot, chosen, seed=seed)
                runs.append({"method": method, "shots": shots, "seed": seed,
                             "chosen": head.provenance["adaptation"]["cross_validation"]["chosen"],
                             "rows": sweep_heads(zero_shot, head, evals, DEFAULT_ALPHAS)})
        print(f"heads {shots}-shot done ({time.perf_counter() - start:.0f}s)", flush=True)
    for shots in [int(s) for s in args.finetune_shots.split(",") if s]:
        for seed in range(args.seeds):
            chosen = pool.few_shot(shots, seed)
            tuned = finetune(encoder, zero_shot, chosen, FineTuneSettings(steps=args.steps, seed=seed))
            rows = []
            for alpha in FINETUNE_ALPHAS:
                model, head = tuned.model(alpha), tuned.head(alpha)
                rows.append({"alpha": alpha, **{key: float((encode_pixels(model, pixels[key]) @ head).argmax(1)
                                                            .eq(evals[key].targets).float().mean())
                                                for key in evals}})
            runs.append({"method": "finetune", "shots": shots, "seed": seed, "rows": rows,
                         "loss": [tuned.losses[0], tuned.losses[-1]]})
            print(f"finetune {shots}-shot seed {seed} done ({time.perf_counter() - start:.0f}s)", flush=True)
    summary = summarise(runs)
    out.mkdir(parents=True, exist_ok=True)
    record = {"styles": styles, "args": vars(args), "seconds": round(time.perf_counter() - start),
              "zero_shot": {key: summary[0]["zero_shot"][key] for key in styles} if summary else {},
              "summary": summary, "runs": runs}
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    for entry in summary:
        if entry["shots"] in (4, 16):
            plot_sweep(entry["curve"], ["adapt", "shifted"], out / f"wise_{entry['method']}_{entry['shots']}shot.png",
                       title=f"{entry['method']}, {entry['shots']} shots/class, mean of {args.seeds} seeds: "
                             f"adapt = {styles['adapt']}, shifted = {styles['shifted']}")
    print_tables(summary, styles)
    print(f"\ntotal {time.perf_counter() - start:.0f}s; results in {out / 'results.json'}")


def summarise(runs: list[dict]) -> list[dict]:
    """Mean curve over seeds per (method, shots), and the WiSE-FT questions asked of it."""
    summary = []
    for method in ("linear", "tip-adapter", "finetune"):
        for shots in sorted({r["shots"] for r in runs if r["method"] == method}):
            group = [r for r in runs if r["method"] == method and r["shots"] == shots]
            keys = [k for k in group[0]["rows"][0] if k != "alpha"]
            curve = [{"alpha": row["alpha"],
                      **{k: statistics.mean(r["rows"][i][k] for r in group) for k in keys}}
                     for i, row in enumerate(group[0]["rows"])]
            ends = curve[0], curve[-1]
            interior = curve[1:-1]
            best = max(interior, key=lambda row: row["shifted"])
            half = next(row for row in curve if row["alpha"] == 0.5)
            summary.append({
                "method": method, "shots": shots, "seeds": len(group), "curve": curve,
                "zero_shot": ends[0], "adapted": ends[1], "alpha_0.5": half, "best_shifted_interior": best,
                "interior_beats_both_on_shifted": best["shifted"] > max(ends[0]["shifted"], ends[1]["shifted"]),
                "seed_std_adapted": {k: statistics.pstdev(r["rows"][-1][k] for r in group) for k in keys},
            })
    return summary


def print_tables(summary: list[dict], styles: dict) -> None:
    print(f"\ntop-1 % on 48 classes, mean of seeds. adapt = {styles['adapt']}, shifted = {styles['shifted']}, "
          "plain = training style")
    print(f"{'method':12s} {'shots':>5s} | {'zero-shot (a=0)':>22s} | {'adapted (a=1)':>22s} | {'WiSE a=0.5':>22s} | "
          f"{'best interior a on shifted':>32s} | beats both?")
    for e in summary:
        def cell(row):
            return f"{100 * row['adapt']:5.1f} {100 * row['shifted']:5.1f} {100 * row['plain']:5.1f}"

        best = e["best_shifted_interior"]
        print(f"{e['method']:12s} {e['shots']:5d} | {cell(e['zero_shot']):>22s} | {cell(e['adapted']):>22s} | "
              f"{cell(e['alpha_0.5']):>22s} | a={best['alpha']:<4g} {cell(best):>26s} | "
              f"{'yes' if e['interior_beats_both_on_shifted'] else 'no'}")
    print("(each cell: adapt shifted plain)")


if __name__ == "__main__":
    main()
