"""The job: source x head x task x sink x runner.

    from zsclip.job import HeadOptions, open_source, plan
    job = plan(open_source("photos.zse"), HeadOptions(labels=["forklift", "pallet"]))
    for batch in job.features():            # in this process, or on Ray (plan(..., ray="auto"))
        answers = job.head.answer(batch.features)

Sources (``sources.py``, opened by ``openers.py``), heads (``zsclip.heads``, built by ``heads.py``)
and the runners are registered in ``registry.py``. Tasks (``zsclip.tasks``) consume a job's answers;
sinks (``zsclip.outputs``) write them. The CLI, the Python API and the service only build jobs.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".heads": ["HeadOptions", "build_head"],
    ".registry": ["open_source"],
    ".plan": ["Job", "features", "plan", "resolve_encoder"],
    ".sources": ["FeatureBatch", "FeatureSource", "HFTableSource", "ImageFiles", "LabelledData", "MediaFiles",
                 "StoreSource", "is_store"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .heads import HeadOptions, build_head
    from .plan import Job, features, plan, resolve_encoder
    from .registry import open_source
    from .sources import (
        FeatureBatch,
        FeatureSource,
        HFTableSource,
        ImageFiles,
        LabelledData,
        MediaFiles,
        StoreSource,
        is_store,
    )

__all__ = ["HeadOptions", "build_head", "open_source", "Job", "features", "plan", "resolve_encoder", "FeatureBatch",
           "FeatureSource", "ImageFiles", "LabelledData", "MediaFiles", "HFTableSource", "StoreSource", "is_store"]
