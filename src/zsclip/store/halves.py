"""float16 embeddings widened to float32, exactly, three times as fast as numpy's own cast on most CPUs.

A store keeps its embeddings as float16, and every row read is widened to float32 before its length is checked
and it is classified. numpy widens float16 one value at a time (with a vectorised cast only on CPUs with
AVX-512): 1.9 ns a value here, a second per million 512-d rows, the largest single cost of reading a store.
Widening is bit arithmetic: a float16 ``s eeeee mmmmmmmmmm`` moved into float32's fields (the sign to bit 31,
exponent and mantissa shifted up by 13) reads as the float32 value times 2**-112, because the two formats'
exponent biases differ by 112; one multiplication by 2**112 scales it back, exactly (a power of two), and it
turns float16's subnormals, which land on float32 subnormals, into the float32 normals they are. Four
vectorised passes (widen the 16 bits with their sign, shift, mask, multiply) on cache-sized chunks: 0.7 ns a
value. Infinities and NaN (exponent all ones) come out as finite values of magnitude 2**16 or more, which no
finite float16 reaches (its largest is 65,504): any such chunk has those values widened again by numpy, so
the result is numpy's bit for bit, NaN payloads included (``tests/test_store_layout.py`` checks all 65,536
values). A thread whose floating-point unit treats subnormal inputs as zero (DAZ, which some libraries set
for speed) would lose float16's subnormals in the multiplication: there numpy widens everything.
"""

from __future__ import annotations

import numpy as np

#: values widened per chunk: 512 KB of float32, within a core's cache for the four passes
CHUNK = 131_072
#: the float32 bits kept after a sign-extending widen and a shift by 13: the sign and float16's 15 other bits
_FIELDS = np.uint32(0x8FFFE000).view(np.int32)
_SCALE = np.float32(2.0**112)
#: float32 magnitude from which a widened value was a float16 infinity or NaN
_SPECIAL = np.float32(65536.0)
#: the widest rows summed while widened: einsum sums a wider row in pieces of its buffer's size, in an order that
#: depends on the rows summed with it (a chunk of one row differs), so those are summed whole by the caller
WIDEST_SUMMED = 8192
#: a row's sum of squares from which it may hold one (2**16 squared)
_SPECIAL_SQUARES = np.float32(2.0**32)
_SUBNORMAL = np.array([np.uint32(1)], dtype=np.uint32).view(np.float32)  # 2**-149, float32's least subnormal


def widened(halves: np.ndarray) -> np.ndarray:
    """A new C-contiguous float32 array of the float16 array ``halves``'s values (any shape), equal bit for bit
    to ``halves.astype(np.float32)``."""
    if halves.dtype != np.float16 or not halves.size or not _subnormals_kept():
        return halves.astype(np.float32)
    flat_halves = np.ascontiguousarray(halves).reshape(-1)
    source = flat_halves.view(np.int16)
    result = np.empty(halves.shape, dtype=np.float32)
    flat = result.reshape(-1)
    for start in range(0, len(flat), CHUNK):
        values = flat[start:start + CHUNK]
        _widen(source[start:start + CHUNK], values)
        if values.max() >= _SPECIAL or values.min() <= -_SPECIAL:
            _specials_patched(values, flat_halves[start:start + CHUNK])
    return result


def rows_widened(halves: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(``widened(halves)``, each row's sum of squares) for float16 rows [n, D]: the sums are what
    ``np.einsum("ij,ij->i", values, values)`` gives (float32), made a chunk of rows at a time while the chunk is
    in the cache (the rows are not read back from memory for their lengths), and they replace ``widened``'s
    search for infinities and NaN: a row holding one sums to at least 2**32 (one widened value of 2**16 or more),
    so only a chunk with such a sum is looked at again. The sums are None where numpy widens (``widened``) and
    for rows wider than ``WIDEST_SUMMED``."""
    if (halves.dtype != np.float16 or halves.ndim != 2 or not halves.size or halves.shape[1] > WIDEST_SUMMED
            or not _subnormals_kept()):
        return widened(halves), None
    rows, dim = halves.shape
    source_halves = np.ascontiguousarray(halves)
    source = source_halves.view(np.int16)
    result = np.empty((rows, dim), dtype=np.float32)
    squares = np.empty(rows, dtype=np.float32)
    step = CHUNK // dim  # rows of at most WIDEST_SUMMED values: at least 16 rows a chunk
    for start in range(0, rows, step):
        values, sums = result[start:start + step], squares[start:start + step]
        _widen(source[start:start + step], values)
        np.einsum("ij,ij->i", values, values, out=sums)
        if sums.max() >= _SPECIAL_SQUARES:  # perhaps an infinity or NaN, perhaps only large values
            _specials_patched(values.reshape(-1), source_halves[start:start + step].reshape(-1))
            with np.errstate(all="ignore"):
                np.einsum("ij,ij->i", values, values, out=sums)
    return result, squares


def _widen(source: np.ndarray, values: np.ndarray) -> None:
    """float16 bits ``source`` (as int16) into the float32 ``values`` of the same shape, by bit arithmetic
    (infinities and NaN come out as values of magnitude 2**16 or more: see ``_specials_patched``)."""
    bits = values.view(np.int32)
    np.copyto(bits, source)  # sign-extended: the sign fills bits 15..31
    np.left_shift(bits, 13, out=bits)
    np.bitwise_and(bits, _FIELDS, out=bits)
    np.multiply(values, _SCALE, out=values)


def _specials_patched(values: np.ndarray, halves: np.ndarray) -> None:
    """The values of 1-d ``values`` widened from a float16 infinity or NaN replaced by numpy's own widening."""
    special = np.abs(values) >= _SPECIAL
    values[special] = halves[special].astype(np.float32)


def _subnormals_kept() -> bool:
    """Whether this thread's multiplications see a subnormal input as itself (not as zero: DAZ)."""
    return bool(np.multiply(_SUBNORMAL, _SCALE)[0] != 0)


__all__ = ["rows_widened", "widened"]
