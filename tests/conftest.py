"""Shared fixtures: tiny models in real on-disk formats, and an isolated classifier cache."""

from __future__ import annotations

import pytest
import torch

import zsclip
from zsclip.testing.tiny_open_clip import TINY_BIDIRECTIONAL_CFG, TINY_CLIP_CFG, save_local_dir

torch.set_num_threads(2)


#: Fixtures that start a real server: every test using one is an end-to-end case (``-m "not slow"`` skips it).
SLOW_FIXTURES = {"server", "guarded"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
