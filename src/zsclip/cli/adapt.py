"""``zsclip adapt``: from the zero-shot classifier to a few-shot one, WiSE-FT mixed, with a report.

Library work is in ``zsclip.adapt`` (features / heads / wise / finetune); this module parses,
calls them, prints and exits: 0 when every image was used, 1 when some were skipped (each named on
stderr), 2 for usage errors.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..data.images import MAX_PIXELS
from ..errors import InputError, ZsclipWarning
from ..options import RunOptions
from ..outputs.text import printable
from ..precision import PRECISIONS
from .common import calibration_images_for, given, runtime_option, usage_errors

if TYPE_CHECKING:
    from ..adapt.features import LabelledFeatures

METHODS = ("linear", "tip-adapter", "finetune")
#: fine-tuned sweeps re-encode every eval image per alpha: fewer points
FINETUNE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@click.command(name="adapt", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data", "-d", required=True,
              help="The labelled shots: a class-per-folder tree or a .csv/.jsonl manifest (path,label).")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
              help="Class names (synonyms 'dog | puppy'), one per line in the folders' sorted order.")
@click.option("--templates", "-t", default="openai-imagenet", show_default=True,
              help="Templates of the zero-shot classifier every method starts from (set name or file).")
@click.option("--method", type=click.Choice(METHODS), default="linear", show_default=True,
              help="linear: probe from the zero-shot weights; tip-adapter: training-free cache; "
                   "finetune: train the image tower (open_clip models).")
@click.option("--shots", type=click.IntRange(min=1), default=None,
              help="Use this many images per class, drawn with --seed (default: all of them).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for drawing shots, folds and training.")
@click.option("--alpha", type=float, default=None,
              help="WiSE-FT mixing weight: 0 = zero-shot, 1 = adapted. Default 1 for linear and tip-adapter "
                   "(cross-validation already chose how far to move), 0.5 for finetune (the WiSE-FT paper's).")
@click.option("--sweep-alpha", is_flag=True,
              help="Measure every alpha in 0..1 on the --eval sets (a report, not a choice: the output "
                   "still uses --alpha; picking alpha on eval data would overfit it).")
@click.option("--eval", "eval_sets", multiple=True,
              help="Labelled data to measure on (repeatable; same classes). The first is the adaptation "
                   "distribution, the second a shifted one, in the report's plot.")
@click.option("--report", "-r", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write index.html, metrics.json and alpha_sweep.png (WiSE-FT's figure) here.")
@click.option("--output", "-o", required=True,
              help="Classifier file (.zsc) for linear / tip-adapter; a new folder for finetune "
                   "(open_clip local-dir model + classifier.zsc).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=1),
              help="finetune: steps (refused with the other methods).")
@click.option("--lr", default=1e-4, show_default=True, type=float,
              help="finetune: image tower learning rate (refused with the other methods).")
@click.option("--model", "-m", default=None, help="Model, as for `zsclip classify` (e.g. demo, local-dir:PATH).")
@click.option("--pretrained", default=None, help="Weights tag or checkpoint for an open_clip name.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@runtime_option
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache folder for classifiers and encoded features.")
@click.option("--no-cache", is_flag=True, help="Encode and build afresh; store nothing.")
@click.option("--batch-size", "-b", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", "-j", default=None, type=click.IntRange(min=0), help="Decoding processes.")
def adapt_command(data, labels_file, templates, method, shots, seed, alpha, sweep_alpha, eval_sets, report_dir,
                  output, steps, lr, model, pretrained, device, precision, cache_dir, no_cache, batch_size,
                  workers) -> None:
    """Adapt the zero-shot classifier to a few labelled images per class.

    Every method starts from the zero-shot classifier, works on image features encoded once
    (cached), and chooses its settings by cross-validation on the shots only. The result is an
    ordinary classifier whose provenance records method, shots, alpha and the data's fingerprint.

    \b
    Examples:
      zsclip adapt --data shots/ --method linear --output adapted.zsc
      zsclip adapt --data shots/ --method tip-adapter --shots 16 --output adapted.zsc
      zsclip adapt --data shots/ --method finetune --alpha 0.5 --output adapted/
      zsclip adapt --data shots/ --sweep-alpha --eval id/ --eval shifted/ --report report/ --output a.zsc
      zsclip classify photos/ --classifier adapted.zsc
      zsclip classify photos/ --model local-dir:adapted/ --classifier adapted/classifier.zsc
    """
    from .. import ZeroShotClassifier, load_model
    from ..adapt.features import check_shots, encode_collection
    from ..adapt.wise import check_alpha
    from ..tasks.models import DEFAULT_MODEL, DEFAULT_PRETRAINED

    encode = dict(precision=precision, batch_size=batch_size, workers=workers, max_pixels=MAX_PIXELS,
                  cache=not no_cache, cache_dir=cache_dir, progress=sys.stderr.isatty())
    with usage_errors():
        alpha = check_alpha(alpha if alpha is not None else (0.5 if method == "finetune" else 1.0))
        trained = [f"--{name}" for name in ("steps", "lr") if given(name)]
        if trained and method != "finetune":
            raise InputError(f"{trained[0]} applies to --method finetune (training the image tower); {method} "
                             "chooses its settings by cross-validation on the shots")
        runtime = click.get_current_context().meta.get("zsclip_runtime", "torch")
        if method == "finetune" and runtime != "torch":
            raise InputError(f"--runtime {runtime} runs frozen towers; --method finetune trains the image tower "
                             "in eager PyTorch: drop --runtime (or use --method linear or tip-adapter)")
        options = RunOptions(device=device, precision=precision, runtime=runtime,
                             calibration=calibration_images_for(runtime, precision))
        if (sweep_alpha or report_dir) and not eval_sets:
            raise InputError("--sweep-alpha and --report measure on --eval data: add --eval DATA")
        _check_output(output, method)  # before any image is encoded or any step trained
        if report_dir:
            from .eval import _check_report_folder

            _check_report_folder(Path(report_dir))
        classes = _read_classes(labels_file)
        collection = _collection(data, classes)
        model = model or DEFAULT_MODEL
        if model == DEFAULT_MODEL and pretrained is None:
            pretrained = DEFAULT_PRETRAINED
        encoder = load_model(model, pretrained, device=options.model_device)
        if runtime != "torch":  # frozen towers on the runtime (the same wrapping every command's model gets)
            from ..encoders.pick import with_runtime

            encoder = with_runtime(encoder, runtime, precision, options.calibration)
        pool = encode_collection(collection, encoder, **encode)
        _report_failures(pool)
        chosen = pool.few_shot(shots, seed) if shots else pool
        check_shots(chosen)
        zero_shot = ZeroShotClassifier.build(encoder, classes or collection.classnames, templates,
                                             precision=precision, cache=not no_cache, cache_dir=cache_dir)
        evals = {}
        for path in eval_sets:
            evaluated = encode_collection(_collection(path, classes, collection.classnames), encoder, **encode)
            _report_failures(evaluated)
            _warn_overlap(chosen, evaluated, path)
            evals[_unique_name(path, evals)] = evaluated
        click.echo(f"zsclip: {method} on {len(chosen)} images ({_shots_text(chosen)} per class, "
                   f"{len(chosen.classnames)} classes)", err=True)
        if method == "finetune":
            record, rows = _finetune(encoder, zero_shot, chosen, evals, alpha, sweep_alpha, output, steps, lr, seed)
        else:
            record, rows = _head(method, zero_shot, chosen, evals, alpha, sweep_alpha, output, seed)
    for name in evals:
        at = {row["alpha"]: row[name] for row in rows}
        click.echo(f"{name:24s} zero-shot {at[0.0]:.2%}  alpha {alpha:g}: {at[alpha]:.2%}"
                   + (f"  adapted (alpha 1): {at[1.0]:.2%}" if 1.0 in at and alpha != 1.0 else ""))
    if report_dir:
        from ..adapt.report import write_report

        record.update(data=data, method=method, eval=list(evals), sweep=rows, failures=pool.failures,
                      model=model, pretrained=pretrained)
        page = write_report(report_dir, record, list(evals))
        click.echo(f"zsclip: report in {page}", err=True)
    failed = len(pool.failures) + sum(len(e.failures) for e in evals.values())
    sys.exit(1 if failed else 0)


def _check_output(output: str, method: str) -> None:
    """The output place, checked before the work: a classifier file for the heads (not a folder), a
    new or empty folder for finetune (a model is written into it)."""
    from ..outputs.atomic import check_writable

    path = Path(output)
    if method == "finetune":
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InputError(f"--output {printable(output)} exists and is not an empty folder: finetune writes a "
                             "model folder there; give a new folder name")
        if not path.exists():
            check_writable(path, "--output")  # its parent exists and takes new entries
        return
    if path.is_dir():
        raise InputError(f"--output {printable(output)} is a folder: {method} writes a classifier file; give a "
                         "file name such as adapted.zsc")
    check_writable(path, "--output")


def _head(method, zero_shot, shots, evals, alpha, sweep, output, seed):
    from ..adapt.heads import linear_probe, tip_adapter
    from ..adapt.wise import DEFAULT_ALPHAS, mix_heads, sweep_heads

    adapted = linear_probe(zero_shot, shots, seed=seed) if method == "linear" else tip_adapter(zero_shot, shots,
                                                                                                seed=seed)
    mixed = mix_heads(zero_shot, adapted, alpha)
    path = mixed.save(output)
    chosen = adapted.provenance["adaptation"].get("cross_validation", {})
    click.echo(f"zsclip: wrote {path} (alpha {alpha:g}; cross-validated on the shots, "
               f"{chosen.get('folds')} folds: {chosen.get('chosen')})", err=True)
    alphas = sorted({*(DEFAULT_ALPHAS if sweep else (0.0, 1.0)), alpha})
    rows = sweep_heads(zero_shot, adapted, evals, alphas) if evals else []
    return {"provenance": mixed.provenance, "output": str(path)}, rows


def _finetune(encoder, zero_shot, shots, evals, alpha, sweep, output, steps, lr, seed):
    from ..adapt.finetune import FineTuneSettings, encode_pixels, finetune, load_pixels

    tuned = finetune(encoder, zero_shot, shots, FineTuneSettings(steps=steps, lr=lr, seed=seed),
                     progress=sys.stderr.isatty())
    folder, classifier = tuned.save(output, alpha)
    click.echo(f"zsclip: wrote {folder} (open_clip local-dir model, alpha {alpha:g}, loss "
               f"{tuned.losses[0]:.3f} -> {tuned.losses[-1]:.3f}) and {folder / 'classifier.zsc'}; use "
               f"--model local-dir:{folder} --classifier {folder / 'classifier.zsc'}", err=True)
    rows = []
    if evals:
        pixels = {}
        for name, data in evals.items():
            pixels[name], failures = load_pixels(data.names, encoder)
            if failures:
                raise InputError(f"{failures[0]['path']} changed while adapting: {failures[0]['error']}")
        for a in sorted({*(FINETUNE_ALPHAS if sweep else (0.0, 1.0)), alpha}):
            model, head = tuned.model(a), tuned.head(a)
            rows.append({"alpha": a, **{name: float((encode_pixels(model, pixels[name]) @ head).argmax(1)
                                                    .eq(evals[name].targets).float().mean())
                                        for name in evals}})
    return {"provenance": classifier.provenance, "output": str(folder)}, rows


# --- helpers --------------------------------------------------------------------------------------
def _read_classes(labels_file: str | None):
    from ..prompts import read_labels

    return read_labels(labels_file) if labels_file else None


def _collection(data: str, classes, fallback: list[str] | None = None):
    """A labelled folder or manifest, a Label Studio export or a FiftyOne dataset; eval sets take the shots'
    classes (``fallback``)."""
    from ..data.collections import image_folder, manifest
    from ..data.exports import fiftyone_labels, is_fiftyone_labels, is_label_studio_export, label_studio_export

    names = [synonyms[0] for synonyms in classes] if classes else fallback
    path = Path(data)
    exported = fiftyone_labels(path, names) if is_fiftyone_labels(path) else \
        label_studio_export(path, names)[0] if is_label_studio_export(path) else None
    if exported is not None:
        if exported.multi_label:
            raise InputError(f"--data/--eval {data} holds several labels per image: adapt fits one class per image")
        return exported
    if path.is_dir():
        return image_folder(path, names)
    if path.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        return manifest(path, names)
    raise InputError(f"--data/--eval {data}: not a folder, a .csv/.jsonl manifest, a Label Studio JSON export or a "
                     "FiftyOne labels.json")


def _report_failures(data: LabelledFeatures) -> None:
    for failure in data.failures:
        click.echo(f"zsclip: skipped {failure['path']}: {failure['error']}", err=True)


def _warn_overlap(shots: LabelledFeatures, evaluated: LabelledFeatures, path: str) -> None:
    shared = set(shots.names) & set(evaluated.names)
    if shared:
        warnings.warn(f"--eval {path} shares {len(shared)} images with the shots (e.g. {sorted(shared)[0]}): "
                      "its accuracy is optimistic", ZsclipWarning, stacklevel=2)


def _unique_name(path: str, taken: dict) -> str:
    base = Path(path).name if Path(path).suffix.lower() not in (".csv", ".jsonl", ".ndjson") else \
        f"{Path(path).parent.name}/{Path(path).name}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base} ({n})", n + 1
    return name


def _shots_text(data: LabelledFeatures) -> str:
    counts = data.class_counts()
    return str(counts[0]) if len(set(counts)) == 1 else f"{min(counts)}-{max(counts)}"
