"""The ``zsclip`` command line: one module per command, each parsing its options, calling the
library (``zsclip.tasks``) and formatting what it returns. A new subcommand is a new module here,
registered below.

Exit status: 0 when every input was handled, 1 when some inputs failed (each reported on stderr
and in the output), 2 for usage errors (no labels, unknown model or template set, bad arguments).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from . import build, classify, eval, models


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zsclip")
def main() -> None:
    """Zero-shot image classification with CLIP-family models: name your classes, get predictions.

    \b
    zsclip classify photos/ --labels "dog,cat,car,airplane"
    zsclip build --labels-file labels.txt --output pets.zsc
    zsclip classify photos/ --classifier pets.zsc --output results.csv
    """


for command in (classify.classify, build.build, eval.eval_command, models.models):
    main.add_command(command)


def run(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    main(args=list(argv) if argv is not None else None, prog_name="zsclip")


if __name__ == "__main__":
    run()
