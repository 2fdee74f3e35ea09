"""Process-wide settings that must be in place before the libraries they concern are imported."""

from __future__ import annotations

import os


def fit_address_space_limit() -> None:
    """Under an address-space limit (``ulimit -v``, a batch scheduler's h_vmem) Arrow allocates with the
    system allocator: its default pool (mimalloc) reserves a gigabyte of address space the first time a
    Parquet file is opened, which left no room for torch's libraries when a store was read before a model
    loaded. Arrow reads the choice when it is first imported, hence here; without a limit, or where the user
    chose a pool (``ARROW_DEFAULT_MEMORY_POOL``), nothing changes."""
    import resource

    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


__all__ = ["fit_address_space_limit"]
