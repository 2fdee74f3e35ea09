"""The data layer: what the user names becomes images, robustly.

- ``sources``: files, folders, globs, URLs and stdin lists -> ``Source`` items (a bad one carries its error);
- ``collections``: labelled collections (class folders, CSV/JSONL manifests) and ``open_collection``;
- ``shards``: WebDataset tar shards, streamed;
- ``images``: decoding any of them into upright RGB PIL images, with pixel limits and draft decoding;
- ``urls``: the bounded http(s) download.

A new kind of input goes here, as a module that yields ``Source`` / ``LabelledSource`` items or
samples; nothing in this layer knows about models.
"""

from .collections import LabelledCollection, LabelledSource, image_folder, manifest, open_collection
from .images import MAX_PIXELS, decode_bytes, load_image, to_rgb
from .shards import webdataset
from .sources import IMAGE_EXTENSIONS, Source, expand_inputs
from .urls import is_url

__all__ = ["LabelledCollection", "LabelledSource", "image_folder", "manifest", "open_collection", "webdataset",
           "MAX_PIXELS", "decode_bytes", "load_image", "to_rgb", "IMAGE_EXTENSIONS", "Source", "expand_inputs",
           "is_url"]
