"""Few-shot adaptation and WiSE-FT on the demo world: zero-shot vs linear vs Tip-Adapter vs finetune.

    python benchmarks/adapt_demo.py --out /tmp/adapt_bench            # ~6 min on 2 CPU cores

The demo model is adapted on one style of the shapes world (``--adapt-style``, default "outline":
hollow shapes, zero-shot 47% on 48 classes) from 1, 2, 4, 8 and 16 shots per class and measured
on fresh images of that style, of shifted styles (``--shift-styles``, default "outline+tiny"
(the adaptation style shifted further, zero-shot 27%) and "tiny" (another shift, zero-shot 50%))
and of the plain style the model was trained on (forgetting). Every method is mixed with
the zero-shot classifier at alpha in 0..1 (WiSE-FT); numbers are means over 3 seeds (the shots
drawn and, for finetune, the training order). Images are encoded once per style and reused; only
finetune re-encodes (its image tower changes), per alpha.

Writes OUT/results.json and OUT/wise_<method>_<shots>shot_<shift>.png (WiSE-FT's figure: accuracy
on the adaptation style against a shifted style, one point per alpha), and prints the tables of
docs_adapt.md. The WiSE-FT question asked of every curve: does some interior alpha beat both
endpoints on a shifted style, and how much of the in-style gain does it keep?
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

FINETUNE_ALPHAS = DEFAULT_ALPHAS  # 0, 0.1, ..., 1: one encoding of every eval image per alpha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--adapt-style", default="outline")
    parser.add_argument("--shift-styles", default="outline+tiny,tiny", help="Comma-separated shifted styles.")
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--finetune-shots", default="1,2,4,8,16")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool-per-class", type=int, default=32, help="Adaptation-style images to draw shots from.")
    parser.add_argument("--eval-per-class", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="finetune steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--from-results", action="store_true",
                        help="Summarise, plot and print OUT/results.json again without measuring.")
    args = parser.parse_args()
    if args.from_results:
        record = json.loads((Path(args.out) / "results.json").read_text())
        write_outputs(Path(args.out), record["runs"], record["styles"], record["args"], record["seconds"])
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    start = time.perf_counter()
    # fp32 everywhere: finetune's alpha-0 model must give the zero-shot features bit for bit (auto
    # would pick bf16 on CPUs with native bf16 for the cached features, not for the tuned towers)
    encoder = load_model("demo", device="cpu")
    names = shapes.classnames("both")
    zero_shot = ZeroShotClassifier.build(encoder, names, "openai-imagenet", precision="fp32", cache=False)
    styles = {"adapt": args.adapt_style, **{f"shift:{style}": style for style in args.shift_styles.split(",")},
              "plain": "plain"}
    cache = out / "cache"
    pool = encode_collection(manifest(shapes.write_dataset(out / "data" / "pool", args.pool_per_class, 1001,
                                                           style=args.adapt_style), names),
                             encoder, workers=0, precision="fp32", cache_dir=cache)
    evals = {key: encode_collection(manifest(shapes.write_dataset(out / "data" / key, args.eval_per_class, 2002,
                                                                  style=style), names),
                                    encoder, workers=0, precision="fp32", cache_dir=cache)
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
    write_outputs(out, runs, styles, vars(args), round(time.perf_counter() - start))


def write_outputs(out: Path, runs: list[dict], styles: dict, args: dict, seconds: int) -> None:
    """results.json (every run and the summary), the WiSE-FT figures, and the printed tables."""
    summary = summarise(runs)
    out.mkdir(parents=True, exist_ok=True)
    record = {"styles": styles, "args": args, "seconds": seconds,
              "zero_shot": {key: summary[0]["zero_shot"][key] for key in styles} if summary else {},
              "summary": summary, "runs": runs}
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    for entry in summary:
        if entry["shots"] not in (4, 16):
            continue
        for key in shift_keys(styles):
            plot_sweep(entry["curve"], ["adapt", key, "plain"],
                       out / f"wise_{entry['method']}_{entry['shots']}shot_{styles[key].replace('+', '-')}.png",
                       title=f"{entry['method']}, {entry['shots']} shots/class, mean of {args['seeds']} seeds: "
                             f"adapt = {styles['adapt']}, shifted = {styles[key]}")
    print_tables(summary, styles)
    print(f"\nmeasured in {seconds}s; results in {out / 'results.json'}")


def shift_keys(styles: dict) -> list[str]:
    return [key for key in styles if key.startswith("shift:")]


def summarise(runs: list[dict]) -> list[dict]:
    """Mean curve over seeds per (method, shots), and the WiSE-FT questions asked of it per shifted set:
    the interior alpha best on it, whether it beats both endpoints there, and the share of the in-style
    gain (adapted - zero-shot on the adaptation style) it keeps."""
    summary = []
    for method in ("linear", "tip-adapter", "finetune"):
        for shots in sorted({r["shots"] for r in runs if r["method"] == method}):
            group = [r for r in runs if r["method"] == method and r["shots"] == shots]
            keys = [k for k in group[0]["rows"][0] if k != "alpha"]
            curve = [{"alpha": row["alpha"],
                      **{k: statistics.mean(r["rows"][i][k] for r in group) for k in keys}}
                     for i, row in enumerate(group[0]["rows"])]
            zero, adapted = curve[0], curve[-1]
            gain = adapted["adapt"] - zero["adapt"]

            def kept(row, zero=zero, gain=gain):
                return (row["adapt"] - zero["adapt"]) / gain if gain > 0 else float("nan")

            wise = {}
            for key in (k for k in keys if k.startswith("shift:")):
                i = max(range(1, len(curve) - 1), key=lambda i: curve[i][key])
                # per seed, on the same images: the interior alpha against the better endpoint of that seed
                margins = [r["rows"][i][key] - max(r["rows"][0][key], r["rows"][-1][key]) for r in group]
                wise[key] = {"alpha": curve[i]["alpha"], "row": curve[i], "margin": statistics.mean(margins),
                             "seed_margins": margins, "beats_both": all(m > 0 for m in margins),
                             "gain_kept": kept(curve[i])}
            # forgetting: the largest alpha whose plain-style accuracy stays within 0.5 points of zero-shot's
            safe = max((row for row in curve if row["plain"] >= zero["plain"] - 0.005), key=lambda row: row["alpha"])
            no_forgetting = {"alpha": safe["alpha"], "row": safe, "gain_kept": kept(safe)}
            summary.append({
                "method": method, "shots": shots, "seeds": len(group), "curve": curve,
                "zero_shot": zero, "adapted": adapted, "alpha_0.5": next(r for r in curve if r["alpha"] == 0.5),
                "best_interior_on_shift": wise, "no_forgetting": no_forgetting,
                "seed_std_adapted": {k: statistics.pstdev(r["rows"][-1][k] for r in group) for k in keys},
            })
    return summary


def print_tables(summary: list[dict], styles: dict) -> None:
    keys = ["adapt", *shift_keys(styles), "plain"]
    print(f"\ntop-1 % on 48 classes, mean of seeds; each cell: {' / '.join(styles[k] for k in keys)} "
          f"(adapted on {styles['adapt']}; plain = the style the model was trained on)")
    print(f"{'method':11s} {'shots':>5s} | {'zero-shot (a=0)':>22s} | {'adapted (a=1)':>22s} | {'WiSE a=0.5':>22s}")

    def cell(row):
        return " / ".join(f"{100 * row[k]:5.1f}" for k in keys)

    for e in summary:
        print(f"{e['method']:11s} {e['shots']:5d} | {cell(e['zero_shot']):>22s} | {cell(e['adapted']):>22s} | "
              f"{cell(e['alpha_0.5']):>22s}")
    for key in shift_keys(styles):
        print(f"\nWiSE-FT question on {styles[key]}: the interior alpha best there (mean curve); does it beat both "
              f"endpoints in every seed (mean margin, points), and what share of the in-style gain does it keep?")
        print(f"{'method':11s} {'shots':>5s} | {'best a':>6s} | {styles[key] + ' a=0 / best / a=1':>28s} | "
              f"{'beats both (margin)':>20s} | {'in-style gain kept':>18s}")
        for e in summary:
            w = e["best_interior_on_shift"][key]
            trio = f"{100 * e['zero_shot'][key]:5.1f} / {100 * w['row'][key]:5.1f} / {100 * e['adapted'][key]:5.1f}"
            verdict = f"{'yes' if w['beats_both'] else 'no'} ({100 * w['margin']:+.2f})"
            print(f"{e['method']:11s} {e['shots']:5d} | {w['alpha']:6g} | {trio:>28s} | {verdict:>20s} | "
                  f"{100 * w['gain_kept']:17.0f}%")

    print(f"\nForgetting: the largest alpha whose {styles['plain']} accuracy stays within 0.5 points of zero-shot's, "
          f"and the share of the in-style gain it keeps")
    print(f"{'method':11s} {'shots':>5s} | {'alpha':>5s} | {'accuracies at that alpha':>30s} | gain kept")
    for e in summary:
        f = e["no_forgetting"]
        print(f"{e['method']:11s} {e['shots']:5d} | {f['alpha']:5g} | {cell(f['row']):>30s} | "
              f"{100 * f['gain_kept']:8.0f}%")

if __name__ == "__main__":
    main()
