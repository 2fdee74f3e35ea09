"""A store's top-k rows written to CSV a batch at a time (outputs/csv_columns.py): the bytes ``ResultWriter`` writes
one prediction at a time, on arbitrary paths, labels, probabilities (halfway cases of "%.6f" included) and error
rows; and ``zsclip classify STORE -c FILE -o out.csv`` takes that way and writes the file the per-row way writes."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import zsclip
from test_store_integrity import _damaged_store
from test_store_integrity import demo as demo  # noqa: F401  (the demo model, loaded once per module)
from zsclip.heads.base import Prediction
from zsclip.outputs.csv_columns import quoted, top_k_rows
from zsclip.outputs.rows import ResultWriter
from zsclip.outputs.text import csv_cell

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(list(',"\r\n=+-@\t\x1b')),
               max_size=12)
#: float32 probabilities: the ends, halfway cases of six decimals (k/128 for odd k: x * 10**6 ends in .5), any
PROBABILITY = st.one_of(st.sampled_from([0.0, 1.0, 2.0**-149, 0.0078125, 0.9921875, 0.5, 1 - 2.0**-24]),
                        st.integers(0, 127).map(lambda k: (2 * k + 1) / 256),
                        st.floats(0, 1, width=32))


def _written(tmp_path: Path, name: str, top_k: int, rows: list[tuple[str, str | None, list[int], list[float]]],
             classnames: list[str], arrays: bool) -> bytes:
    writer = ResultWriter(tmp_path / name, top_k)
    if arrays:
        picked = min(top_k, len(classnames))
        indices = np.array([r[2] if r[1] is None else [-1] * picked for r in rows], dtype=np.int64).reshape(-1, picked)
        scores = np.array([r[3] if r[1] is None else [np.nan] * picked for r in rows], dtype=np.float32).reshape(
            -1, picked)
        writer.write_arrays([r[0] for r in rows], [r[1] for r in rows], indices, scores, classnames)
    else:
        for path, error, picked, values in rows:
            writer.write(Prediction(path, [], [], error) if error is not None else
                         Prediction(path, [classnames[i] for i in picked],
                                    np.asarray(values, dtype=np.float32).tolist()))
    return writer.close().read_bytes()


@settings(max_examples=150, deadline=None)
@given(data=st.data(), classnames=st.lists(TEXT, min_size=1, max_size=6), top_k=st.integers(1, 7))
def test_a_batch_written_as_arrays_is_the_rows_written_one_by_one(tmp_path_factory, data, classnames, top_k):
    picked = min(top_k, len(classnames))
    row = st.tuples(TEXT, st.none() | TEXT.filter(bool),
                    st.lists(st.integers(0, len(classnames) - 1), min_size=picked, max_size=picked),
                    st.lists(PROBABILITY, min_size=picked, max_size=picked))
    rows = data.draw(st.lists(row, max_size=20))
    folder = tmp_path_factory.mktemp("csv")
    expected = _written(folder, "rows.csv", top_k, rows, classnames, arrays=False)
    assert _written(folder, "arrays.csv", top_k, rows, classnames, arrays=True) == expected
    with open(folder / "arrays.csv", newline="", encoding="utf-8") as handle:  # and the csv module reads it back
        assert len(list(csv.reader(handle))) == len(rows) + 1


def test_probabilities_format_as_python_does_at_every_halfway_case():
    halves = (2 * np.arange(0, 128) + 1) / 256  # k/256 for odd k: exact in float32, x * 10**6 ends in .5
    values = np.concatenate([halves, np.linspace(0, 1, 1001), [0.0, 1.0, 2.0**-149]]).astype(np.float32)
    text = top_k_rows(["p"] * len(values), [None] * len(values), np.zeros((len(values), 1), dtype=np.int64),
                      values[:, None], ["c"], 1)
    assert text.split("\r\n")[:-1] == [f"p,c,{float(v):.6f}," for v in values]


def test_a_probability_outside_0_1_is_left_to_the_row_by_row_writer(tmp_path):
    assert top_k_rows(["p"], [None], np.zeros((1, 1), dtype=np.int64), np.array([[1.5]], np.float32), ["c"], 1) is None
    rows = [("p", None, [0], [1.5]), ("q", None, [0], [-0.25])]
    assert (_written(tmp_path, "a.csv", 1, rows, ["c"], arrays=True)
            == _written(tmp_path, "b.csv", 1, rows, ["c"], arrays=False))


def test_cells_are_quoted_as_the_csv_module_quotes_them():
    for cell in ["", "plain", "a,b", 'say "hi"', "x\ny", "x\ry", " lead", "trail ", "'=1"]:
        assert quoted(cell) + ",\r\n" == _csv_line([cell, ""])


def _csv_line(cells: list[str]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue()


def test_the_command_writes_a_stores_csv_a_batch_at_a_time_with_the_rows_of_the_per_row_writer(demo, tmp_path):
    """Through ``zsclip classify``: a store with damaged rows, a classifier file; the file equals the one the
    per-prediction writer makes of ``classify_store``'s answers, the failures are reported and the exit is 1."""
    import subprocess

    from zsclip.cli.classify import _store_scores
    from zsclip.job import HeadOptions, open_source, plan
    from zsclip.store import EmbeddingStore
    from zsclip.tasks.stored import classify_store

    folder, _ = _damaged_store(demo, tmp_path)
    names = ["red, circle", 'blue "square"', "=green star"]
    classifier = zsclip.ZeroShotClassifier.build(demo, names, "photo")
    classifier_file = classifier.save(tmp_path / "c.zsc")
    job = plan(open_source([str(folder)]), HeadOptions(classifier=str(classifier_file), top_k=2),
               run=zsclip.RunOptions())
    assert _store_scores(job, None, "csv") is not None and _store_scores(job, None, "jsonl") is None

    output = tmp_path / "out.csv"
    result = subprocess.run([sys.executable, "-m", "zsclip", "classify", str(folder), "-c", str(classifier_file),
                             "-k", "2", "-o", str(output)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # damaged rows: reported, not fatal
    predictions = list(classify_store(EmbeddingStore.open(folder), classifier, top_k=2))
    failed = sum(prediction.error is not None for prediction in predictions)
    assert failed == 11 and result.stderr.count("zsclip: skipped ") == failed
    assert f"classified {len(predictions) - failed} of {len(predictions)} images; {failed} failed" in result.stderr
    writer = ResultWriter(tmp_path / "expected.csv", 2)
    for prediction in predictions:
        writer.write(prediction)
    assert output.read_bytes() == writer.close().read_bytes()
    with open(output, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["label"] for row in rows if not row["error"]} <= {csv_cell(name) for name in names}


def test_other_runs_keep_the_per_row_way(demo, tmp_path):
    """A correction over the collection, another format, images instead of a store: answered a row at a time."""
    from zsclip.cli.classify import _store_scores
    from zsclip.job import HeadOptions, open_source, plan

    folder, _ = _damaged_store(demo, tmp_path)
    classifier_file = zsclip.ZeroShotClassifier.build(demo, ["red", "blue"], "photo").save(tmp_path / "c.zsc")
    options = HeadOptions(classifier=str(classifier_file), top_k=2)
    job = plan(open_source([str(folder)]), options, run=zsclip.RunOptions())
    assert _store_scores(job, None, "csv") is not None
    assert _store_scores(job, "tim", "csv") is None and _store_scores(job, None, "jsonl") is None
    images = plan(open_source([str(tmp_path / "imgs")]), options, encoder=demo, run=zsclip.RunOptions())
    assert _store_scores(images, None, "csv") is None


def test_other_formats_write_arrays_as_their_rows(tmp_path):
    """``write_arrays`` into JSON Lines or Parquet: the rows ``write`` makes of the same predictions."""
    import pyarrow.parquet as pq

    rows = [("a.jpg", None, [1, 0], [0.75, 0.25]), ("b.jpg", "unreadable", [], []),
            ("c,d.jpg", None, [0, 1], [0.5, 0.5])]
    classnames = ["cat", "dog"]
    for name in ("rows.jsonl", "rows.parquet"):
        by_rows = tmp_path / "by-rows" / name
        by_arrays = tmp_path / "by-arrays" / name
        by_rows.parent.mkdir(exist_ok=True)
        by_arrays.parent.mkdir(exist_ok=True)
        writer = ResultWriter(by_rows, 2)
        for path, error, picked, values in rows:
            writer.write(Prediction(path, [], [], error) if error else Prediction(path, [classnames[i] for i in picked],
                                                                                  values))
        writer.close()
        writer = ResultWriter(by_arrays, 2)
        writer.write_arrays([r[0] for r in rows], [r[1] for r in rows],
                            np.array([r[2] or [-1, -1] for r in rows]), np.array([r[3] or [np.nan] * 2 for r in rows],
                                                                                 dtype=np.float32), classnames)
        writer.close()
        if name.endswith(".parquet"):
            assert pq.read_table(by_arrays).to_pylist() == pq.read_table(by_rows).to_pylist()
        else:
            assert by_arrays.read_bytes() == by_rows.read_bytes()


def test_a_path_with_bytes_that_are_not_utf8_is_escaped_as_the_row_writer_escapes_it(tmp_path):
    rows = [("caf\udce9.jpg", None, [0], [1.0]), ("plain.jpg", None, [0], [1.0])]
    expected = _written(tmp_path, "rows.csv", 1, rows, ["c"], arrays=False)
    assert b"caf\\xe9.jpg" in expected
    assert _written(tmp_path, "arrays.csv", 1, rows, ["c"], arrays=True) == expected


def test_one_writer_given_other_classes_for_a_later_batch_writes_their_labels(tmp_path):
    """The writer keeps the label cells of the classes it last wrote: another class list is made anew."""
    first, second = ["cat", "a,b"], ['say "hi"', "=dog"]
    by_arrays, by_rows = ResultWriter(tmp_path / "arrays.csv", 1), ResultWriter(tmp_path / "rows.csv", 1)
    for classnames in (first, second, first):
        by_arrays.write_arrays(["p.jpg", "q.jpg"], [None, None], np.array([[1], [0]]),
                               np.array([[0.5], [0.25]], dtype=np.float32), classnames)
        by_rows.write(Prediction("p.jpg", [classnames[1]], [0.5]))
        by_rows.write(Prediction("q.jpg", [classnames[0]], [0.25]))
    assert by_arrays.close().read_bytes() == by_rows.close().read_bytes()
