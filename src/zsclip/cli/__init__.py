"""The ``zsclip`` command line: one module per command, each parsing its options, calling the
library (``zsclip.tasks``) and formatting what it returns. A new subcommand is a new module here,
registered below.

Exit status: 0 when every input was handled, 1 when some inputs failed (each reported on stderr
and in the output), 2 for usage errors (no labels, unknown model or template set, bad arguments),
130 on Ctrl-C, 141 when the reader of stdout went away (``zsclip classify ... | head``: nothing is
printed, as for a Unix tool killed by SIGPIPE). Every failure is one line on stderr; ``ZsclipGroup``
is where that is enforced for all commands.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

import click

from ..errors import OutputError, ZsclipError
from ..outputs.text import printable
from . import (
    adapt,
    build,
    calibrate,
    classify,
    compact,
    dedup,
    embed,
    eval,
    explain,
    index,
    models,
    search,
    serve,
    sort,
)

DEBUG_ENV = "ZSCLIP_DEBUG"
#: exit status when stdout is a pipe whose reader left: 128 + SIGPIPE, what a shell reports for `cat`, `grep`
#: or `sort` in the same place (Python ignores SIGPIPE, so zsclip gets EPIPE and exits with it itself)
CLOSED_PIPE_STATUS = 141


class ZsclipGroup(click.Group):
    """The command group: turns every failure into one line on stderr and a documented exit status.

    zsclip's own errors print their message (exit 2; 1 when inputs failed or an output could not
    be written); Ctrl-C prints "interrupted" (exit 130); a broken torch install is named as one
    (environment.py); anything else is a bug, printed as one line
    that says so. ``--debug`` or ``ZSCLIP_DEBUG=1`` shows the traceback instead.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's own usage errors (bad option values, missing arguments) as one line too; a closed
        stdout (a reader that left) ends the run quietly with ``CLOSED_PIPE_STATUS``, whenever it shows."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            self._main_standalone(args, prog_name, complete_var, **extra)
        except BrokenPipeError:  # outside a command: --help or --version into `| head`
            _silence_stdout()
            sys.exit(CLOSED_PIPE_STATUS)
        except SystemExit:
            if _stdout_closed():  # the last lines were still buffered when the reader left
                sys.exit(CLOSED_PIPE_STATUS)
            raise

    def _main_standalone(self, args, prog_name, complete_var, **extra):
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            from .common import UsageFailure

            where = (f" (see `{error.ctx.command_path} --help`)"
                     if error.ctx is not None and not isinstance(error, UsageFailure) else "")
            click.echo(f"zsclip: error: {printable(error.format_message())}{where}", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"zsclip: error: {printable(error.format_message())}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("zsclip: interrupted", err=True)
            sys.exit(130)
        sys.exit(status if isinstance(status, int) else 0)

    def invoke(self, ctx: click.Context):
        from .common import debugging

        debug = debugging()
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except (click.exceptions.Exit, click.ClickException, click.Abort):
                raise
            except KeyboardInterrupt as error:
                if debug:
                    raise
                from .common import Interrupted

                # one line: the command's own account (what is kept, how to go on) when it gave one
                told = str(error) if isinstance(error, Interrupted) and str(error) else "interrupted"
                click.echo(f"zsclip: {printable(told)}", err=True)
                ctx.exit(130)
            except BrokenPipeError:  # `zsclip classify ... | head`: the reader left, nothing to report
                _silence_stdout()
                ctx.exit(CLOSED_PIPE_STATUS)
            except Exception as error:
                if debug:
                    raise
                status, message = _describe(error)
                click.echo(f"zsclip: error: {message}", err=True)
                ctx.exit(status)


def _silence_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, so that what is still buffered (and the
    interpreter's flush at exit) goes nowhere instead of raising again (Python's documented way)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (a test runner's capture)
        pass


def _stdout_closed() -> bool:
    """Flush stdout; True (and stdout silenced) when its reader has gone."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return True
    except (OSError, ValueError, AttributeError):
        return False
    return False


def _describe(error: Exception) -> tuple[int, str]:
    """(exit status, one printable line) for an error that reached the top."""
    from .._lazy import is_loaded_instance
    from .environment import broken_install

    broken = broken_install(error)  # a torchvision built for another torch, wherever it surfaced
    if broken is not None:
        return 1, printable(broken)
    # without importing the evaluate task (and torch) to ask: the error may be that torch cannot load
    if isinstance(error, OutputError) or is_loaded_instance(error, "zsclip.tasks.evaluate", "NothingDecodedError"):
        return 1, printable(error)
    if isinstance(error, ZsclipError):
        return 2, printable(error)
    if isinstance(error, MemoryError):
        return 1, "out of memory: lower --batch-size or --workers, or --max-pixels"
    if isinstance(error, OSError):
        return 1, printable(f"{error.filename + ': ' if error.filename else ''}{error.strerror or error}")
    return 1, printable(f"unexpected {type(error).__name__}: {error} (this is a bug in zsclip: rerun with --debug "
                        "for the traceback and please report it)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line: ``zsclip: warning: ...`` (library internals' warnings included)."""
    click.echo(f"zsclip: warning: {printable(message)}", err=True)


@click.group(cls=ZsclipGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zsclip")
@click.option("--debug", is_flag=True, help=f"Show tracebacks instead of one-line errors (also: {DEBUG_ENV}=1).")
def main(debug: bool) -> None:
    """Zero-shot image classification with CLIP-family models: name your classes, get predictions.

    \b
    zsclip classify photos/ --labels "dog,cat,car,airplane"
    zsclip build --labels-file labels.txt --output pets.zsc
    zsclip classify photos/ --classifier pets.zsc --output results.csv

    Results go to the terminal, or with --output to .csv, .jsonl, .json or .parquet (by extension).
    Errors are one line on stderr (`zsclip --debug COMMAND ...` shows the traceback). Exit status:
    0 all inputs handled, 1 some inputs failed (results still written), 2 usage error, 130 Ctrl-C,
    141 stdout closed by its reader (`| head`).
    """


IMAGES = "images (files, folders, glob patterns, URLs, - for paths on stdin)"
VIDEOS = "videos (.mp4, .mkv, .mov, ...: --frames per video, or a row per --segment)"
HF_DATASETS = "Hugging Face datasets (a Parquet split, a save_to_disk folder, an imagefolder with metadata)"
#: each command's inputs, as its --help ends (one list per command, so that a new input kind is added everywhere)
INPUT_KINDS = {
    "classify": f"Inputs: {IMAGES}, {VIDEOS}, {HF_DATASETS}, WebDataset shards, an embedding store or a "
                "clip-retrieval folder.",
    "eval": f"--data: a class-per-folder tree of images or {VIDEOS}, a CSV/JSONL manifest, WebDataset shards, "
            f"{HF_DATASETS}, a labelled embedding store; --task retrieval: a captions file or a store.",
    "embed": f"Inputs: {IMAGES}, {VIDEOS}, {HF_DATASETS}, WebDataset shards.",
    "search": f"Input: an embedding store (of images or {VIDEOS}), a clip-retrieval folder, or images and videos "
              "encoded on the way.",
}
EXIT_STATUS = ("Exit status: 0 all inputs handled, 1 some inputs failed (results still written), 2 usage error, "
               f"130 interrupted (Ctrl-C), {CLOSED_PIPE_STATUS} stdout closed by its reader (`| head`).")

for command in (classify.classify, build.build, eval.eval_command, embed.embed_command, search.search,
                models.models, adapt.adapt_command, serve.serve, explain.explain_command, sort.sort_command,
                calibrate.calibrate_command, compact.compact, index.index_command, dedup.dedup_command):
    main.add_command(command)
    # every --help ends with what the command reads and its exit statuses (serve documents its own)
    ending = [INPUT_KINDS[command.name]] if command.name in INPUT_KINDS else []
    command.epilog = "\n\n".join([*ending, *([command.epilog] if command.epilog else []),
                                   *([] if command.name == "serve" else [EXIT_STATUS])])


def run(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    main(args=list(argv) if argv is not None else None, prog_name="zsclip")


if __name__ == "__main__":
    run()
