"""WebDataset tar shards: samples streamed member by member, never unpacked to disk.

A sample is the members sharing a key (``key.jpg`` + ``key.cls`` / ``key.txt`` / ``key.json``).
A shard that is cut short or unreadable yields one error item naming it, after the samples read
before the damage: the run goes on with the other shards.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import InputError
from .collections import LabelledCollection
from .urls import is_url

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def webdataset(pattern: str, classnames: Sequence[str]) -> LabelledCollection:
    """Tar shards in WebDataset layout (``key.jpg`` + ``key.cls`` / ``key.txt`` / ``key.json``),
    brace patterns expanded ("shards/{00000..00099}.tar"). Samples are read as streams later."""
    from braceexpand import braceexpand

    shards = list(braceexpand(pattern))
    missing = [s for s in shards if not is_url(s) and not Path(s).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(shards)} shards not found, e.g. {missing[0]}")
    return LabelledCollection(list(classnames), [], shards=shards)


def shard_samples(shard: str) -> Iterator[tuple[str, dict[str, bytes] | None, str | None]]:
    """(sample name, {extension: bytes}, error) for each sample of a tar shard, streamed in order.
    A shard that cannot be read yields one error item instead of ending the run."""
    key, fields = None, {}
    try:
        with tarfile.open(shard, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, _, extension = base.partition(".")
                member_key = f"{folder}/{stem}" if folder else stem
                if member_key != key and key is not None:
                    yield f"{shard}#{key}", fields, None
                    fields = {}
                key = member_key
                handle = archive.extractfile(member)
                fields[extension.lower()] = handle.read() if handle else b""
            # a cut inside a header ends a streamed tar silently: a whole archive ends with two
            # zero blocks (1024 bytes) after its last member
            if not is_url(shard) and os.path.getsize(shard) < archive.offset + 1024:
                raise tarfile.ReadError("truncated archive (no end-of-archive marker)")
    except (tarfile.TarError, OSError, EOFError) as error:
        if key is not None and fields:
            yield f"{shard}#{key}", fields, None
        yield shard, None, f"cannot read shard: {error}"
        return
    if key is not None:
        yield f"{shard}#{key}", fields, None


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
