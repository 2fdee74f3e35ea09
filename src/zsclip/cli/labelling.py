"""Options that pick a labelling sink (``--format`` and the formats' own options), shared by commands
that write answers."""

from __future__ import annotations

import click

from ..outputs.placing import PLACE_MODES

FORMAT_NAMES = ("csv", "jsonl", "json", "parquet", "label-studio", "fiftyone", "imagefolder")


def sink_options(function):
    """--format, --image-prefix, --image-root, --files."""
    options = [
        click.option("--format", "output_format", type=click.Choice(FORMAT_NAMES), default=None,
                     help="Output format when the extension cannot tell: label-studio (tasks .json with "
                          "predictions + NAME.config.xml), fiftyone (a folder: data/ + labels.json), imagefolder "
                          "(a folder: images + metadata.jsonl for Hugging Face datasets). Default: by extension."),
        click.option("--image-prefix", default=None,
                     help="label-studio: what data.image starts with (default /data/local-files/?d=, Label "
                          "Studio's local files; or a URL prefix your storage serves the files under)."),
        click.option("--image-root", type=click.Path(file_okay=False), default=None,
                     help="label-studio: file paths are written relative to this folder (Label Studio's "
                          "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; default /)."),
        click.option("--files", "files", type=click.Choice(PLACE_MODES), default=None,
                     help="fiftyone / imagefolder: copy the images (default) or hard-link them (no extra space); "
                          "originals are never moved."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def build_sink_options(output_format, image_prefix, image_root, files):
    from ..outputs.sinks import SinkOptions

    return SinkOptions(output_format, image_prefix, image_root, files)
