"""``printable`` takes a fast path for plain ASCII text (decided in C) and the CSV writer keeps each label's cell:
both must give exactly what the full escaping gives, for any text (Hypothesis), hostile text included."""

from __future__ import annotations

import csv

from hypothesis import given, settings
from hypothesis import strategies as st

from zsclip.heads import Prediction
from zsclip.outputs.rows import ResultWriter
from zsclip.outputs.text import _CONTROL, _escape, csv_cell, printable, undecodable_escaped

HOSTILE = ["plain.jpg", "=cmd|' /C calc'!A0", "tab\there", "new\nline", "\x1b[31mred", "caf\udce9.jpg", "\u2028x",
           "-2+3", "@SUM(1)", "\x7f", "\x9b", "ok name (1).png", ""]


def escaped_in_full(text: object) -> str:
    return _CONTROL.sub(_escape, undecodable_escaped(str(text)))


@settings(max_examples=300, deadline=None)
@given(st.text() | st.sampled_from(HOSTILE) | st.text(alphabet=st.characters(max_codepoint=0xA0)))
def test_printable_equals_the_full_escaping(text):
    assert printable(text) == escaped_in_full(text)


def test_the_csv_writer_writes_each_label_as_csv_cell_does(tmp_path):
    out = tmp_path / "rows.csv"
    writer = ResultWriter(out, top_k=2)
    for index, label in enumerate(HOSTILE):
        writer.write(Prediction(f"{index}.png", [label, HOSTILE[0]], [0.75, 0.25]))
        writer.write(Prediction(f"again-{index}.png", [label, label], [0.5, 0.5]))  # the kept cell, reused
    writer.close()
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))[1:]
    for index, label in enumerate(HOSTILE):
        assert rows[2 * index][1] == csv_cell(label) and rows[2 * index + 1][1:4:2] == [csv_cell(label)] * 2
