"""Encoding actors that outlive a job: one warm pool per driver, fed the decode stage's blocks.

An actor's start-up (a worker process, importing torch and open_clip, loading and fingerprinting
the weights) takes 4-15 s on a small machine: more than a few thousand images take to encode. Ray
Data's actor stage starts a fresh pool for every dataset, so a driver that runs several jobs (a
notebook, a script classifying folder after folder, the test suite) paid that start-up per job.
Here the pool is kept while its jobs run one after another: a job for the same actor class, model
spec and pool size takes the warm actors; anything else releases them first (one pool per driver,
so idle actors never hold more than one pool's memory or GPUs), and a pool left idle for
``RaySettings.keep_actors_s`` is released by a timer. Actors are owned by the driver's Ray job, so
they end with the driver in any case.

A command line's driver starts its pool before it loads its own model (``start``, with the
fingerprint still unknown): the actors load theirs meanwhile, and the job that takes the pool
checks their fingerprints against the driver's before it hands on a single result.

Dispatch: the decode stage's blocks (object references, never fetched to the driver) go to the
least-loaded actor, at most ``IN_FLIGHT_PER_ACTOR`` per actor (one encoding, one waiting, so no
actor idles between blocks), and results come back in input order. An actor that dies is restarted
by Ray and its calls retried (``max_restarts`` / ``max_task_retries``), on another node if its node
is gone.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from ..errors import InputError

#: Calls an actor holds at once: one it encodes and one queued behind it.
IN_FLIGHT_PER_ACTOR = 2
#: How long a reused pool may take to answer that it is alive before a fresh one replaces it.
READY_TIMEOUT_S = 30.0
#: how long a release waits for Ray to mark its killed actors dead
RELEASE_WAIT_S = 10.0


def dispatch(ray, actors: list, calls: Iterable[Callable[[Any], Any]],
             before_first: Callable[[], None] | None = None) -> Iterator[Any]:
    """Each call's result, in input order: a call (``actor -> object reference``) goes to the least-loaded of
    ``actors``, at most ``IN_FLIGHT_PER_ACTOR`` each, so no actor idles between calls and the driver holds a
    bounded number of results however many calls come. ``before_first`` runs once before the first result is
    fetched (the pool's fingerprint check: an actor answers its calls in order, so it is answered first)."""
    pending: deque = deque()
    load = [0] * len(actors)

    def oldest():
        nonlocal before_first
        if before_first is not None:
            before_first, check = None, before_first
            check()
        reference, index = pending.popleft()
        load[index] -= 1
        return ray.get(reference)

    for call in calls:
        while min(load) >= IN_FLIGHT_PER_ACTOR:
            yield oldest()
        index = load.index(min(load))
        pending.append((call(actors[index]), index))
        load[index] += 1
    while pending:
        yield oldest()


class EncoderPool:
    """``size`` actors of ``actor_class`` built from ``spec``, placed with ``options`` (Ray actor options)."""

    def __init__(self, ray, actor_class: type, spec: Any, size: int, options: dict, key: Hashable) -> None:
        self.ray, self.key, self.spec = ray, key, spec
        self.session = session(ray)
        remote = ray.remote(actor_class).options(**options)
        self.actors = [remote.remote(spec) for _ in range(size)]
        self.busy = False
        self.served = False  # a job ran on it: its actors are up (a fresh pool's may still be starting)
        self.fingerprint = spec.fingerprint  # checked by each actor when given; else by the first job
        self.generation = 0

    def ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        """Whether every actor answers within ``timeout`` (a reused pool's check that it still serves)."""
        try:
            self.ray.get([actor.ready.remote() for actor in self.actors], timeout=timeout)
        except Exception:  # dead past its restarts, its node gone for good, or not answering
            return False
        return True

    def encode(self, blocks: Iterable[tuple[Any, tuple[int, int] | None]], fingerprint: str | None = None
               ) -> Iterator[Any]:
        """Each (block reference, row slice or None)'s encoded result, in input order. ``fingerprint``:
        the driver's model, checked against every actor's before the first result when the pool was
        started without it (an actor runs its calls in order: the check is answered first)."""
        checks = [actor.ready.remote() for actor in self.actors] if self.fingerprint is None else []

        def check() -> None:
            if checks:
                self.check_fingerprints(self.ray.get(checks), fingerprint)

        calls = (lambda actor, block=block, rows=rows: actor.encode_block.remote(block, rows)
                 for block, rows in blocks)
        return dispatch(self.ray, self.actors, calls, before_first=check)

    def check_fingerprints(self, found: list, fingerprint: str | None) -> None:
        other = next((value for value in found if value != fingerprint), None)
        if other is not None:
            raise other_weights(self.spec.model, other, fingerprint)
        self.fingerprint = fingerprint

    def release(self) -> None:
        """End the actors (their model memory and GPUs go back to the cluster). Only in the Ray session that
        made them: once it is shut down its actors are gone with it, and a Ray call then (``ray.kill`` starts a
        new local instance when none is connected; a stale handle in a later session) must not happen -- from
        the idle timer, that new instance outlived ``ray.shutdown()`` and ended the whole process a minute later."""
        actors, self.actors = self.actors, []
        if not self.live():
            return
        for actor in actors:
            with contextlib.suppress(Exception):  # the actor already gone
                self.ray.kill(actor)
        self._await_deaths(actors)

    def _await_deaths(self, actors: list) -> None:
        """Return once Ray has marked the killed ``actors`` dead here (a call to each has failed), or after
        ``RELEASE_WAIT_S``. ``ray.kill`` is asynchronous: a ``ray.shutdown()`` right after it, while this process
        was still failing the calls in flight on those actors, ended the whole process ("Exiting because the
        Raylet IPC connection failed", seen after a job refused an actor's weights and the suite shut Ray down)."""
        probes = []
        for actor in actors:
            with contextlib.suppress(Exception):
                probes.append(actor.ready.remote())
        if probes:
            with contextlib.suppress(Exception):
                self.ray.wait(probes, num_returns=len(probes), timeout=RELEASE_WAIT_S)

    def live(self) -> bool:
        """Whether the Ray session this pool was made in is still the connected one."""
        return self.session is not None and session(self.ray) == self.session


def other_weights(model: str, found: str, expected: str | None) -> InputError:
    """The one line for an actor whose model is not the driver's (e.g. other files on its node)."""
    return InputError(f"the model loaded on a Ray worker ({model}, {found}) differs from the driver's ({expected}): "
                      "give every node the same weights (a checkpoint file or local-dir: on shared storage)")


_lock = threading.Lock()
_pool: EncoderPool | None = None


def session(ray) -> tuple[str, str] | None:
    """The connected Ray session (its GCS address and the driver's node, new for every local instance), or
    None when Ray is not connected. Never starts Ray: ``ray.get_runtime_context()`` would."""
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    return context.gcs_address, context.get_node_id()


def job_id(ray) -> tuple:
    """The driver's Ray job in its session: a pool from an earlier connection (since shut down) is never reused
    (job ids start again at 01000000 in every new local instance)."""
    return ray.get_runtime_context().get_job_id(), session(ray)


class lease:
    """``with lease(ray, actor_class, spec, size, options, keep_s) as pool``: the driver's warm pool when
    it fits this job (else a fresh one, the old one released); idle again when the job ends, and
    released ``keep_s`` seconds later unless another job took it (0: released at once). A job that ends
    in an error or is left early releases its pool at once."""

    def __init__(self, ray, actor_class: type, spec: Any, size: int, options: dict, keep_s: float) -> None:
        self.ray, self.keep_s, self.fingerprint = ray, keep_s, spec.fingerprint
        self.key = pool_key(ray, actor_class, spec, size, options)
        self.args = (actor_class, spec, size, options)
        self.own: EncoderPool | None = None

    def __enter__(self) -> EncoderPool:
        global _pool
        with _lock:
            pool = _pool
            if pool is not None and pool.busy:  # another job of this driver runs on it: this one gets its own
                self.own = self._fresh()
                return self.own
            fits = pool is not None and pool.key == self.key and pool.fingerprint in (None, self.fingerprint)
            if not fits:
                _pool = self._fresh(replacing=pool)
                return _pool
            pool.busy = True
            if not pool.served:  # started for this job (``start``): its actors may still be loading
                return pool
        if pool.ready():  # outside the lock: a restarting actor may take a while
            return pool
        with _lock:
            _pool = self._fresh(replacing=pool)
            return _pool

    def _fresh(self, replacing: EncoderPool | None = None) -> EncoderPool:
        """A new busy pool for this job (``replacing`` released first)."""
        if replacing is not None:
            replacing.release()
        pool = EncoderPool(self.ray, *self.args, key=self.key)
        pool.busy = True
        return pool

    def __exit__(self, error_type, *exc) -> None:
        global _pool
        with _lock:
            if self.own is not None:
                self.own.release()
                return
            pool = _pool
            if pool is None:
                return
            pool.busy = False
            pool.served = True
            pool.generation += 1
            if self.keep_s <= 0 or error_type is not None:  # a job that failed, stalled or was left early may
                pool.release()  # still have calls in flight on these actors: nobody takes them over
                _pool = None
                return
            generation = pool.generation
        _release_later(pool, generation, self.keep_s)


def pool_key(ray, actor_class: type, spec: Any, size: int, options: dict) -> Hashable:
    """What a job's pool must match to be reused: the actor class, the spec (but for the fingerprint,
    checked on its own), the size, the placement and the Ray job."""
    return (actor_class.__module__, actor_class.__qualname__, replace(spec, fingerprint=None), size,
            tuple(sorted(options.items())), job_id(ray))


def start(ray, actor_class: type, spec: Any, size: int, options: dict, keep_s: float) -> None:
    """Start the driver's pool for a job about to run (``spec.fingerprint`` None: the driver's model is
    still loading), unless one that fits is up; released ``keep_s`` seconds after a job last used it,
    or after ``keep_s`` (at least a minute) if no job takes it."""
    global _pool
    key = pool_key(ray, actor_class, spec, size, options)
    with _lock:
        if _pool is not None and (_pool.busy or _pool.key == key):
            return
        if _pool is not None:
            _pool.release()
        pool = _pool = EncoderPool(ray, actor_class, spec, size, options, key)
        generation = pool.generation
    _release_later(pool, generation, max(keep_s, 60.0))


def _release_later(pool: EncoderPool, generation: int, seconds: float) -> None:
    timer = threading.Timer(seconds, _release_if_idle, args=(pool, generation))
    timer.daemon = True
    timer.start()


def _release_if_idle(pool: EncoderPool, generation: int) -> None:
    global _pool
    with _lock:
        if _pool is pool and not pool.busy and pool.generation == generation:
            pool.release()
            _pool = None


def release_pool() -> None:
    """Release the driver's warm pool now (e.g. before ``ray.shutdown()`` or to free GPUs at once)."""
    global _pool
    with _lock:
        if _pool is not None and not _pool.busy:
            _pool.release()
            _pool = None


__all__ = ["EncoderPool", "IN_FLIGHT_PER_ACTOR", "lease", "other_weights", "pool_key", "release_pool", "start"]
