"""Starting a local Ray instance: refused at once, in one line, where it cannot start."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("ray")

from zsclip.cluster.session import OBJECT_STORE_SHARE, RAY_PROCESS_HEADROOM, _system_memory  # noqa: E402

SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), resource.RLIM_INFINITY))
from zsclip.cluster.session import address_space_shortfall
print(address_space_shortfall())
"""


def shortfall_under(limit: int) -> str:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(limit)], capture_output=True, text=True, timeout=120,
                            env={"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_an_address_space_limit_below_the_object_store_is_named_before_ray_starts():
    """Under ``ulimit -v`` smaller than Ray's object store, ``ray.init`` waited 30 s for a raylet that
    never came up; the limit, what Ray maps and the way out are named instead, before Ray starts."""
    needed = int(OBJECT_STORE_SHARE * _system_memory()) + RAY_PROCESS_HEADROOM
    below = shortfall_under(needed - (512 << 20))
    assert below.startswith("it cannot start under this process's address-space limit") and "ulimit -v" in below
    assert "join a running cluster (--ray ADDRESS)" in below
    assert shortfall_under(needed + (512 << 20)) == "None"


@pytest.mark.parametrize("field", ["keep_actors_s", "stall_timeout_s"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, "60"])
def test_ray_settings_refuse_seconds_that_are_not_a_finite_number(field, value):
    from zsclip.cluster import RaySettings
    from zsclip.errors import InputError

    with pytest.raises(InputError, match=rf"^RaySettings {field}=.*: give a finite number of seconds"):
        RaySettings(**{field: value})
    assert RaySettings(**{field: 5}).__dict__[field] == 5  # a plain number is taken as it is


IDLE_POOL_AFTER_SHUTDOWN = """
import sys, time
from pathlib import Path
import ray, zsclip
from zsclip.cluster import RaySettings, actors
examples = Path(sys.argv[1])
settings = RaySettings(num_cpus=2, keep_actors_s=1.0)
rows = list(zsclip.classify(str(examples), labels=["red triangle", "blue ring"], model="demo",
                            options=zsclip.RunOptions(precision="fp32", workers=0), ray=settings))
assert rows and actors._pool is not None  # the warm pool, with its idle timer running
ray.shutdown()
time.sleep(4)  # the timer fires in here
print(ray.is_initialized(), actors._pool is None)
"""


@pytest.mark.slow
def test_a_warm_pool_released_after_ray_shutdown_starts_no_new_ray():
    """The idle timer of a warm actor pool fired after ``ray.shutdown()`` and called ``ray.kill``, which starts
    a new local Ray when none is connected; that stray instance lost its GCS and ended the whole process a
    minute later with status 1 and no word (it ended the test suite twice). A pool now calls Ray only in the
    session that made it."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    result = subprocess.run([sys.executable, "-c", IDLE_POOL_AFTER_SHUTDOWN, str(examples)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True"], result.stdout
