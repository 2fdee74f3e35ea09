"""The ``format`` each kind of classifier file declares in its metadata, in one light module: telling
which head a file holds (``zsclip.heads.files``) then imports no torch, only the reader of that kind."""

#: a flat zero-shot classifier (or a linear probe: the same layout)
FLAT = "zsclip-classifier/1"
#: a flat classifier plus a cache of few-shot features (zsclip adapt)
TIP_ADAPTER = FLAT + "+tip-adapter"
#: a label tree's node classifier and its tree
TREE = "zsclip-tree-classifier/1"
#: labels each over its own threshold
MULTILABEL = "zsclip-multilabel/1"

__all__ = ["FLAT", "TIP_ADAPTER", "TREE", "MULTILABEL"]
