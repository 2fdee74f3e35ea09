"""A real multi-node Ray cluster on one machine, for the multi-node test and benchmark.

Each node is its own raylet with its own resources and worker processes (``ray.cluster_utils``),
so actors are placed on nodes, a node can be removed mid-job and its work must move elsewhere,
exactly as across machines. The nodes share this machine's cores unless ``pin`` confines each
worker node (its raylet and every worker it starts) to cores of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

#: Each node's object store (Ray's test clusters default to 150 MiB: a few ViT batches of pixels).
OBJECT_STORE = 400 * 1024**2


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


@contextmanager
def ray_nodes(workers: int, cpus: int = 1, pin: bool = False) -> Iterator:
    """A ``ray.cluster_utils.Cluster``: a head with no CPUs (the driver's node, as on clusters whose
    head only coordinates) and ``workers`` worker nodes of ``cpus`` CPUs each. ``pin``: worker node
    i runs on core i (mod the cores this process may use), so a node's throughput is its core's."""
    from ray.cluster_utils import Cluster

    from .session import worker_pool_config

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "_system_config": worker_pool_config(cpus)})
    mine = _cores()
    try:
        for index in range(workers):
            add_node(cluster, cpus, mine[index % len(mine)] if pin else None)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        import ray

        ray.shutdown()  # a driver still connected to a node stops the cluster from removing it
        cluster.shutdown()


def add_node(cluster, cpus: int, core: int | None = None):
    """A worker node of ``cpus`` CPUs joined to ``cluster`` (its processes on ``core`` when given:
    they inherit the affinity of this process at the moment the raylet is started)."""
    if core is None:
        return cluster.add_node(num_cpus=cpus, object_store_memory=OBJECT_STORE)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        return cluster.add_node(num_cpus=cpus, object_store_memory=OBJECT_STORE)
    finally:
        os.sched_setaffinity(0, before)


__all__ = ["add_node", "ray_nodes"]
