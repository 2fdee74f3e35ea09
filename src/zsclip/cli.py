"""The ``zsclip`` command line: classify, build, models.

Thin by design (DESIGN.md): parse, call the library, format. Exit status: 0 when every input
was classified, 1 when some inputs failed (each reported on stderr and in the output), 2 for
usage errors (no labels, unknown model or template set, bad arguments).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
from tqdm.auto import tqdm

from . import __version__
from .encoders import TRANSFORMERS_PREFIX
from .errors import InputError, ZsclipError
from .images import MAX_PIXELS
from .precision import PRECISIONS
from .prompts import TEMPLATE_SETS

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

MODEL_HELP = (f"Model: an open_clip name (default {DEFAULT_MODEL}, weights {DEFAULT_PRETRAINED}, ~600 MB "
              "downloaded once), hf-hub:ORG/REPO, local-dir:PATH (open_clip_config.json + weights), "
              "transformers:ID_OR_PATH, or demo: the small bundled offline model, which knows ONLY synthetic "
              "coloured shapes (8 colours x 6 shapes, see `python -m zsclip.shapes --help`), not real photos.")
TEMPLATES_HELP = (f"Prompt templates: {', '.join(TEMPLATE_SETS)} (default openai-imagenet, OpenAI's 80), "
                  "or a text file with one template per line, each with {} for the class name.")


class UsageFailure(click.UsageError):
    """A ZsclipError raised while setting up a command: printed as one line, exit status 2."""

    def show(self, file=None) -> None:
        click.echo(f"zsclip: error: {self.message}", err=True)


def _model_options(function):
    options = [
        click.option("--model", "-m", default=None, help=MODEL_HELP),
        click.option("--pretrained", default=None,
                     help="Weights for an open_clip name: a tag (see `zsclip models`) or a checkpoint file."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                     help="auto = bf16 where the hardware runs it natively, else fp32. int8 (CPU, opt-in): "
                          "quantized image tower, ~1.5x faster tower, answers within ~1-2% top-1 of fp32; "
                          "classifiers stay fp32."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Classifier cache folder (default $ZSCLIP_CACHE_DIR or the user cache dir)."),
        click.option("--no-cache", is_flag=True, help="Build the classifier afresh and do not store it."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _label_options(function):
    options = [
        click.option("--labels", "-l", default=None,
                     help='Class names, comma-separated; synonyms joined by |: "dog|puppy,cat,car".'),
        click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
                     help="A file with one class per line (synonyms: 'dog | puppy'; # starts a comment)."),
        click.option("--templates", "-t", default=None, help=TEMPLATES_HELP),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zsclip")
def main() -> None:
    """Zero-shot image classification with CLIP-family models: name your classes, get predictions.

    \b
    zsclip classify photos/ --labels "dog,cat,car,airplane"
    zsclip build --labels-file labels.txt --output pets.zsc
    zsclip classify photos/ --classifier pets.zsc --output results.csv
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@_label_options
@click.option("--classifier", "-c", "classifier_file", type=click.Path(dir_okay=False), default=None,
              help="Use a classifier file from `zsclip build` instead of --labels.")
@click.option("--top-k", "-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many labels per image.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write results to .csv, .jsonl or .json (by extension) instead of the terminal.")
@_model_options
@click.option("--batch-size", "-b", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", "-j", default=None, type=click.IntRange(min=0),
              help="Decoding processes (default: one per core, at most 8; 0 decodes in this process).")
@click.option("--max-pixels", default=MAX_PIXELS, show_default=True, type=click.IntRange(min=1),
              help="Refuse images with more pixels than this (decompression bombs).")
@click.option("--scale", type=float, default=None,
              help="Fixed temperature for probabilities (e.g. 100); default: the model's own.")
def classify(inputs, labels, labels_file, templates, classifier_file, top_k, output, model, pretrained, device,
             precision, cache_dir, no_cache, batch_size, workers, max_pixels, scale) -> None:
    """Classify images into the classes you name.

    INPUTS are image files, folders (searched recursively), quoted glob patterns ("shots/**/*.jpg"),
    http(s) URLs, or - to read one path or URL per line from stdin.

    \b
    Examples:
      zsclip classify photos/ --labels "dog,cat,car,airplane"
      zsclip classify "shots/**/*.jpg" --labels-file labels.txt --top-k 3 --output results.csv
      find /data -name '*.png' | zsclip classify - --labels-file labels.txt --output results.jsonl
      zsclip classify examples/ --labels-file examples/labels.txt --model demo   # offline

    --model demo needs no download, but it knows only the synthetic world it was trained on:
    red/green/blue/yellow/purple/orange/white/black circles, squares, triangles, stars, crosses
    and rings on plain backgrounds. Use a real model (the default) for real photos.

    Bad inputs (missing, empty, corrupt or huge files, unreachable URLs) are reported on stderr and
    in the output's error column; the run goes on. Exit status: 0 all classified, 1 some inputs
    failed, 2 usage error.
    """
    from .outputs import ResultWriter, print_table
    from .pipeline import classify_sources
    from .sources import expand_inputs

    sources = list(expand_inputs(inputs, sys.stdin))
    if not sources:
        raise UsageFailure("no inputs to classify: give image files, folders, glob patterns, URLs or -")
    with _usage_errors():
        if output:
            ResultWriter.check(output)
        encoder, classifier = _encoder_and_classifier(
            labels, labels_file, templates, classifier_file, model, pretrained, device, precision, cache_dir,
            no_cache)
        writer = ResultWriter(output, top_k) if output else None
    failures = 0
    bar = tqdm(total=len(sources), unit="img", desc="classifying", file=sys.stderr,
               disable=not sys.stderr.isatty() or len(sources) < 2, dynamic_ncols=True)
    try:
        for prediction in classify_sources(sources, classifier, encoder, top_k=top_k, batch_size=batch_size,
                                           workers=workers, precision=precision, scale=scale,
                                           max_pixels=max_pixels):
            if prediction.error:
                failures += 1
                tqdm.write(f"zsclip: skipped {prediction.source}: {prediction.error}", file=sys.stderr)
            if writer:
                writer.write(prediction)
            else:
                print_table(prediction, sys.stdout)
            bar.update(1)
    except BaseException:
        if writer:
            click.echo(f"zsclip: interrupted; results so far are in {writer.abandon()}", err=True)
        raise
    finally:
        bar.close()
    if writer:
        writer.close()
    done = len(sources) - failures
    click.echo(f"zsclip: classified {done} of {len(sources)} images"
               + (f"; {failures} failed" if failures else "")
               + (f"; results in {output}" if output else ""), err=True)
    sys.exit(1 if failures else 0)


@main.command()
@_label_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True,
              help="Where to write the classifier (e.g. pets.zsc).")
@_model_options
def build(labels, labels_file, templates, output, model, pretrained, device, precision, cache_dir,
          no_cache) -> None:
    """Build a classifier once and save it, to reuse with `zsclip classify --classifier FILE`.

    \b
    Example:
      zsclip build --labels-file labels.txt --templates openai-imagenet --output pets.zsc
    """
    with _usage_errors():
        _, classifier = _encoder_and_classifier(labels, labels_file, templates, None, model, pretrained, device,
                                                precision, cache_dir, no_cache)
        path = classifier.save(output)
    click.echo(f"zsclip: wrote {path}: {len(classifier.classnames)} classes x "
               f"{len(classifier.provenance['templates'])} templates, model {classifier.provenance['model']}",
               err=True)


@main.command(name="eval")
@click.option("--data", "-d", required=True,
              help="A class-per-folder tree (folder names are the classes), a .csv/.jsonl manifest of path,label, "
                   "or WebDataset shards (\"shards/{00000..00099}.tar\", with --labels-file).")
@click.option("--dataset", default=None,
              help="Name recorded in the results; imagenet1k also gives ImageNet's class names for synset folders.")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
              help="Class names, one per line in the folders' sorted order (synonyms: 'dog | puppy').")
@click.option("--templates", "-t", default="openai-imagenet", show_default=True,
              help="One or more template sets or files, comma-separated: all are scored on one pass over the images.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write results as JSON (CLIP_benchmark's layout plus per-class metrics and failures).")
@click.option("--report", "-r", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write a report folder: index.html with plots, metrics.json, predictions.csv.")
@_model_options
@click.option("--batch-size", "-b", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", "-j", default=None, type=click.IntRange(min=0), help="Decoding processes.")
@click.option("--max-pixels", default=MAX_PIXELS, show_default=True, type=click.IntRange(min=1))
def eval_command(data, dataset, labels_file, templates, output, report_dir, model, pretrained, device, precision,
                 cache_dir, no_cache, batch_size, workers, max_pixels) -> None:
    """Measure zero-shot accuracy on labelled images: acc1, acc5, mean per-class recall.

    \b
    Examples:
      zsclip eval --data /data/imagenet/val --dataset imagenet1k --model ViT-B-32 --pretrained laion2b_s34b_b79k
      zsclip eval --data my_photos/ --templates openai-imagenet,openai-imagenet-7,photo
      zsclip eval --data labels.csv --labels-file classes.txt --output results.json
      zsclip eval --data "shards/{00000..00099}.tar" --labels-file classes.txt

    Images that fail to decode are counted and listed, not fatal.
    """
    from .evaluate import benchmark_record, evaluate

    with _usage_errors():
        collection, classes = _eval_collection(data, dataset, labels_file)
        template_sets = [name.strip() for name in templates.split(",") if name.strip()]
        encoder, model, pretrained = _load_encoder(model, pretrained, device)
        with _PredictionsCsv(report_dir, collection.classnames) as on_prediction:
            result = evaluate(collection, encoder, template_sets, classes=classes, precision=precision,
                              batch_size=batch_size, workers=workers, cache=not no_cache, cache_dir=cache_dir,
                              max_pixels=max_pixels, progress=sys.stderr.isatty(), on_prediction=on_prediction)
    record = benchmark_record(result, dataset or Path(data).name, model, pretrained)
    for failure in result.failures:
        click.echo(f"zsclip: skipped {failure['path']}: {failure['error']}", err=True)
    for name, metrics in result.metrics.items():
        acc5 = "n/a" if metrics["acc5"] is None else f"{metrics['acc5']:.2%}"
        click.echo(f"{name:24s} acc1 {metrics['acc1']:.2%}  acc5 {acc5}  "
                   f"mean per-class recall {metrics['mean_per_class_recall']:.2%}")
    click.echo(f"zsclip: evaluated {result.num_images} images ({len(result.failures)} failed), "
               f"{result.images_per_second:.1f} images/s", err=True)
    if output:
        _write_json_atomically(output, record)
    if report_dir:
        from .report import write_report

        settings = {"data": data, "model": model, "pretrained": pretrained, "templates": ", ".join(template_sets),
                    "precision": precision, "device": str(encoder.device), "zsclip": __version__}
        page = write_report(report_dir, record, settings)
        click.echo(f"zsclip: report in {page}", err=True)


@main.command()
@click.option("--all", "show_all", is_flag=True, help="List every open_clip model and pretrained tag.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Classifier cache folder.")
def models(show_all, cache_dir) -> None:
    """What can be loaded, and what is cached on this machine."""
    from .inventory import describe_models

    click.echo(describe_models(show_all=show_all, cache_dir=cache_dir))


# --- helpers ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """Turn a ZsclipError raised during setup into a one-line usage failure (exit status 2)."""
    try:
        yield
    except ZsclipError as error:
        raise UsageFailure(str(error)) from None


def parse_labels(labels: str | None, labels_file: str | None) -> list[list[str]]:
    """Classes from --labels ("dog|puppy,cat") or --labels-file; exactly one of them."""
    from .prompts import read_labels

    if labels and labels_file:
        raise InputError("give --labels or --labels-file, not both")
    if labels_file:
        return read_labels(labels_file)
    if not labels or not labels.strip():
        raise InputError('no labels: pass --labels "dog,cat,car", --labels-file FILE or --classifier FILE')
    return [[name.strip() for name in entry.split("|")] for entry in labels.split(",")]


def _load_encoder(model: str | None, pretrained: str | None, device: str):
    """(encoder, model, pretrained): the default model and its weights when none is named."""
    from . import load_model

    model = model or DEFAULT_MODEL
    if model == DEFAULT_MODEL and pretrained is None:
        pretrained = DEFAULT_PRETRAINED
    if model.startswith(TRANSFORMERS_PREFIX):
        _quiet_transformers()
    return load_model(model, pretrained, device=device), model, pretrained


def _encoder_and_classifier(labels, labels_file, templates, classifier_file, model, pretrained, device,
                            precision, cache_dir, no_cache):
    from . import ZeroShotClassifier

    loaded = None
    if classifier_file:
        if labels or labels_file or templates:
            raise InputError("--classifier already holds its labels and templates: drop --labels/--templates")
        loaded = ZeroShotClassifier.load(classifier_file)
        model = model or loaded.provenance.get("model")
        pretrained = pretrained or loaded.provenance.get("pretrained")
    else:
        classes = parse_labels(labels, labels_file)
    encoder, _, _ = _load_encoder(model, pretrained, device)
    if loaded is not None:
        loaded.check_encoder(encoder)
        loaded.encoder = encoder
        return encoder, loaded
    classifier = ZeroShotClassifier.build(encoder, classes, templates, precision=precision, cache=not no_cache,
                                          cache_dir=cache_dir)
    return encoder, classifier


def _eval_collection(data: str, dataset: str | None, labels_file: str | None):
    """The labelled collection for --data, and what to build classifiers from."""
    from .datasets import image_folder, manifest, webdataset
    from .prompts import read_labels

    classes = read_labels(labels_file) if labels_file else None
    names = [synonyms[0] for synonyms in classes] if classes else None
    path = Path(data)
    if path.is_dir():
        if classes is None and (dataset == "imagenet1k" or looks_like_imagenet(path)):
            from .prompts import CLASSNAME_SETS

            return image_folder(path, CLASSNAME_SETS["imagenet1k"]()), "imagenet1k"
        return image_folder(path, names), classes
    if path.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        return manifest(path, names), classes
    if path.suffix.lower() == ".tar" or "{" in data:
        if classes is None:
            raise InputError(f"{data}: WebDataset shards need --labels-file (class names in class-index order)")
        return webdataset(data, names), classes
    raise InputError(f"--data {data}: not a folder or a .csv/.jsonl manifest")


class _PredictionsCsv:
    """predictions.csv in the report folder (path, true label, top-5), written as eval streams;
    a no-op without --report."""

    def __init__(self, folder: str | None, classnames: list[str]) -> None:
        self.folder, self.classnames = folder, classnames

    def __enter__(self):
        if self.folder is None:
            return None
        import csv

        Path(self.folder).mkdir(parents=True, exist_ok=True)
        self.partial = Path(self.folder) / "predictions.csv.partial"
        self.file = open(self.partial, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        self.writer = csv.writer(self.file)
        k = min(5, len(self.classnames))
        self.writer.writerow(["path", "true_label", *[f"label_{i + 1}" for i in range(k)]])
        return self.write

    def write(self, path: str, target: int, ranked: list[int]) -> None:
        self.writer.writerow([path, self.classnames[target], *[self.classnames[i] for i in ranked]])

    def __exit__(self, kind, error, traceback) -> bool:
        if self.folder is not None:
            import os

            self.file.close()
            if error is None:
                os.replace(self.partial, Path(self.folder) / "predictions.csv")
        return False


def looks_like_imagenet(folder: Path) -> bool:
    """1000 class folders named by WordNet id (n01440764, ...): ImageNet-1k, whose class order is
    the sorted ids, the order of open_clip's ImageNet class names."""
    import re

    names = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return len(names) == 1000 and all(re.fullmatch(r"n\d{8}", name) for name in names)


def _write_json_atomically(path: str, record: dict) -> None:
    import json
    import os

    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, target)


def _quiet_transformers() -> None:
    """transformers prints weight-loading bars and config notes; our own lines are what users read."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def run(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    main(args=list(argv) if argv is not None else None, prog_name="zsclip")


if __name__ == "__main__":
    run()

