"""Shared fixtures: tiny models in real on-disk formats, and an isolated classifier cache."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import zsclip
from zsclip.testing.tiny_open_clip import TINY_BIDIRECTIONAL_CFG, TINY_CLIP_CFG, save_local_dir

# Under pytest-xdist (``-n 2``) each worker takes one core's worth of torch threads: two workers of two threads
# each on two cores would spin against each other in OpenMP.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


#: Fixtures that start a real server: every test using one is an end-to-end case (``-m "not slow"`` skips it).
SLOW_FIXTURES = {"server", "guarded"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.xdist_group(worker_group(item)))


def worker_group(item) -> str:
    """Which tests share an xdist worker (``-n 2 --dist loadgroup``, the README's test command): every test that
    starts a local Ray (its module or its name says ray) on one worker, one after another -- two local Rays on
    two cores starve each other, and some tests count Ray's processes; every other module on one worker as a
    whole, so a module's fixtures (a real server, a corpus) start once."""
    module = item.nodeid.split("::")[0]
    words = set(re.split(r"[_\[\]\-.]", f"{Path(module).stem}_{item.name}"))
    return "ray" if "ray" in words else module


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> str:
    return save_local_dir(tmp_path_factory.mktemp("tiny_clip"), TINY_CLIP_CFG, seed=0)


@pytest.fixture(scope="session")
def tiny_clip_other_dir(tmp_path_factory) -> str:
    return save_local_dir(tmp_path_factory.mktemp("tiny_clip_other"), TINY_CLIP_CFG, seed=1)


@pytest.fixture(scope="session")
def tiny_bidir_dir(tmp_path_factory) -> str:
    return save_local_dir(tmp_path_factory.mktemp("tiny_bidir"), TINY_BIDIRECTIONAL_CFG, seed=0)


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir) -> zsclip.Encoder:
    return zsclip.load_model(tiny_clip_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_bidir(tiny_bidir_dir) -> zsclip.Encoder:
    return zsclip.load_model(tiny_bidir_dir, device="cpu")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty classifier cache (never the user's)."""
    cache = tmp_path / "zsclip-cache"
    monkeypatch.setenv("ZSCLIP_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def ray_ends_with_the_module():
    """For modules that run jobs with ``--ray auto`` in this process: the warm actor pool released and the local
    Ray shut down when the module ends, so later modules do not run beside an idle Ray."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is None:
        return
    from zsclip.cluster.actors import release_pool

    release_pool()
    if ray.is_initialized():
        ray.shutdown()
