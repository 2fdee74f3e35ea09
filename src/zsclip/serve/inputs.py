"""Turn what a client sends (form fields) into checked classes and templates, or a ClientError.

Label syntax is the command line's: classes separated by commas (or one per line), synonyms
joined by ``|``: ``"dog|puppy,cat"``. Templates are a built-in set's name or template strings
with one ``{}``. Nothing here ever opens a file or a URL: a string that is not a known set name is
a template, never a path (unlike ``zsclip.prompts.resolve_templates``, which reads files for the CLI).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from ..errors import InputError
from ..prompts import TEMPLATE_SETS, resolve_classes
from .settings import Limits


class ClientError(Exception):
    """A request the server refuses: an HTTP status and one line saying what to change."""

    def __init__(self, status: int, message: str, details: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def refused(error: Exception, status: int = 422) -> ClientError:
    """The library's one-line refusal (written for the command line) as the service's: each CLI flag that is a
    form field here is named as that field (``--reject-calibrate`` -> ``reject_calibrate``), and the CLI's own
    hints in parentheses (``(CLI: --labels ...)``) are dropped."""
    message = _CLI_HINT.sub("", str(error))
    return ClientError(status, _FLAG.sub(_field_of, message))


_CLI_HINT = re.compile(r"\s*\(CLI: [^)]*\)")
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def _field_of(flag: re.Match) -> str:
    name = flag.group(1).replace("-", "_")
    return name if name in CLASSIFY_FIELDS else flag.group(0)


def parse_labels(values: Sequence[str] | None, limits: Limits) -> list[list[str]]:
    """Classes (lists of synonyms) from ``labels`` fields: "dog|puppy,cat" or one class per line."""
    classes: list[list[str]] = []
    for value in values or ():
        entries = value.splitlines() if "\n" in value else value.split(",")
        for entry in entries:
            names = [name.strip() for name in entry.split("|") if name.strip()]
            if not names:
                continue
            for name in names:
                if len(name) > limits.max_label_chars:
                    raise ClientError(422, f"label {name[:40]!r}... is {len(name)} characters, over the limit "
                                           f"of {limits.max_label_chars}")
            classes.append(names)
            if len(classes) > limits.max_labels:
                raise ClientError(422, f"more than {limits.max_labels} labels: send fewer, or build a classifier "
                                       "file with `zsclip build` and start the server with --classifier")
    if not classes:
        raise ClientError(422, 'no labels: send labels="cat,dog" (synonyms: "dog|puppy") or a classifier id')
    if len(classes) < 2:
        raise ClientError(422, f"only one label ({classes[0][0]!r}): zero-shot classification needs at least two")
    try:
        resolved, _ = resolve_classes(classes)
    except InputError as error:
        raise refused(error) from None
    return resolved


def parse_templates(values: Sequence[str] | None, default: str | Sequence[str], limits: Limits) -> str | list[str]:
    """A template set name (known to the server) or a list of checked template strings; ``default``
    (the operator's choice, trusted) when the request names none."""
    values = [value for value in (values or ()) if value.strip()]
    if not values:
        return default if isinstance(default, str) else list(default)
    if len(values) == 1 and values[0].strip() in TEMPLATE_SETS:
        return values[0].strip()
    templates = [line.strip() for value in values for line in value.splitlines() if line.strip()]
    if len(templates) > limits.max_templates:
        raise ClientError(422, f"{len(templates)} templates, over the limit of {limits.max_templates}")
    for template in templates:
        check_template(template, limits)
    return templates


def check_template(template: str, limits: Limits) -> None:
    """Exactly one bare ``{}`` and nothing else a format string could do (no fields, widths, attributes):
    ``"{:>999999999}"`` would otherwise allocate a gigabyte per prompt."""
    if len(template) > limits.max_template_chars:
        raise ClientError(422, f"template {template[:40]!r}... is over {limits.max_template_chars} characters")
    hint = (f"use a set name ({', '.join(TEMPLATE_SETS)}) or templates with exactly one {{}} "
            "where the label goes, e.g. 'a photo of a {}.'")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:
        raise ClientError(422, f"template {template!r} is not valid ({error}): {hint}") from None
    if fields != [("", "", None)]:
        raise ClientError(422, f"template {template!r} is not accepted: {hint}")


__all__ = ["ClientError", "refused", "parse_labels", "parse_templates", "check_template"]


#: What a classify request may send besides images: the CLI's head options as form fields.
CLASSIFY_FIELDS = frozenset({"images", "labels", "classifier", "templates", "top_k", "labels_tree", "tree_format",
                             "tree_mode", "beam", "descriptions", "reject", "reject_calibrate", "tpr", "reject_score",
                             "reject_label", "scale", "multi_label", "multi_score", "accept_precision",
                             "threshold", "frames"})


def parse_tree(text: str | None, kind: str | None, limits: Limits):
    """A label tree sent as text (YAML by default, or json / text), bounded like a tree file."""
    from ..hierarchy import parse_tree as parse

    if text is None or not text.strip():
        if kind is not None:
            raise ClientError(422, "tree_format applies to labels_tree: send the tree, or leave tree_format out")
        return None
    if len(text.encode("utf-8", "surrogatepass")) > limits.max_request_bytes:
        raise ClientError(413, "labels_tree is over the request size limit")
    try:
        return parse(text, kind or "yaml", source="labels_tree")
    except InputError as error:
        raise refused(error) from None


def parse_descriptions(text: str | None) -> dict | None:
    """class -> sentences sent as JSON text (CuPL / CLIP_benchmark format), checked as a file would be."""
    import json

    from ..hierarchy.descriptions import check_descriptions

    if text is None or not text.strip():
        return None
    try:
        return check_descriptions(json.loads(text), "descriptions")
    except (ValueError, RecursionError) as error:
        raise ClientError(422, f"descriptions is not valid JSON ({str(error)[:80]}): send "
                               '{"class": ["sentence", ...]}') from None
    except InputError as error:
        raise refused(error) from None
