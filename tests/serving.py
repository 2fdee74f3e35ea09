"""`zsclip serve` started for a test: a real server process on 127.0.0.1, a free port, ready when /readyz
answers 200 (the model loaded), stopped with SIGTERM as a supervisor would. One copy for every test file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_serve(*args: str, env: dict[str, str] | None = None, timeout: float = 90, cwd=None, preexec_fn=None,
                stdout=subprocess.PIPE) -> tuple[subprocess.Popen, str]:
    """`zsclip serve --model demo --templates photo ARGS` on a free port: (the process, its base URL).
    ``env``: added to this process's environment (the classifier cache defaults to /tmp/zsclip-serve-test)."""
    port = free_port()
    environment = {**os.environ, "ZSCLIP_CACHE_DIR": os.environ.get("ZSCLIP_CACHE_DIR", "/tmp/zsclip-serve-test"),
                   **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "zsclip", "serve", "--model", "demo", "--port", str(port),
                                "--templates", "photo", "--log-level", "warning", *args],
                               stdout=stdout, stderr=subprocess.PIPE, env=environment, cwd=cwd, preexec_fn=preexec_fn)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"zsclip serve exited: {process.stderr.read().decode()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"zsclip serve did not become ready in {timeout:.0f} s")


def stop_serve(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
