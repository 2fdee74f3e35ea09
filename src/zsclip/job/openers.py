"""How each kind of input is recognised and opened as a ``FeatureSource``; registry.py lists them in the order
they are tried and ``registry.open_source`` chooses (it is above this module, which never imports it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..data.collections import open_collection
from ..data.sources import expand_inputs, unique_sources
from ..errors import InputError
from .sources import FeatureSource, ImageFiles, LabelledData, MediaFiles, StoreSource, has_videos, is_shards, is_store


def _single(inputs: Sequence) -> str | None:
    return os.fspath(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], (str, os.PathLike)) else None


def matches_store(inputs: Sequence, labelled: bool) -> bool:
    single = _single(inputs)
    return single is not None and is_store(single)


def open_store(inputs: Sequence, *, labelled: bool, classes=None, dataset=None, model=None) -> FeatureSource:
    from ..store.opening import open_store as open_stored

    source = StoreSource(open_stored(_single(inputs), model=model))
    if classes is not None:
        if not (labelled and source.multi_label):
            raise InputError("a store holds its class names (from `zsclip embed --labelled`): leave out --labels-file")
        # a multi-label store read with the label list given, as its manifest would be (label sets mapped by name;
        # a stored label not in the list makes its row an error row): the metrics are the images' own
        return source.with_classes([names[0] for names in classes])
    if labelled and not source.labelled:
        raise InputError(f"store {_single(inputs)} has no labels: embed a labelled collection (`zsclip embed DATA "
                         "--labelled`) to evaluate from it")
    return source if labelled else source.unlabelled()


def matches_shards(inputs: Sequence, labelled: bool) -> bool:
    single = _single(inputs)
    return single is not None and is_shards(single)


def open_shards(inputs: Sequence, *, labelled: bool, classes=None, dataset=None, model=None) -> FeatureSource:
    from ..data.shards import webdataset

    if labelled:
        return open_labelled(inputs, labelled=True, classes=classes, dataset=dataset)
    if classes is not None:
        raise InputError("--labels-file names the classes of labelled shards; classify takes --labels")
    return LabelledData(webdataset(_single(inputs), []), labelled=False)


def matches_hf(inputs: Sequence, labelled: bool) -> bool:
    from ..data.hf import hf_layout

    single = _single(inputs)
    layout = hf_layout(single) if single is not None else None
    # split folders (DIR/train, DIR/test) are a dataset to evaluate; to classify they are folders of images
    return layout is not None and (labelled or layout != "splits")


def open_hf(inputs: Sequence, *, labelled: bool, classes=None, dataset=None, model=None) -> FeatureSource:
    """A Hugging Face split: Parquet, save_to_disk Arrow, or imagefolder with metadata (``zsclip.data.hf``)."""
    from ..data.collections import LabelledCollection
    from ..data.hf import hf_layout, one_split
    from ..data.hf import open_hf as read
    from .sources import HFTableSource

    if hf_layout(_single(inputs)) == "splits":  # a folder of one split folder: that split, as any data it holds
        only = one_split(_single(inputs))
        if hf_layout(only) is None:  # class folders (ImageNet's recognised as in any tree)
            return open_labelled([only], labelled=labelled, classes=classes, dataset=dataset)
        inputs = [only]
    names = [synonyms[0] for synonyms in classes] if classes else None
    opened = read(_single(inputs), names, labelled=labelled)
    if isinstance(opened, LabelledCollection):
        if labelled and not opened.classnames:
            raise InputError(f"{_single(inputs)}: no labels (a label column in the metadata, or class folders)")
        source = (MediaFiles(opened.items, opened.classnames if labelled else None) if has_videos(opened.items)
                  else LabelledData(opened, labelled=labelled))
    else:
        source = HFTableSource(opened, labelled)
        if labelled and not source.labelled:
            raise InputError(f"{_single(inputs)}: no ClassLabel column (class names) to evaluate against; give "
                             "--labels-file for an integer label column")
    source.build_classes = classes
    return source


def matches_label_studio(inputs: Sequence, labelled: bool) -> bool:
    from ..data.exports import is_label_studio_export

    single = _single(inputs)
    return labelled and single is not None and is_label_studio_export(single)


def open_label_studio(inputs: Sequence, *, labelled: bool, classes=None, dataset=None, model=None) -> FeatureSource:
    """A Label Studio JSON export: its annotated tasks (``zsclip.data.exports``)."""
    from ..data.exports import label_studio_export

    collection, unlabelled = label_studio_export(_single(inputs), [s[0] for s in classes] if classes else None)
    if unlabelled:
        print(f"zsclip: note: {unlabelled} tasks of {_single(inputs)} have no annotation and are left out",
              file=sys.stderr)
    return _labelled_source(collection, classes)


def matches_fiftyone(inputs: Sequence, labelled: bool) -> bool:
    from ..data.exports import is_fiftyone_labels

    single = _single(inputs)
    return labelled and single is not None and is_fiftyone_labels(single)


def open_fiftyone(inputs: Sequence, *, labelled: bool, classes=None, dataset=None, model=None) -> FeatureSource:
    """A FiftyOne image classification dataset (folder or labels.json)."""
    from ..data.exports import fiftyone_labels

    return _labelled_source(fiftyone_labels(_single(inputs), [s[0] for s in classes] if classes else None), classes)


def _labelled_source(collection, classes) -> FeatureSource:
    source = MediaFiles(collection.items, collection.classnames) if has_videos(collection.items) and \
        not collection.multi_label else LabelledData(collection)
    source.build_classes = classes
    return source


def matches_labelled(inputs: Sequence, labelled: bool) -> bool:
    return labelled


def open_labelled(inputs: Sequence, *, labelled: bool, classes=None, dataset=None, model=None) -> FeatureSource:
    single = _single(inputs)
    if single is None:
        raise InputError("labelled data is one class-per-folder tree, a .csv/.jsonl manifest or WebDataset shards")
    collection, build_classes = open_collection(single, classes, dataset)
    if not collection.shards and has_videos(collection.items):
        source = MediaFiles(collection.items, collection.classnames)
    else:
        source = LabelledData(collection)
    source.build_classes = build_classes  # what to build classifiers from: given synonyms, "imagenet1k", or None
    return source


def matches_images(inputs: Sequence, labelled: bool) -> bool:
    return not labelled


#: A manifest's extensions: a list of images with labels, read by eval and ``embed --labelled``.
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def open_images(inputs: Sequence, *, labelled: bool, classes=None, dataset=None, model=None) -> FeatureSource:
    for item in inputs:
        if isinstance(item, (str, os.PathLike)) and os.path.splitext(os.fspath(item))[1].lower() in MANIFEST_SUFFIXES \
                and os.path.isfile(item):
            name = os.fspath(item)
            raise InputError(f"{name} is a manifest (images with their labels), not an image: evaluate against its "
                             f"labels with `zsclip eval --data {name}`, or store its images with their labels with "
                             f"`zsclip embed {name} --labelled -o STORE` and classify or search the store")
    sources, duplicates = unique_sources(source for source in _expand(inputs))
    if not sources:
        raise InputError("no inputs to classify: give image files, folders, glob patterns, URLs or -")
    source = MediaFiles(sources) if has_videos(sources) else ImageFiles(sources)
    source.duplicates = duplicates
    return source


def _expand(inputs: Sequence):
    from ..data.sources import Source

    for item in inputs:
        if isinstance(item, Source):
            yield item
        elif item is sys.stdin or item == "-":
            yield from expand_inputs(["-"], stdin=sys.stdin)
        else:
            yield from expand_inputs([os.fspath(item)])


__all__ = ["matches_store", "open_store", "matches_shards", "open_shards", "matches_hf", "open_hf", "matches_labelled",
           "open_labelled", "matches_images", "open_images"]
