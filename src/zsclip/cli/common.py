"""What the commands share: option groups, run settings from options, one-line usage errors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import click

from ..data.images import MAX_PIXELS
from ..data.urls import URL_TIMEOUT_S
from ..data.video import DEFAULT_FRAMES, MAX_VIDEO_FRAMES
from ..encoders.resolve import DEFAULT_MODEL, DEFAULT_PRETRAINED
from ..errors import InputError, ZsclipError
from ..options import DECODE_MODES, RunOptions
from ..outputs.text import printable
from ..precision import DEFAULT_PRECISION, PRECISIONS
from ..prompts import TEMPLATE_SETS, parse_labels, read_labels
from ..runtimes import DEFAULT_RUNTIME, RUNTIMES, check_runtime

MODEL_HELP = (f"Model: an open_clip name (default {DEFAULT_MODEL}, weights {DEFAULT_PRETRAINED}, ~600 MB "
              "downloaded once), hf-hub:ORG/REPO, local-dir:PATH (open_clip_config.json + weights), "
              "transformers:ID_OR_PATH, or demo: the small bundled offline model, which knows ONLY synthetic "
              "coloured shapes (8 colours x 6 shapes, see `python -m zsclip.shapes --help`), not real photos.")
TEMPLATES_HELP = (f"Prompt templates: {', '.join(TEMPLATE_SETS)} (default openai-imagenet, OpenAI's 80), "
                  "or a text file with one template per line, each with {} for the class name.")


class UsageFailure(click.UsageError):
    """A ZsclipError raised while setting up a command: printed as one line, exit status 2."""

    def show(self, file=None) -> None:
        click.echo(f"zsclip: error: {printable(self.message)}", err=True)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, told as the one line the command group prints: what the run had done (what is committed and
    where) and how to go on. A plain KeyboardInterrupt is printed as "zsclip: interrupted"."""


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Turn a ZsclipError raised during setup into a one-line usage failure (exit status 2)."""
    try:
        yield
    except ZsclipError as error:
        if debugging():
            raise
        raise UsageFailure(str(error)) from None


def debugging() -> bool:
    """True with ``zsclip --debug`` or ZSCLIP_DEBUG=1: errors keep their tracebacks."""
    if os.environ.get("ZSCLIP_DEBUG", "") not in ("", "0"):
        return True
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("debug"))


def given(name: str) -> bool:
    """Whether the running command's option ``name`` (its parameter name) was given by the user, on the
    command line or through its environment variable, rather than left at its default. A refusal of an
    option where it cannot apply asks this, never the value: an option with a default always has one."""
    from click.core import ParameterSource

    context = click.get_current_context(silent=True)
    source = context.get_parameter_source(name) if context is not None else None
    return source is not None and source not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _apply(function, options):
    for option in reversed(options):
        function = option(function)
    return function


def model_options(function):
    """--model, --pretrained, --device, --precision, --cache-dir, --no-cache."""
    return _apply(function, [
        click.option("--model", "-m", default=None, help=MODEL_HELP),
        click.option("--pretrained", default=None,
                     help="Weights for an open_clip name: a tag (see `zsclip models`) or a checkpoint file."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION, show_default=True,
                     help="auto = bf16 on CUDA GPUs (fp16 on those without bf16), fp32 on CPUs. int8 (CPU, opt-in): "
                          "quantized image tower, ~1.5x faster tower, answers within ~1-2% top-1 of fp32; "
                          "classifiers stay fp32."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Classifier cache folder (default $ZSCLIP_CACHE_DIR or the user cache dir)."),
        click.option("--no-cache", is_flag=True, help="Build the classifier afresh and do not store it."),
        runtime_option,
    ])


RUNTIME_HELP = ("What runs the image and text towers: torch (eager PyTorch), onnxruntime or openvino (CPU: graphs "
                "exported once per model into the cache's graphs/ folder, fp32 equal to eager within 1e-5; int8 "
                "only where it agrees with fp32 on >= 99% of held-out images), or auto (the fastest measured here, "
                'said in one line). Needs pip install "zsclip[runtime]".')


def classifier_option(help: str):
    """-c/--classifier FILE in place of labels; ``help`` says which kinds of classifier file the command takes."""
    return click.option("--classifier", "-c", "classifier_file", type=click.Path(dir_okay=False), default=None,
                        help=help)


def per_video_option(help: str):
    """--per-video: one answer per video from its segments; ``help`` says what the command makes of it."""
    return click.option("--per-video", is_flag=True, default=False, help=help)


CALIBRATION_HELP = ("With --precision int8 on --runtime openvino or onnxruntime: full post-training quantisation "
                    "of the image tower (int8 weights and activations) calibrated on these images (a folder, a "
                    "glob, or a store whose image files are still at their paths; up to 300 calibrate, every 5th "
                    "is held out to check agreement with fp32). Cached per model and per content of the images; "
                    "used only at >= 99% agreement. Without it int8 is weight-only (openvino) or dynamic "
                    "(onnxruntime).")


def _runtime_options(calibration: bool):
    def decorate(function):
        """--runtime (and --calibration-images): kept for ``run_options`` (every command that loads a model reads
        them there), like the video options, so no command re-declares them in its signature."""
        def keep(ctx: click.Context, param: click.Parameter, value):
            ctx.meta["zsclip_runtime"] = value
            return value

        def keep_calibration(ctx: click.Context, param: click.Parameter, value):
            ctx.meta["zsclip_calibration"] = value
            return value

        if calibration:
            function = click.option("--calibration-images", default=None, expose_value=False,
                                    callback=keep_calibration, metavar="PATH", help=CALIBRATION_HELP)(function)
        return click.option("--runtime", type=click.Choice(RUNTIMES), default=DEFAULT_RUNTIME, show_default=True,
                            expose_value=False, callback=keep, help=RUNTIME_HELP)(function)

    return decorate


#: --runtime and --calibration-images (every command with --precision)
runtime_option = _runtime_options(calibration=True)
#: --runtime alone (search encodes its queries in fp32: calibrated int8 can never apply there)
runtime_only_option = _runtime_options(calibration=False)


def calibration_images_for(runtime: str, precision: str) -> tuple[str, ...]:
    """The files of ``--calibration-images`` (empty when not given), refused in one line where they cannot apply
    (checked before the path is read)."""
    from ..runtimes import check_calibration

    context = click.get_current_context(silent=True)
    spec = context.meta.get("zsclip_calibration") if context is not None else None
    check_calibration(runtime, precision, spec is not None)
    if spec is None:
        return ()
    from ..job.calibration_images import calibration_images

    return calibration_images(spec)


def label_options(function):
    """--labels, --labels-file, --templates."""
    return _apply(function, [
        click.option("--labels", "-l", default=None,
                     help='Class names, comma-separated; synonyms joined by |: "dog|puppy,cat,car".'),
        click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
                     help="A UTF-8 file with one class per line (synonyms: 'dog | puppy'). A line whose first "
                          "non-blank character is # is a comment; # elsewhere is kept (C# is a label)."),
        click.option("--templates", "-t", default=None, help=TEMPLATES_HELP),
    ])


def image_options(function):
    """--batch-size, --workers, --max-pixels, --url-timeout: how images are read, decoded and batched."""
    return _apply(function, [
        click.option("--batch-size", "-b", default=64, show_default=True, type=click.IntRange(min=1)),
        click.option("--workers", "-j", default=None, type=click.IntRange(min=0),
                     help="Decoding processes (default: one per core, at most 8; 0 decodes in this process)."),
        click.option("--max-pixels", default=MAX_PIXELS, show_default=True, type=click.IntRange(min=1),
                     help="The one image size limit, in pixels: checked in the file's header (decompression "
                          "bombs) and again after any resize; also refused: sides more than 50:1. Raise it to "
                          "open larger images."),
        click.option("--decode", type=click.Choice(DECODE_MODES), default="auto", show_default=True,
                     help="Where JPEGs are decoded: auto = on the GPU (nvJPEG) when the model runs on CUDA with "
                          "open_clip's standard preprocessing, else cpu (PIL in the --workers processes); device "
                          "forces torchvision decoding on the model's device. Other formats always use PIL."),
        click.option("--url-timeout", default=URL_TIMEOUT_S, show_default=True,
                     type=click.FloatRange(min=0, min_open=True, max=3600),
                     help="Seconds a whole URL download may take (http/https only, at most 5 redirects)."),
        click.option("--frames", default=DEFAULT_FRAMES, show_default=True, type=click.IntRange(min=1),
                     expose_value=False, callback=_video_setting,
                     help="Videos: frames sampled uniformly per video (per segment with --segment); the answer "
                          "is the mean of their normalised embeddings. Only those frames are decoded."),
        click.option("--segment", default=None, type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                     expose_value=False, callback=_video_setting,
                     help="Videos: one row per SECONDS-long segment, with its start and end (default: one row "
                          "per video)."),
        click.option("--max-video-frames", default=MAX_VIDEO_FRAMES, show_default=True,
                     type=click.IntRange(min=1), expose_value=False, callback=_video_setting,
                     help="Videos: sampled frames per video at most; a longer one is cut there with a note row."),
    ])


def _video_setting(ctx: click.Context, param: click.Parameter, value):
    """Keep a video option for ``run_options`` (every command with image options reads videos too), and
    which were given (not defaulted), for ``note_video_options``."""
    ctx.meta.setdefault("zsclip_video", {})[param.name] = value
    if ctx.get_parameter_source(param.name) not in (None, click.core.ParameterSource.DEFAULT):
        ctx.meta.setdefault("zsclip_video_given", []).append(param.opts[0])
    return value


def note_video_options(decodes_videos: bool) -> None:
    """A note when --frames / --segment / --max-video-frames were given and no input is a video to decode
    (a note, not a refusal: the same command may run over folders that hold videos)."""
    context = click.get_current_context(silent=True)
    given = context.meta.get("zsclip_video_given", []) if context is not None else []
    if given and not decodes_videos:
        options = " and ".join(sorted(given))
        click.echo(f"zsclip: note: {options} {'apply' if len(given) > 1 else 'applies'} to videos as they are "
                   "decoded, and there is no video among the inputs: "
                   f"{'they change' if len(given) > 1 else 'it changes'} nothing here", err=True)


def decodes_videos(source) -> bool:
    """Whether a job decodes videos (its source, or the one ``--per-video`` pools, is photos and videos)."""
    from ..job import MediaFiles

    return isinstance(getattr(source, "inner", source), MediaFiles)


def note_video_options_for(inputs) -> None:
    """``note_video_options`` for commands that take paths (search): decoded videos are video files among the
    inputs that are not embedding stores. Listed only when a video option was given."""
    context = click.get_current_context(silent=True)
    if context is None or not context.meta.get("zsclip_video_given"):
        return
    from ..data.sources import expand_inputs
    from ..job.sources import has_videos, is_store

    paths = [str(item) for item in inputs if not is_store(str(item))]
    try:
        decodes = bool(paths) and has_videos(list(expand_inputs(paths)))
    except Exception:  # noqa: BLE001 -- an unreadable input is the command's own error to report, not the note's
        return
    note_video_options(decodes)


def ray_options(function):
    """--ray, --ray-actors: run the pipeline on Ray Data (the ray extra)."""
    return _apply(function, [
        click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS",
                     help="Run on Ray Data: auto = $RAY_ADDRESS, else a local Ray instance; or a cluster address "
                          '(ray://head:10001). Needs pip install "zsclip[ray]".'),
        click.option("--ray-stall-timeout", default=None, type=click.FloatRange(min=1, max=86_400),
                     help="With --ray: stop and report a job that delivers no result for this many seconds (default "
                          "600; a cluster that cannot place its tasks would otherwise wait forever)."),
        click.option("--ray-actors", default=None, type=click.IntRange(min=1),
                     help="Encoding actors, each loading the model once (default: one per GPU; on CPUs one per 8 "
                          "CPUs of each node, sharing the node's cores with the decode tasks)."),
    ])


def multilabel_options(function):
    """--multi-label, --multi-score, --threshold, --calibrate, --target-precision."""
    return _apply(function, [
        click.option("--multi-label", is_flag=True, default=None,
                     help="Give every label whose own score reaches its threshold (none is an answer), instead "
                          "of the top-k of a softmax."),
        click.option("--multi-score", type=click.Choice(["collection", "negative", "standardised", "sigmoid",
                                                        "softmax"]),
                     default=None,
                     help="With --multi-label: how each label is scored on its own. collection: the label's cosine "
                          "as a z-score over the images being classified (softmax models, no labels needed; the "
                          "default without --calibrate; under 16 images: softmax, with a warning); standardised: "
                          "the same over the --calibrate images (the default with --calibrate); negative: the label "
                          "prompt against 'a photo without a {}'; sigmoid: a SigLIP model's own (its default); "
                          "softmax: over all labels (not independent; the baseline)."),
        click.option("--threshold", type=float, default=None,
                     help="With --multi-label: one fixed threshold for every label (default 0.5 for probabilities, "
                          "1.75 for the collection z-score, 2.0 for standardised scores)."),
        click.option("--calibrate", type=click.Path(), default=None,
                     help="With --multi-label: a manifest of images with their labels (CSV path,labels with "
                          "'dog;cat', or JSONL lists), or a store embedded from one (no image decoded), to choose "
                          "each label's threshold on (the best F1, or --target-precision)."),
        click.option("--target-precision", type=float, default=None,
                     help="With --calibrate: each label's threshold is the lowest that reaches this precision on "
                          "the calibration images (e.g. 0.9)."),
    ])


def transductive_option(function):
    """--transductive [em|ot|ot-em]: a collection-level correction of flat labels (default em)."""
    return click.option("--transductive", type=click.Choice(["em", "ot", "ot-em"]), default=None, is_flag=False,
                        flag_value="em",
                        help="Correct the answers over the whole collection (no labels needed): em re-estimates "
                             "the collection's class frequencies (Saerens et al. 2002; the default), ot transports "
                             "the answers to equal class frequencies (OTTER), ot-em to the frequencies em "
                             "estimates. The rows come out after the whole collection is scored.")(function)


def ray_settings(address: str | None, actors: int | None, stall_timeout: float | None = None):
    """RaySettings for --ray (the job connects when it runs), or None when the run is local;
    --ray-actors or --ray-stall-timeout without --ray is refused, not ignored."""
    if address is None:
        if actors is not None or stall_timeout is not None:
            option = "--ray-actors" if actors is not None else "--ray-stall-timeout"
            raise UsageFailure(f"{option} applies to --ray: add --ray auto (or an address)")
        return None
    from ..cluster import RaySettings

    if stall_timeout is None:
        return RaySettings(address=address, actors=actors)
    return RaySettings(address=address, actors=actors, stall_timeout_s=stall_timeout)


def run_options(device: str = "auto", precision: str = DEFAULT_PRECISION, batch_size: int = 64,
                workers: int | None = None, max_pixels: int = MAX_PIXELS,
                url_timeout: float = URL_TIMEOUT_S, decode: str = "auto") -> RunOptions:
    """The run's settings, resolved once from the command's options."""
    context = click.get_current_context(silent=True)
    video = dict(context.meta.get("zsclip_video", {})) if context is not None else {}
    runtime = context.meta.get("zsclip_runtime", DEFAULT_RUNTIME) if context is not None else DEFAULT_RUNTIME
    with usage_errors():
        check_runtime(runtime, device, precision)  # a runtime that cannot run: said before any calibration path
        calibration = calibration_images_for(runtime, precision)
        return RunOptions(device=device, precision=precision, batch_size=batch_size, workers=workers,
                          max_pixels=max_pixels, url_timeout=url_timeout, decode=decode, runtime=runtime,
                          calibration=calibration, **video)


def scale_option(function):
    """--scale: a fixed temperature, refused unless a finite number > 0."""

    def check(ctx, param, value):
        if value is None:
            return None
        from ..classifier.zeroshot import checked_scale

        try:
            return checked_scale(value)
        except InputError as error:
            raise click.BadParameter(str(error)) from None

    return click.option("--scale", type=float, default=None, callback=check,
                        help="Fixed temperature for probabilities (a finite number > 0, e.g. 100); "
                             "default: the model's own.")(function)


def read_classes(labels: str | None, labels_file: str | None) -> list[list[str]] | None:
    """Classes from --labels ("dog|puppy,cat") or --labels-file (at most one of them); None for neither."""
    if labels and labels_file:
        raise InputError("give --labels or --labels-file, not both")
    if labels_file:
        return read_labels(labels_file)
    if labels is not None:
        return parse_labels(labels)
    return None


def say_accept(head) -> None:
    """The accept-or-review threshold a calibrated head applies (``--accept-precision``), on stderr: the
    confidence, the share and precision it reached on the calibration images, how many there were, and the
    calibration's warning when they are too few. One wording for classify and sort."""
    accept = getattr(head, "accept", None)
    if accept is None:
        return
    shown = "nothing (no confidence reached it)" if accept.precision is None else \
        f"confidence >= {accept.threshold:.6g} ({accept.accepted_share:.0%} of them, at precision " \
        f"{accept.precision:.3f})"
    click.echo(f"zsclip: accept-or-review at precision {accept.target:g}: accepts {shown}; from "
               f"{accept.num_images} calibration images", err=True)
    if accept.warning:
        click.echo(f"zsclip: warning: {printable(accept.warning)}", err=True)
