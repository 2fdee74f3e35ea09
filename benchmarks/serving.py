"""What the serve benchmarks share: start a server on 127.0.0.1, load it from concurrent clients, measure it.

One client for every server (zsclip or a peer): ``clients`` threads, each with its own keep-alive
``httpx.Client``, sending ``per_client`` multipart requests of one image each, one after another.
Memory is the proportional set size (PSS) of the server's whole process tree, read from
``/proc/<pid>/smaps_rollup``, so a server made of several processes is counted whole and shared
pages once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_images() -> list[tuple[str, bytes]]:
    """The repository's example PNGs, (file name, bytes), in a fixed order."""
    return [(p.name, p.read_bytes()) for p in sorted(EXAMPLES.glob("*.png"))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: Sequence[str], ready_url: str, timeout_s: float = 180.0,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``args`` in its own session (so ``stop_server`` ends its children too) and wait until
    ``ready_url`` answers 200."""
    process = subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with status {process.returncode}: {' '.join(args)[:200]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(process)
    raise SystemExit(f"server did not start in {timeout_s:g} s: {' '.join(args)[:200]}")


def stop_server(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM to the server's session (its worker processes included), SIGKILL when it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    # a peer's helper processes may outlive their parent: end what is left of the session
    for pid in _session_pids(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _session_pids(session: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def _session_files(process: subprocess.Popen, name: str) -> list[str]:
    """The text of /proc/<pid>/<name> for every process of the server's session still there."""
    texts = []
    for pid in _session_pids(process.pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            texts.append(Path(f"/proc/{pid}/{name}").read_text())
    return texts


def pss_bytes(process: subprocess.Popen) -> int:
    """PSS summed over every process of the server's session (the server and the workers it started)."""
    return sum(int(line.split()[1]) * 1024 for text in _session_files(process, "smaps_rollup")
               for line in text.splitlines() if line.startswith("Pss:"))


def cpu_seconds(process: subprocess.Popen) -> float:
    """CPU time (user + system) used so far by every process of the server's session."""
    ticks = 0
    for text in _session_files(process, "stat"):
        fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


#: one request's multipart parts, given the image (name, bytes): (files, form data)
Request = Callable[[str, bytes], tuple[list, dict]]


@dataclass
class Load:
    """One load run: requests per second and each request's latency in seconds."""

    rate: float
    latencies: list[float]

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000)


def post_answers(url: str, images: list[tuple[str, bytes]], request: Request) -> list[dict]:
    """Each image's JSON answer, sent one at a time (warms the server up, builds its classifier)."""
    answers = []
    with httpx.Client(timeout=120) as session:
        for name, data in images:
            files, fields = request(name, data)
            response = session.post(url, files=files, data=fields)
            response.raise_for_status()
            answers.append(response.json())
    return answers


def load(url: str, images: list[tuple[str, bytes]], request: Request, clients: int, per_client: int) -> Load:
    """``clients`` concurrent clients, ``per_client`` requests each (one image per request)."""

    def client(index: int) -> list[float]:
        latencies = []
        with httpx.Client(timeout=60) as session:
            for number in range(per_client):
                name, data = images[(index + number) % len(images)]
                files, fields = request(name, data)
                started = time.perf_counter()
                response = session.post(url, files=files, data=fields)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for result in pool.map(client, range(clients)) for x in result]
    return Load(len(latencies) / (time.perf_counter() - started), latencies)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


__all__ = ["example_images", "free_port", "start_server", "stop_server", "pss_bytes", "cpu_seconds", "post_answers",
           "load", "Load", "load_average", "EXAMPLES"]
