"""Connecting to Ray: ``--ray auto`` (RAY_ADDRESS, else a local instance), or an explicit address."""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class RaySettings:
    """How a run uses Ray.

    Attributes:
        address: "auto" (RAY_ADDRESS if set, else start a local instance), or a cluster address
            such as ``ray://head:10001``.
        actors: encoding actors (each loads the model once); None = one per GPU, else one per 8 CPUs
            of each node (more than the cluster can host are sized down, see ``pipeline.pool_size``).
        num_cpus: for a local instance only: how many CPUs it may use (None = all).
        stall_timeout_s: a job that delivers no batch for this long is stopped and reported (a cluster
            that cannot place its tasks or actors would otherwise wait forever).
        keep_actors_s: how long the encoding actors stay up after a job, for the driver's next job to
            take them warm (see ``actors.py``); 0 ends them with the job. They end with the driver.
    """

    address: str = "auto"
    actors: int | None = None
    num_cpus: int | None = None
    stall_timeout_s: float = 600.0
    keep_actors_s: float = 120.0

    def __post_init__(self) -> None:
        """Seconds that are not a number (NaN, inf, negative) are refused in one line, here: a timer or a
        queue given one fails later on a thread of its own (an idle pool then kept for the driver's life)."""
        for name, low in (("stall_timeout_s", 1e-3), ("keep_actors_s", 0.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
                raise InputError(f"RaySettings {name}={value!r}: give a finite number of seconds, at least {low:g}")


def worker_pool_config(cpus: int) -> dict:
    """Ray's system config for a node of ``cpus`` CPUs running this pipeline: Ray keeps at most one
    idle worker process per CPU and kills the rest after a second idle; the encoding actors' processes
    count too, so decode workers that wait a second behind a busy encoder were killed and restarted
    (each restart imports torch again: seconds of CPU taken from the encoder, a batch per restart on
    1-CPU nodes). Room for twice as many keeps them."""
    return {"num_workers_soft_limit": 2 * cpus}


#: The share of the machine's memory a local Ray instance maps as its object store (Ray's default).
OBJECT_STORE_SHARE = 0.3
#: Address space a Ray process needs beside the object store it maps.
RAY_PROCESS_HEADROOM = 1 << 30


def address_space_shortfall() -> str | None:
    """Why a local Ray instance cannot start under this process's address-space limit (``ulimit -v``,
    a scheduler's h_vmem), or None. Every Ray process inherits the limit and maps the object store,
    so a raylet that cannot map it never comes up, and ``ray.init`` waits 30 s for it before failing."""
    try:
        import resource
    except ImportError:  # no such limits here (Windows)
        return None
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return None
    store = int(OBJECT_STORE_SHARE * _system_memory())
    if limit >= store + RAY_PROCESS_HEADROOM:
        return None
    return (f"it cannot start under this process's address-space limit ({limit / 2**30:.1f} GiB, ulimit -v): its "
            f"object store maps {store / 2**30:.1f} GiB in every Ray process; raise the limit to "
            f"{(store + RAY_PROCESS_HEADROOM) / 2**30:.0f} GiB or more, or join a running cluster (--ray ADDRESS)")


def _system_memory() -> int:
    """The memory Ray sizes its object store from (a container's cgroup limit where there is one)."""
    try:
        from ray._private.utils import get_system_memory
    except ImportError:  # another Ray version's layout: the machine's memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(get_system_memory())


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def connect(settings: RaySettings):
    """The ``ray`` module, initialised: joined to the cluster the settings name, or a local one."""
    if not ray_available():
        raise InputError('--ray needs the ray extra: pip install "zsclip[ray]"')
    import ray

    if ray.is_initialized():
        return ray
    address = settings.address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or None
    kwargs = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False,
              "logging_level": "ERROR"}
    if address is None:
        shortfall = address_space_shortfall()
        if shortfall:
            raise InputError(f"cannot reach a local Ray instance: {shortfall}")
        kwargs["num_cpus"] = settings.num_cpus
        kwargs["_system_config"] = worker_pool_config(settings.num_cpus or os.cpu_count() or 1)
        kwargs["runtime_env"] = {"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}}
    try:
        ray.init(address=address, **kwargs)
    except Exception as error:  # Ray raises plain Exceptions too (a raylet that did not start)
        where = f"Ray at {address}" if address else "a local Ray instance"
        reason = " ".join(str(error).split())[:300]
        raise InputError(f"cannot reach {where}: {reason}") from None
    import logging
    import warnings

    with warnings.catch_warnings():  # DataContext's own deprecation notes are Ray's business, not the user's
        warnings.simplefilter("ignore")
        context = ray.data.DataContext.get_current()  # importing ray.data configures its loggers: quiet them after
        context.execution_options.preserve_order = True  # results in input order, as the local pipeline gives them
        context.enable_progress_bars = False
    for name in ("ray", "ray.data"):  # our own lines are what users read; Ray's INFO lines go to its log files
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)
    return ray


class _Done:
    """Marks the end (or the failure) of a watched iterator."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def watched(batches: Iterator, seconds: float, what: str = "the Ray job") -> Iterator:
    """``batches``, pulled on a helper thread; when none arrives for ``seconds`` the job is reported
    as stalled (InputError) instead of being waited on forever. Memory: at most two batches ahead."""
    import queue
    import threading

    pending: queue.Queue = queue.Queue(maxsize=2)

    def pull() -> None:
        try:
            for batch in batches:
                pending.put(batch)
            pending.put(_Done())
        except BaseException as error:  # handed to the consumer, raised there
            pending.put(_Done(error))

    threading.Thread(target=pull, name="zsclip-ray-watch", daemon=True).start()
    while True:
        try:
            item = pending.get(timeout=seconds)
        except queue.Empty:
            raise InputError(f"{what} made no progress for {seconds:g} s: the cluster may lack the resources its "
                             "tasks or actors ask for (see `ray status`); fewer --ray-actors, or more nodes") from None
        if isinstance(item, _Done):
            if item.error is not None:
                raise item.error
            return
        yield item


__all__ = ["RaySettings", "address_space_shortfall", "connect", "ray_available", "watched", "worker_pool_config"]
