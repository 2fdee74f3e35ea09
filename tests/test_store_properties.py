"""Property-based tests (Hypothesis) for the embedding store's manifest parser and validator.

The properties, as for every parser of user text (test_parser_properties.py): any file ends in a
manifest every reader can use as it is, or in one StoreError line naming the file; valid manifests
round-trip exactly; and nothing allocated depends on a value in the file.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsclip.store import EmbeddingStore, StoreError
from zsclip.store.format import DTYPES, FORMAT, MANIFEST, MAX_EMBED_DIM, VERSION, read_manifest, schema
from zsclip.store.location import Location

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: any JSON value (NaN and infinities included: Python's json reads and writes them)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
shard_names = st.text(min_size=1, max_size=20)
shard_entries = st.fixed_dictionaries({"file": shard_names | json_values,
                                       "rows": st.integers(min_value=-3, max_value=2**40) | json_values})
FIELDS = ["format", "version", "model", "pretrained", "fingerprint", "backend", "embed_dim", "precision", "dtype",
          "logit_scale", "logit_bias", "preprocessing", "classnames", "shards"]


def _valid() -> dict:
    return {"format": FORMAT, "version": VERSION, "zsclip_version": "0", "model": "demo", "pretrained": None,
            "fingerprint": "open_clip:1:abc", "backend": "open_clip", "embed_dim": 64, "precision": "fp32",
            "dtype": "float16", "logit_scale": 100.0, "logit_bias": None, "preprocessing": None,
            "classnames": ["a", "b"], "shards": [{"file": "shard-00000-0.parquet", "rows": 3}]}


def _read(text: str | bytes):
    """read_manifest on a store folder holding ``text`` as its manifest: (manifest, None) or (None, error)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / MANIFEST
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            return read_manifest(Location(folder)), None
        except StoreError as error:
            message = str(error)
            assert "\n" not in message and message.startswith(f"store manifest {path}"), message
            assert len(message) < 400 + len(str(path))
            return None, message


def _usable(manifest: dict) -> None:
    """Everything a reader takes from a manifest has the type and range it expects."""
    store = EmbeddingStore(Location("/nonexistent-store"), manifest)
    assert type(store.embed_dim) is int and 0 < store.embed_dim <= MAX_EMBED_DIM
    assert store.dtype in DTYPES
    assert isinstance(store.model, str) and store.model.strip()
    assert all(isinstance(v, str) or v is None for v in (store.pretrained, store.fingerprint))
    assert store.classnames is None or all(isinstance(name, str) for name in store.classnames)
    for shard, path in zip(manifest["shards"], store.shard_files, strict=True):
        assert type(shard["rows"]) is int and shard["rows"] >= 0
        assert path.parent == Path("/nonexistent-store") and path.name == shard["file"]
    assert len({shard["file"] for shard in manifest["shards"]}) == len(manifest["shards"])
    for field in ("logit_scale", "logit_bias"):
        value = manifest.get(field)
        assert value is None or (type(value) in (int, float) and math.isfinite(value))
    assert schema(store.embed_dim, store.dtype).field("embedding").type.list_size == store.embed_dim


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
       st.lists(st.sampled_from(FIELDS), max_size=3),
       st.none() | st.lists(shard_entries, max_size=4))
def test_any_damaged_manifest_is_usable_or_one_line(changes, removed, shards):
    manifest = _valid()
    manifest.update(changes)
    if shards is not None:
        manifest["shards"] = shards
    for field in removed:
        manifest.pop(field, None)
    parsed, error = _read(json.dumps(manifest))
    if parsed is not None:
        _usable(parsed)


@SETTINGS
@given(st.binary(max_size=300))
def test_a_manifest_of_any_bytes_is_usable_or_one_line(data):
    parsed, _ = _read(data)
    if parsed is not None:
        _usable(parsed)


@SETTINGS
@given(st.text(max_size=200))
def test_a_manifest_of_any_text_is_usable_or_one_line(text):
    parsed, _ = _read(text)
    if parsed is not None:
        _usable(parsed)


names = st.text(min_size=1, max_size=30).filter(lambda n: n.isprintable() and not set(n) & {"/", "\\"}
                                                and n not in (".", ".."))


@SETTINGS
@given(st.integers(min_value=1, max_value=MAX_EMBED_DIM), st.sampled_from(sorted(DTYPES)),
       st.text(min_size=1, max_size=40).filter(str.strip), st.none() | st.lists(st.text(max_size=20), max_size=5),
       st.lists(names, unique=True, max_size=5), st.lists(st.integers(min_value=0, max_value=2**40), min_size=5,
                                                           max_size=5))
def test_valid_manifests_round_trip(dim, dtype, model, classnames, files, rows):
    manifest = _valid() | {"embed_dim": dim, "dtype": dtype, "model": model, "classnames": classnames,
                           "shards": [{"file": f, "rows": r} for f, r in zip(files, rows, strict=False)]}
    parsed, error = _read(json.dumps(manifest, ensure_ascii=False))
    assert error is None and parsed == manifest
    _usable(parsed)
