"""README and ``--help`` cannot drift: every ``zsclip ...`` command line in README.md's code blocks parses
with the real command (its subcommand and options exist, its values convert), the example files it names
under examples/ exist, and ``--help`` names every output format."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import click
import click.testing
import pytest

from zsclip.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}


def readme_commands() -> list[tuple[int, list[str]]]:
    """(line number, argv after ``zsclip``) of each zsclip command in README.md's shell code blocks."""
    found = []
    fence = None  # the language of the code block we are in, or None outside one
    pending, start = "", 0
    for number, raw in enumerate(README.read_text().split("\n"), start=1):
        if raw.startswith("```"):
            fence = raw[3:].strip() if fence is None else None
            continue
        if fence not in ("bash", "sh", "shell", "console", ""):
            continue
        if raw.rstrip().endswith("\\"):  # a continued line: one command over several lines
            pending, start = pending + raw.rstrip()[:-1] + " ", start or number
            continue
        line, number, pending, start = (pending + raw).strip().removeprefix("$ "), start or number, "", 0
        if "zsclip" not in line or line.startswith(("#", "zsclip:", "src/")):
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as error:
            raise AssertionError(f"README.md:{number}: not a shell line ({error}): {line}") from None
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token in OPERATORS:
                words = [w for w in segment if not re.fullmatch(r"[A-Z_]+=.*", w)]  # VAR=value zsclip ...
                if words and words[0] == "zsclip":
                    found.append((number, words[1:]))
                segment = []
            else:
                segment.append(token)
    return found


COMMANDS = readme_commands()


def test_the_readme_has_commands_of_every_subcommand():
    named = {argv[0] for _, argv in COMMANDS if argv and not argv[0].startswith("-")}
    assert named >= set(main.commands) - {"models"} | {"classify"}, sorted(set(main.commands) - named)
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("line, argv", COMMANDS, ids=[f"README.md:{line}" for line, _ in COMMANDS])
def test_a_readme_command_parses(line, argv):
    group_options = list(itertools.takewhile(lambda word: word.startswith("-"), argv))
    known = {name for param in main.params for name in param.opts}
    assert set(group_options) <= known, f"README.md:{line}: zsclip has no option {set(group_options) - known}"
    arguments = argv[len(group_options):]
    if not arguments:
        return
    context = click.Context(main, info_name="zsclip")
    name, command, rest = main.resolve_command(context, list(arguments))
    assert command is not None, f"README.md:{line}: no subcommand {arguments[0]!r}"
    try:
        command.make_context(name, list(rest), parent=context)  # options exist, values convert
    except click.MissingParameter:
        pass  # an example may leave out what the surrounding text supplies
    except click.UsageError as error:
        raise AssertionError(f"README.md:{line}: zsclip {' '.join(argv)}: {error.format_message()}") from None
    for word in argv:
        if word.startswith("examples/"):
            assert (ROOT / word).exists(), f"README.md:{line} names {word}, which is not in the repository"


def test_help_names_every_output_format():
    from zsclip.outputs.rows import FORMATS

    runner = click.testing.CliRunner()
    for command in ("classify", "search"):
        text = " ".join(runner.invoke(main, [command, "--help"]).output.split())
        assert all(extension in text for extension in FORMATS), (command, FORMATS)
    text = " ".join(runner.invoke(main, ["--help"]).output.split())
    assert all(extension in text for extension in FORMATS)
