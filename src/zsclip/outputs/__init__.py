"""The outputs layer: every file a run produces is written here, through one atomic-write helper
(``atomic``): classify rows (``rows``: CSV / JSONL / JSON and the terminal table), eval's JSON and
predictions.csv (``evalfiles``), the eval report (``report``). Classifier files are written by
``ZeroShotClassifier.save`` through the same helper. A new output format goes here.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".atomic": ["AtomicFile", "atomic_path", "write_atomically"],
    ".evalfiles": ["PredictionsCsv", "write_json"],
    ".rows": ["FORMATS", "RecordWriter", "ResultWriter", "RowSink", "as_record", "print_prediction", "print_record",
              "print_table"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .atomic import AtomicFile, atomic_path, write_atomically
    from .evalfiles import PredictionsCsv, write_json
    from .rows import (
        FORMATS,
        RecordWriter,
        ResultWriter,
        RowSink,
        as_record,
        print_prediction,
        print_record,
        print_table,
    )

__all__ = ["AtomicFile", "atomic_path", "write_atomically", "PredictionsCsv", "write_json", "FORMATS",
           "ResultWriter", "RecordWriter", "RowSink", "as_record", "print_table", "print_record", "print_prediction"]
