"""A classifier cache entry is used only when it holds what was asked (issue 32 item 4): its file name is a
digest of (model, classes, prompts, precision), but a copied or swapped file, or a cache shared between users,
can hold another label set, other prompts or another model. Such an entry is ignored with a note and rebuilt,
on the path that loads the model (images) and on the path that answers a store without one."""

from __future__ import annotations

import csv
import shutil

import pytest
from click.testing import CliRunner

import zsclip
from zsclip import shapes
from zsclip.cli import main

LABELS = "red circle,blue square,green star,yellow ring"
OTHER = "a dog,a cat,a car"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Eight demo-world images in class folders, and a store of them embedded by the demo model."""
    root = tmp_path_factory.mktemp("cache_entries")
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "ring")):
        folder = root / "photos" / f"{colour} {shape}"
        folder.mkdir(parents=True)
        for index, spec in enumerate(shapes.sample_specs(2, seed=len(colour) + 5 * len(shape))):
            spec = shapes.ShapeSpec(colour, shape, spec.background, spec.radius, spec.centre, spec.rotation)
            shapes.render(spec).save(folder / f"{index}.png")
    store = str(root / "photos.zse")
    result = CliRunner().invoke(main, ["embed", str(root / "photos"), "-o", store, "-m", "demo", "-j", "0",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return str(root / "photos"), store


def _classify(data: str, labels: str, out, *extra: str):
    result = CliRunner().invoke(main, ["classify", data, "--labels", labels, "-t", "photo", "-m", "demo", "-j", "0",
                                       "--device", "cpu", "-k", "2", "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        return list(csv.DictReader(handle)), result.stderr


def _entries(cache) -> set:
    return set(cache.glob("*.zsc"))


def _swap(first, second) -> None:
    parked = first.with_suffix(".parked")
    shutil.move(first, parked)
    shutil.move(second, first)
    shutil.move(parked, second)


@pytest.mark.parametrize("on", [pytest.param("images", marks=pytest.mark.slow), "store"])
def test_swapped_cache_entries_are_ignored_and_rebuilt(photos, on, tmp_path, isolated_cache):
    data = photos[0] if on == "images" else photos[1]
    reference, _ = _classify(data, LABELS, tmp_path / "reference.csv")
    ours = _entries(isolated_cache)
    assert len(ours) == 1
    _classify(data, OTHER, tmp_path / "other.csv")
    theirs = _entries(isolated_cache) - ours
    assert len(theirs) == 1
    ours, theirs = ours.pop(), theirs.pop()
    _swap(ours, theirs)  # each label set's file now holds the other's classifier

    again, stderr = _classify(data, LABELS, tmp_path / "again.csv")
    assert again == reference  # the asked labels and their own scores, not "a dog" / "a cat"
    assert {row["label"] for row in again} <= set(LABELS.split(","))
    assert "ignoring classifier cache entry" in stderr and "other classes" in stderr
    # the entry was rebuilt: the next run takes it without a note
    assert zsclip.ZeroShotClassifier.load(ours).classnames == LABELS.split(",")
    other_again, stderr = _classify(data, OTHER, tmp_path / "other_again.csv")
    assert {row["label"] for row in other_again} <= set(OTHER.split(","))
    assert "ignoring classifier cache entry" in stderr


@pytest.mark.slow
def test_an_entry_of_other_templates_is_ignored_on_a_store(photos, tmp_path, isolated_cache):
    """Same labels, so a wrong entry would print the right names with another prompt set's scores."""
    store = photos[1]
    reference, _ = _classify(store, LABELS, tmp_path / "reference.csv")
    ours = _entries(isolated_cache).pop()
    _classify(store, LABELS, tmp_path / "seven.csv", "-t", "openai-imagenet-7")
    theirs = (_entries(isolated_cache) - {ours}).pop()
    shutil.copyfile(theirs, ours)  # a copied file under our name
    again, stderr = _classify(store, LABELS, tmp_path / "again.csv")
    assert again == reference
    assert "other prompt templates" in stderr


def test_build_ignores_an_entry_of_another_model_width_or_precision(tiny_clip, tiny_clip_other_dir, isolated_cache):
    """The Python entry: what ``build`` returns is what was asked, whatever file sits under the key's name."""
    import numpy as np

    classes = ["a cat", "a dog"]
    ours = zsclip.ZeroShotClassifier.build(tiny_clip, classes, "photo")
    entry = _entries(isolated_cache).pop()
    other_model = zsclip.load_model(tiny_clip_other_dir, device="cpu")
    other = zsclip.ZeroShotClassifier.build(other_model, classes, "photo", cache=False)
    tampered = [other,  # another model (fingerprint)
                zsclip.ZeroShotClassifier(ours.weights, ours.classnames, ours.synonyms, ours.logit_scale, None,
                                          {**ours.provenance, "precision": "bf16"}),
                zsclip.ZeroShotClassifier(np.ones((3, 2), dtype=np.float32) / np.sqrt(3), ours.classnames,
                                          ours.synonyms, ours.logit_scale, None, dict(ours.provenance))]
    for wrong, why in zip(tampered, ("built for model", "precision", "-d features"), strict=True):
        wrong.save(entry)
        with pytest.warns(zsclip.ZsclipWarning, match=why):
            again = zsclip.ZeroShotClassifier.build(tiny_clip, classes, "photo")
        assert bool((again.weights == ours.weights).all())
        assert zsclip.ZeroShotClassifier.load(entry).provenance == again.provenance  # rebuilt in place
        if why == "-d features":  # and the no-model lookup of a store's width ignores it too
            wrong.save(entry)
            with pytest.warns(zsclip.ZsclipWarning, match=why):
                assert zsclip.ZeroShotClassifier.cached(tiny_clip.fingerprint, classes, "photo", device="cpu",
                                                        embed_dim=tiny_clip.embed_dim) is None
