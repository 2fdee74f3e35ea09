"""The pipeline layer: the one way images become features (decode in worker processes, encode in
batches, an error per bad image, bounded memory). Tasks, the store, the service and the Ray runner
all read features through ``feature_batches`` / ``labelled_feature_batches``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".decode": ["DecodedBatches", "Item", "ShardBatches"],
    ".features": ["feature_batches", "labelled_feature_batches"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .decode import DecodedBatches, Item, ShardBatches
    from .features import feature_batches, labelled_feature_batches

__all__ = ["feature_batches", "labelled_feature_batches", "DecodedBatches", "ShardBatches", "Item"]
