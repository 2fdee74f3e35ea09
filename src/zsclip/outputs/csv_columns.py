"""Top-k CSV rows made a batch at a time from arrays: the text ``ResultWriter`` writes row by row, byte for byte.

``zsclip classify STORE -o out.csv`` over a million stored rows spent more time making a Python object per row and
formatting it than classifying it (docs/round4-store.md). Here a batch of a store's answers (paths, errors, [n, k]
class indices and float32 probabilities) becomes its CSV text with no Python work per row but the path's cell:
each class's label cell is made once per run (by the writer), probabilities are formatted as ``"%.6f"`` by
integer arithmetic (a float32 times 10**6 is exact in float64, so ``rint`` rounds it as Python's formatting
does: half to even on the exact value), and pyarrow joins the columns in C. Quoting is the ``csv`` module's
own, applied to each distinct cell that holds one of the excel dialect's special characters
(``tests/test_csv_columns.py`` compares the bytes with ``ResultWriter``'s on arbitrary text, probabilities and
damaged rows).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .text import csv_cell

#: characters that make the ``csv`` module's excel dialect quote a cell (delimiter, quote character, line ends)
_SPECIAL = r'[,"\r\n]'
#: text that ``csv_cell`` keeps as it is: printable ASCII, not starting as a formula would (``text._FORMULA_START``)
_PLAIN = r"^([\x20-\x2a\x2c\x2e-\x3c\x3e\x3f\x41-\x7e][\x20-\x7e]*)?$"
_DIGITS = 6
#: 64-bit offsets: a batch's text may pass 2 GB (long labels), which 32-bit string offsets could not hold
_TEXT = pa.large_string()
_UNIT = 10**_DIGITS


def quoted(cell: str) -> str:
    """``cell`` as the ``csv`` module writes it among other cells (quoted only when it must be)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([cell, ""])
    return buffer.getvalue()[:-3]  # the row's own ",\r\n"


def top_k_rows(paths: Sequence[str], errors: Sequence[str | None], indices: np.ndarray, scores: np.ndarray,
               label_cells: Sequence[str], top_k: int) -> str | None:
    """The CSV text of these rows (path, label, score, label_2, score_2, ..., error), each ending ``\\r\\n``, as
    ``ResultWriter`` writes them; ``label_cells``: each class's cell as written (``quoted(csv_cell(label))``).
    Error rows carry index -1. None when a probability is not in [0, 1] (then the writer formats the rows)."""
    count, picked = indices.shape
    ok = np.array([error is None for error in errors], dtype=bool)
    probabilities = np.where(ok[:, None], scores, 0.0).astype(np.float64)
    if not np.all((probabilities >= 0) & (probabilities <= 1)):
        return None
    columns = [_cells(paths)]
    labels = pa.array([*label_cells, ""], type=_TEXT)  # the last: an error row's empty cells
    for rank in range(top_k):
        if rank >= picked:
            columns += [pa.array([""] * count, type=_TEXT)] * 2
            continue
        chosen = np.where(ok, indices[:, rank], len(label_cells))
        columns.append(labels.take(pa.array(chosen)))
        columns.append(pc.if_else(pa.array(ok), _formatted(probabilities[:, rank]), pa.scalar("", _TEXT)))
    columns.append(pa.array(["\r\n"] * count, type=_TEXT) if ok.all() else pa.array(
        [quoted(csv_cell(error)) + "\r\n" if error else "\r\n" for error in errors], type=_TEXT))
    joined = pc.binary_join_element_wise(*columns, pa.scalar(",", _TEXT))  # a string per row, one buffer, in order
    if not len(joined):
        return ""
    bounds = np.frombuffer(joined.buffers()[1], dtype=np.int64, count=len(joined) + 1, offset=joined.offset * 8)
    return joined.buffers()[2].to_pybytes()[bounds[0]:bounds[-1]].decode("utf-8")


def _cells(texts: Sequence[str]) -> pa.Array:
    """The CSV cells of ``texts`` (``quoted(csv_cell(text))``): a text of printable ASCII that starts no formula is
    its own cell, decided for the whole column in C; only the others are made one by one."""
    try:
        array = pa.array(texts, type=_TEXT)
    except UnicodeEncodeError:  # a name with bytes that are not UTF-8 (surrogates): csv_cell escapes them
        return pa.array([quoted(csv_cell(text)) for text in texts], type=_TEXT)
    plain = pc.and_(pc.match_substring_regex(array, _PLAIN), pc.invert(pc.match_substring_regex(array, _SPECIAL)))
    if pc.all(plain).as_py():
        return array
    return pa.array([text if keep else quoted(csv_cell(text)) for text, keep in zip(texts, plain.to_pylist(),
                                                                                   strict=True)], type=_TEXT)


def _formatted(values: np.ndarray) -> pa.Array:
    """``f"{value:.6f}"`` of each value in [0, 1], made by integer arithmetic: 8 characters each."""
    units = np.rint(values * _UNIT).astype(np.int64)  # exact: a float32 times 10**6 fits float64's mantissa
    characters = np.empty((len(values), 2 + _DIGITS), dtype=np.uint8)
    characters[:, 0] = ord("0") + units // _UNIT
    characters[:, 1] = ord(".")
    fraction = units % _UNIT
    for place in range(_DIGITS):
        characters[:, 2 + place] = ord("0") + (fraction // 10 ** (_DIGITS - 1 - place)) % 10
    offsets = np.arange(0, characters.size + 1, 2 + _DIGITS, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(characters.tobytes()))


__all__ = ["quoted", "top_k_rows"]
