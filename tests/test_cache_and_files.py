"""Classifier cache (hit, every kind of miss, location) and the safetensors file round trip."""

from __future__ import annotations

import json

import pytest
import torch

from zsclip import ClassifierFileError, ZeroShotClassifier


def _count_encodes(encoder, monkeypatch) -> list[int]:
    calls: list[int] = []
    original = encoder.encode_text
    monkeypatch.setattr(encoder, "encode_text", lambda texts, **kw: calls.append(len(texts)) or original(texts, **kw))
    return calls


def test_second_build_is_a_cache_hit_with_identical_weights(tiny_clip, monkeypatch, isolated_cache):
    calls = _count_encodes(tiny_clip, monkeypatch)
    first = ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "openai-imagenet-7", precision="fp32")
    second = ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "openai-imagenet-7", precision="fp32")
    assert calls == [14]
    assert torch.equal(first.weights, second.weights) and second.classnames == ["dog", "cat"]
    assert len(list(isolated_cache.glob("*.zsc"))) == 1
    assert second.encoder is tiny_clip


@pytest.mark.parametrize("change", [
    dict(classnames=["dog", "kitten"]),
    dict(classnames=[["dog", "puppy"], "cat"]),
    dict(classnames=["cat", "dog"]),
    dict(templates="photo"),
    dict(templates=["a photo of a {}!"]),
    dict(precision="bf16"),
])
def test_any_change_of_input_misses_the_cache(tiny_clip, monkeypatch, change):
    base = dict(classnames=["dog", "cat"], templates="openai-imagenet-7", precision="fp32")
    ZeroShotClassifier.build(tiny_clip, **base)
    calls = _count_encodes(tiny_clip, monkeypatch)
    ZeroShotClassifier.build(tiny_clip, **{**base, **change})
    assert len(calls) == 1


def test_another_model_misses_the_cache(tiny_clip, tiny_clip_other_dir, monkeypatch):
    import zsclip

    ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo", precision="fp32")
    other = zsclip.load_model(tiny_clip_other_dir, device="cpu")
    calls = _count_encodes(other, monkeypatch)
    clf = ZeroShotClassifier.build(other, ["dog", "cat"], "photo", precision="fp32")
    assert len(calls) == 1 and clf.provenance["fingerprint"] == other.fingerprint


def test_cache_disabled_and_cache_dir_argument(tiny_clip, monkeypatch, isolated_cache, tmp_path):
    calls = _count_encodes(tiny_clip, monkeypatch)
    for _ in range(2):
        ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo", cache=False)
    assert len(calls) == 2 and not isolated_cache.exists()
    elsewhere = tmp_path / "elsewhere"
    ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo", cache_dir=elsewhere)
    ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo", cache_dir=elsewhere)
    assert len(calls) == 3 and len(list(elsewhere.glob("*.zsc"))) == 1


def test_corrupt_cache_entry_is_rebuilt_with_a_warning(tiny_clip, monkeypatch, isolated_cache):
    ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo")
    (entry,) = isolated_cache.glob("*.zsc")
    entry.write_bytes(b"not a safetensors file")
    calls = _count_encodes(tiny_clip, monkeypatch)
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo")
    assert len(calls) == 1 and ZeroShotClassifier.load(entry).classnames == ["dog", "cat"]


def test_save_load_round_trip(tiny_clip, tmp_path):
    clf = ZeroShotClassifier.build(tiny_clip, [["dog", "puppy"], "cat", "bird"], "openai-imagenet-7", cache=False)
    path = clf.save(tmp_path / "pets.zsc")
    loaded = ZeroShotClassifier.load(path)
    assert torch.equal(loaded.weights, clf.weights)
    assert loaded.classnames == clf.classnames and loaded.synonyms == clf.synonyms
    assert loaded.logit_scale == clf.logit_scale and loaded.logit_bias is None
    assert loaded.provenance == clf.provenance
    assert [p.name for p in tmp_path.iterdir()] == ["pets.zsc"]  # no temporary left behind


def test_a_classifier_from_an_older_fingerprint_recipe_is_refused_with_a_rebuild_hint(tiny_clip, tmp_path):
    clf = ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo", cache=False)
    clf.check_encoder(tiny_clip)  # the current recipe passes
    assert clf.provenance["fingerprint"].startswith("open_clip:w2:")
    clf.provenance["fingerprint"] = "open_clip:3f2a9c1b7e4d5a6b8c9d0e1f"  # zsclip 0.1.0's form
    loaded = ZeroShotClassifier.load(clf.save(tmp_path / "old.zsc"))
    with pytest.raises(ClassifierFileError, match="built by an older zsclip .* rebuild it with `zsclip build`"):
        loaded.predict([torch.zeros(3, 32, 32)], encoder=tiny_clip)


def test_classifier_file_is_plain_safetensors_with_json_metadata(tiny_clip, tmp_path):
    from safetensors import safe_open

    path = ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo", cache=False).save(tmp_path / "c.zsc")
    with safe_open(str(path), framework="pt") as handle:
        assert list(handle.keys()) == ["weights"]
        metadata = json.loads(handle.metadata()["zsclip"])
    assert metadata["classnames"] == ["dog", "cat"] and metadata["format"] == "zsclip-classifier/1"


@pytest.mark.parametrize("content", [b"", b"\x80\x03pickle-ish bytes", b"{}"])
def test_loading_a_bad_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.zsc"
    path.write_bytes(content)
    with pytest.raises(ClassifierFileError, match="not a zsclip classifier file"):
        ZeroShotClassifier.load(path)


def test_loading_a_missing_file(tmp_path):
    with pytest.raises(ClassifierFileError, match="not found"):
        ZeroShotClassifier.load(tmp_path / "nope.zsc")
