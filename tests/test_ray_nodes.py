"""`embed --ray` on a real multi-node Ray cluster started on this machine (issue 27): a head that only
coordinates and two worker nodes, each its own raylet. The encoding actors are placed on both
nodes; a worker node removed mid-job, and a driver killed mid-job and run again, both end with the
store an uninterrupted run writes (which equals the local pipeline's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # starts a three-raylet cluster

import zsclip  # noqa: E402
from zsclip import shapes  # noqa: E402
from zsclip.cluster import RaySettings, connect  # noqa: E402
from zsclip.cluster.nodes import add_node, ray_nodes  # noqa: E402
from zsclip.cluster.tasks import embed_on_ray  # noqa: E402
from zsclip.data.sources import expand_inputs  # noqa: E402
from zsclip.store import EmbeddingStore, embed  # noqa: E402
from zsclip.store.format import MANIFEST  # noqa: E402

OPTIONS = zsclip.RunOptions(precision="fp32", batch_size=8, workers=0)
IMAGES = 240


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # another module's local instance
        ray.shutdown()
    with ray_nodes(workers=2) as started:
        connect(RaySettings(address=started.address))
        yield started
        ray.shutdown()


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nodes")
    for index, spec in enumerate(shapes.sample_specs(IMAGES, seed=5)):
        shapes.render(spec, size=48).save(root / f"{index:03d}.png")
    return root


def rows(path: Path) -> dict[str, np.ndarray]:
    return {p: e for b in EmbeddingStore.open(path).batches() for p, e in zip(b.paths, b.embeddings, strict=True)}


@pytest.fixture(scope="module")
def uninterrupted(cluster, demo, folder, tmp_path_factory) -> tuple[dict, Counter]:
    path = tmp_path_factory.mktemp("whole") / "whole.zse"
    nodes: Counter = Counter()
    store = EmbeddingStore.create_or_open(path, demo, precision="fp32")
    report = embed_on_ray(store, list(expand_inputs([str(folder)])), demo, OPTIONS, RaySettings(), nodes=nodes)
    assert report.encoded == IMAGES
    return rows(path), nodes


def test_actors_on_two_nodes_give_the_local_store(cluster, demo, folder, uninterrupted, tmp_path):
    stored, nodes = uninterrupted
    workers = {node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) >= 1}
    assert len(nodes) == 2 and set(nodes) == workers, nodes  # both worker nodes encoded, the CPU-less head none
    assert sum(nodes.values()) == IMAGES
    local = EmbeddingStore.create_or_open(tmp_path / "local.zse", demo, precision="fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each 1-CPU worker node's actor runs (actor_threads): fp32 sums follow the threads
    try:
        embed(local, list(expand_inputs([str(folder)])), demo, OPTIONS)
    finally:
        torch.set_num_threads(threads)
    reference = rows(tmp_path / "local.zse")
    assert set(stored) == set(reference)
    assert max(float(np.abs(stored[p] - reference[p]).max()) for p in reference) == 0.0


def test_a_killed_driver_on_the_cluster_resumes_to_the_same_store(cluster, demo, folder, uninterrupted, tmp_path):
    path = tmp_path / "killed.zse"
    command = [sys.executable, "-m", "zsclip", "embed", str(folder), "-m", "demo", "--precision", "fp32", "-b", "8",
               "--commit-every", "16", "--ray", cluster.address, "-o", str(path)]
    env = {**os.environ, "ZSCLIP_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        manifest = path / MANIFEST
        if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # the driver only: the cluster (and its other jobs) stay up
    process.wait(timeout=30)
    committed = len(json.loads((path / MANIFEST).read_text())["shards"])
    assert 2 <= committed < IMAGES // 16, committed
    report = embed_on_ray(EmbeddingStore.open(path), list(expand_inputs([str(folder)])), demo, OPTIONS,
                          RaySettings(), commit_every=16)
    assert report.skipped == 16 * committed and report.encoded == IMAGES - 16 * committed
    resumed, (reference, _) = rows(path), uninterrupted
    assert set(resumed) == set(reference)
    assert max(float(np.abs(resumed[p] - reference[p]).max()) for p in reference) == 0.0


def test_a_worker_node_removed_mid_job_leaves_the_same_store(cluster, demo, folder, uninterrupted, tmp_path):
    """Last: it takes a node away (and adds a fresh one back for whatever runs after)."""
    nodes: Counter = Counter()
    done: list[int] = []
    removed: list = []

    def on_progress(count: int) -> None:
        done.append(count)
        if len(done) == 2:  # the job is under way: take away a node that has been encoding (the other
            busy = next(iter(nodes))  # node's actor may still be starting: which one comes first varies)
            removed.append(next(node for node in cluster.worker_nodes if node.node_id == busy))
            cluster.remove_node(removed[0])

    store = EmbeddingStore.create_or_open(tmp_path / "lost.zse", demo, precision="fp32")
    report = embed_on_ray(store, list(expand_inputs([str(folder)])), demo, OPTIONS, RaySettings(stall_timeout_s=60),
                          nodes=nodes, on_progress=on_progress)
    add_node(cluster, 1)
    assert len(done) >= 2 and report.encoded == IMAGES and report.failed == 0
    victim = removed[0]
    assert nodes[victim.node_id] > 0 and len(nodes) >= 2, nodes  # the removed node had encoded part of the job
    lost, (reference, _) = rows(tmp_path / "lost.zse"), uninterrupted
    assert set(lost) == set(reference)
    assert max(float(np.abs(lost[p] - reference[p]).max()) for p in reference) == 0.0


class FakeRay:
    """``ray.nodes()`` of a cluster described by its nodes' resources (no Ray started)."""

    def __init__(self, *resources: dict) -> None:
        self.resources = resources

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": r} for r in self.resources] + [{"Alive": False, "Resources": {"CPU": 64}}]


def test_the_actor_pool_is_sized_to_the_live_nodes_and_never_left_waiting():
    from zsclip.cluster.pipeline import pool_size
    from zsclip.errors import InputError, ZsclipWarning

    head, small, big = {"CPU": 0}, {"CPU": 2}, {"CPU": 32, "GPU": 2}
    assert pool_size(FakeRay(head, small, small), RaySettings(), gpus=False) == (2, 1)  # one per CPU node
    assert pool_size(FakeRay(small, big), RaySettings(), gpus=False) == (5, 3)  # and one per 8 CPUs
    assert pool_size(FakeRay(small, big), RaySettings(), gpus=True) == (2, 1)  # one per GPU
    with pytest.warns(ZsclipWarning, match="--ray-actors 9: the Ray cluster has 4 CPUs"):
        assert pool_size(FakeRay(head, small, small), RaySettings(actors=9), gpus=False) == (4, 2)
    with pytest.warns(ZsclipWarning, match="has 2 GPU"):
        assert pool_size(FakeRay(small, big), RaySettings(actors=3), gpus=True)[0] == 2
    with pytest.raises(InputError, match="no GPU"):
        pool_size(FakeRay(head, small), RaySettings(), gpus=True)
    with pytest.raises(InputError, match="no node with a CPU"):
        pool_size(FakeRay(head), RaySettings(), gpus=False)
