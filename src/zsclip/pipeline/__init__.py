"""The pipeline layer: the one way images become features (decode in worker processes, encode in
batches, an error per bad image, bounded memory). Tasks, the store, the service and the Ray runner
all read features through ``feature_batches`` / ``labelled_feature_batches``.
"""

from .decode import DecodedBatches, Item, ShardBatches
from .features import feature_batches, labelled_feature_batches

__all__ = ["feature_batches", "labelled_feature_batches", "DecodedBatches", "ShardBatches", "Item"]
