"""Property-based tests (Hypothesis) for every parser of user text: labels and synonyms, label and
manifest files, templates, brace patterns, URLs, and the text made safe for terminals and CSV.

The properties: any input ends in a result or in zsclip's own InputError (never another
exception), results are bounded, and well-formed input round-trips exactly.
"""

from __future__ import annotations

import re
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsclip.data.collections import manifest
from zsclip.data.shards import MAX_SHARDS, expand_shards
from zsclip.data.urls import fetch_url, is_url
from zsclip.errors import ImageReadError, InputError
from zsclip.outputs.text import csv_cell, printable
from zsclip.prompts import MAX_TEMPLATE_CHARS, parse_labels, parse_synonyms, read_labels, resolve_templates

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: a name users may type: any text without the separators, not blank, no surrounding spaces
names = st.text(min_size=1, max_size=20).map(str.strip).filter(lambda n: n and not set(n) & {",", "|"})
line_names = names.filter(lambda n: not set(n) & {"\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85",
                                                  "\u2028", "\u2029"} and not n.startswith("#"))


@SETTINGS
@given(st.text(max_size=200))
def test_label_strings_parse_or_fail_in_one_line(text):
    try:
        classes = parse_labels(text)
    except InputError as error:
        assert "\n" not in str(error)
        return
    assert all(name == name.strip() and name and "," not in name and "|" not in name
               for names_ in classes for name in names_)


@SETTINGS
@given(st.lists(st.lists(names, min_size=1, max_size=3), min_size=1, max_size=6))
def test_label_strings_round_trip(classes):
    text = ",".join(" | ".join(synonyms) for synonyms in classes)
    assert parse_labels(text) == classes
    assert [parse_synonyms("|".join(synonyms)) for synonyms in classes] == classes


@SETTINGS
@given(st.binary(max_size=300))
def test_label_files_of_any_bytes_read_or_fail_in_one_line(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.txt"
        path.write_bytes(data)
        try:
            classes = read_labels(path)
        except InputError as error:
            assert "\n" not in str(error) and "labels.txt" in str(error)
            return
        assert classes and all(synonyms for synonyms in classes)


@SETTINGS
@given(st.lists(st.lists(line_names, min_size=1, max_size=3), min_size=1, max_size=6), st.booleans(),
       st.sampled_from(["\n", "\r\n"]))
def test_label_files_round_trip_with_comments_and_a_bom(classes, bom, newline):
    text = newline.join(["# a comment", *(" | ".join(s) for s in classes), "   # another", ""])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.txt"
        path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
        assert read_labels(path) == classes


@SETTINGS
@given(st.text(max_size=300), st.sampled_from([".csv", ".jsonl"]))
def test_manifests_of_any_text_open_or_fail_in_one_line(text, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"m{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            collection = manifest(path)
        except InputError as error:
            assert "\n" not in str(error).strip()
            return
        for item in collection.items:  # every row is an item; a bad one carries its reason
            assert item.error is None or item.error.startswith(str(path))
            assert item.error is not None or 0 <= item.target < len(collection.classnames)


@SETTINGS
@given(st.lists(st.sampled_from(list("{}0:>!r.x a") + ["__class__", "{}", "{0}"]), max_size=20).map("".join))
def test_templates_are_accepted_only_with_plain_placeholders(text):
    try:
        template = resolve_templates([text])[0]
    except InputError as error:
        assert "\n" not in str(error)
        return
    prompt = template("NAME")
    assert "NAME" in prompt
    assert len(prompt) <= len(text) + 4 * text.count("{")  # bounded: nothing but the name is inserted


@SETTINGS
@given(st.text(max_size=MAX_TEMPLATE_CHARS + 50))
def test_any_template_text_is_a_template_or_one_line(text):
    try:
        template = resolve_templates([text])[0]
    except InputError:
        return
    assert len(template("x" * 10)) <= len(text) + 10 * max(1, text.count("{"))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=1, max_size=3))
def test_brace_ranges_expand_to_their_size_or_are_refused(ranges):
    pattern = "s" + "".join(f"-{{{a}..{b}}}" for a, b in ranges) + ".tar"
    expected = 1
    for a, b in ranges:
        expected *= abs(b - a) + 1
    try:
        shards = expand_shards(pattern)
    except InputError as error:
        assert expected > MAX_SHARDS and "more than" in str(error)
        return
    assert len(shards) == expected <= MAX_SHARDS


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("{}.,0123456789ab-")), max_size=40))
def test_any_brace_pattern_is_bounded(pattern):
    try:
        shards = expand_shards(pattern)
    except InputError:
        return
    assert len(shards) <= MAX_SHARDS


@SETTINGS
@given(st.text(max_size=60))
def test_only_http_and_https_urls_are_urls(text):
    assert is_url(text) == bool(re.match(r"(?i)https?://", text))
    if not is_url(text):
        with pytest.raises(ImageReadError, match="not an http"):
            fetch_url(text)


@SETTINGS
@given(st.sampled_from(["file", "ftp", "data", "javascript", "gopher", "jar"]), st.text(max_size=30))
def test_other_schemes_are_never_fetched(scheme, rest):
    with pytest.raises(ImageReadError):
        fetch_url(f"{scheme}://{rest}")


@SETTINGS
@given(st.text(max_size=80))
def test_printable_text_is_one_line_without_control_characters(text):
    shown = printable(text)
    assert not any(unicodedata.category(c) == "Cc" for c in shown)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert not csv_cell(text).startswith(("=", "+", "-", "@"))
