"""WebDataset tar shards: samples streamed member by member, never unpacked to disk.

A sample is the members sharing a key (``key.jpg`` + ``key.cls`` / ``key.txt`` / ``key.json``).
A shard that is cut short or unreadable yields one error item naming it, after the samples read
before the damage: the run goes on with the other shards.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import InputError
from .labelled import LabelledCollection
from .urls import is_url

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
#: At most this many shards from one pattern ("{0..99999999}" is refused before it is expanded in memory).
MAX_SHARDS = 100_000
#: A sample's members may hold at most this many bytes together; a larger one becomes an error row.
MAX_SAMPLE_BYTES = 64 * 1024 * 1024
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz


def is_shards(text: str) -> bool:
    """A WebDataset shard or a brace pattern of shards ("shards/{00000..00099}.tar", "s/{a,b}.tar")."""
    lowered = text.lower()
    return lowered.endswith((".tar", ".tar.gz", ".tgz")) or (
        "{" in text and "}" in text and any(ext in lowered for ext in (".tar", ".tgz")))


def expand_shards(pattern: str) -> list[str]:
    """The shard names a brace pattern stands for, at most ``MAX_SHARDS`` (checked while expanding)."""
    from itertools import islice

    from braceexpand import braceexpand

    if _upper_bound(pattern) > MAX_SHARDS:  # braceexpand builds a range whole before yielding from it
        raise InputError(f"shard pattern {pattern!r} names more than {MAX_SHARDS} shards: split the run")
    try:
        shards = list(islice(braceexpand(pattern), MAX_SHARDS + 1))
    except (ValueError, RecursionError) as error:
        raise InputError(f"shard pattern {pattern!r} cannot be expanded ({error})") from None
    if len(shards) > MAX_SHARDS:
        raise InputError(f"shard pattern {pattern!r} names more than {MAX_SHARDS} shards: split the run")
    return shards


_RANGE = re.compile(r"\{(-?\d+|[A-Za-z])\.\.(-?\d+|[A-Za-z])(?:\.\.(-?\d+))?\}")


def _upper_bound(pattern: str) -> int:
    """How many names ``pattern``'s ranges ({0..99}, {a..z}, with a step) and lists ({a,b}) can
    give at most, computed without expanding (nested braces counted generously)."""
    total = 1
    for match in _RANGE.finditer(pattern):
        start, end, step = match.groups()
        if start.lstrip("-").isdigit() and end.lstrip("-").isdigit():
            span = abs(int(end) - int(start))
        else:
            span = abs(ord(end) - ord(start))
        total *= span // max(1, abs(int(step or 1))) + 1
        if total > MAX_SHARDS:
            return total
    for group in re.findall(r"\{([^{}]*,[^{}]*)\}", pattern):
        total *= group.count(",") + 1
        if total > MAX_SHARDS:
            return total
    return total


def webdataset(pattern: str, classnames: Sequence[str]) -> LabelledCollection:
    """Tar shards in WebDataset layout (``key.jpg`` + ``key.cls`` / ``key.txt`` / ``key.json``),
    brace patterns expanded ("shards/{00000..00099}.tar"). Samples are read as streams later."""
    shards = expand_shards(pattern)
    missing = [s for s in shards if not is_url(s) and not Path(s).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(shards)} shards not found, e.g. {missing[0]}")
    return LabelledCollection(list(classnames), [], shards=shards)


def shard_samples(
    shard: str, max_sample_bytes: int = MAX_SAMPLE_BYTES
) -> Iterator[tuple[str, dict[str, bytes] | None, str | None]]:
    """(sample name, {extension: bytes}, error) for each sample of a tar shard, streamed in order.

    Plain and gzip/bzip2/xz-compressed tars (``.tar.gz``, ``.tgz``) are read. A sample whose members
    hold more than ``max_sample_bytes`` is an error item (its bytes are skipped, never read into
    memory); a shard that cannot be read, or is cut short, yields one error item after the samples
    read before the damage, instead of ending the run."""
    key, fields, oversized = None, {}, None
    try:
        compressed = _is_compressed(shard)
        with tarfile.open(shard, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, _, extension = base.partition(".")
                member_key = f"{folder}/{stem}" if folder else stem
                if member_key != key and key is not None:
                    yield _sample(shard, key, fields, oversized)
                    fields, oversized = {}, None
                key = member_key
                if oversized is None and sum(map(len, fields.values())) + member.size > max_sample_bytes:
                    oversized = (f"member {base} is {member.size} bytes; a sample may hold at most "
                                 f"{max_sample_bytes} bytes")
                if oversized is not None:
                    continue  # the stream skips the member's data without keeping it
                handle = archive.extractfile(member)
                fields[extension.lower()] = handle.read() if handle else b""
            # a cut inside a header ends a streamed plain tar silently: a whole archive ends with
            # two zero blocks (1024 bytes) after its last member (compressed streams say so themselves)
            if not compressed and not is_url(shard) and os.path.getsize(shard) < archive.offset + 1024:
                raise tarfile.ReadError("truncated archive (no end-of-archive marker)")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        if key is not None and (fields or oversized):
            yield _sample(shard, key, fields, oversized)
        yield shard, None, f"cannot read shard: {error}"
        return
    if key is not None:
        yield _sample(shard, key, fields, oversized)


def _sample(shard: str, key: str, fields: dict[str, bytes], oversized: str | None):
    return (f"{shard}#{key}", None, oversized) if oversized else (f"{shard}#{key}", fields, None)


def _is_compressed(shard: str) -> bool:
    with open(shard, "rb") as handle:
        return handle.read(6).startswith(_COMPRESSED_MAGIC)


def sample_target(fields: dict[str, bytes], lookup: dict[str, int], count: int) -> int:
    """The class index of a sample from its ``cls`` (index), ``txt`` (name) or ``json`` label."""
    if "cls" in fields:
        value: object = fields["cls"].decode("utf-8").strip()
    elif "txt" in fields:
        value = fields["txt"].decode("utf-8").strip()
    elif "json" in fields:
        record = json.loads(fields["json"].decode("utf-8"))
        value = record.get("label", record.get("cls")) if isinstance(record, dict) else None
    else:
        raise ValueError("no label (cls, txt or json)")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        index = int(value)
        if not 0 <= index < count:
            raise ValueError(f"class index {index} is out of range (0..{count - 1})")
        return index
    if isinstance(value, str) and value in lookup:
        return lookup[value]
    raise ValueError(f"label {value!r} is not one of the classes")
