"""Without network, a model that needs the hub is one line at once, not a minute of retries (issue 38, item 5).

No network is simulated, never reached: the hub is ``HF_ENDPOINT`` pointing at a closed port on 127.0.0.1,
with an empty ``HF_HOME`` (the user's cache is never read), in a ``python -m zsclip`` subprocess. A name that
does not resolve is simulated in process (``socket.getaddrinfo`` raising as it does without DNS).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from zsclip.encoders import hub

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once it is closed


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_the_probe_names_a_refused_port_a_name_without_dns_and_passes_a_listening_port(no_proxy, monkeypatch):
    refused = hub.unreachable(f"http://127.0.0.1:{_closed_port()}")
    assert refused is not None and "127.0.0.1" in refused and "refused" in refused.lower()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert hub.unreachable(f"http://127.0.0.1:{listening.getsockname()[1]}") is None

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert hub.unreachable("https://hub.example") == ("hub.example cannot be resolved (Name or service not known): "
                                                      "no network or no DNS")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # the proxy reaches the hub, not this machine
    assert hub.unreachable("https://hub.example") is None


def _zsclip(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items()
           if name.upper() not in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                   "HF_TOKEN", "ZSCLIP_DEBUG")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(tmp_path / "hf-home"),
               ZSCLIP_CACHE_DIR=str(tmp_path / "zsclip-cache"))
    # a bound: huggingface_hub's retries took about 55 s per file, two files, before the one line
    return subprocess.run([sys.executable, "-m", "zsclip", "classify", str(EXAMPLES / "blue_ring.png"),
                           "--labels", "ring,star", *args], capture_output=True, text=True, env=env, timeout=90)


@pytest.mark.slow
def test_offline_a_real_model_name_is_one_line_at_once_with_what_to_do(tmp_path):
    result = _zsclip(tmp_path, "--model", "ViT-B-32", "--pretrained", "openai")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()  # no retry lines before it
    assert line.startswith("zsclip: error: could not load ViT-B-32 (pretrained='openai'): its weights are not in "
                           "the local cache and the model hub (http://127.0.0.1:")
    assert "Connection refused" in line and "--model demo" in line and "local-dir:PATH" in line


@pytest.mark.slow
def test_offline_weights_already_in_the_cache_still_load(tmp_path, tiny_clip_dir):
    # the Hugging Face cache as huggingface_hub lays it out, holding an open_clip model (hf-hub:ORG/REPO)
    repo = tmp_path / "hf-home" / "hub" / "models--zsclip-test--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_clip_dir.removeprefix("local-dir:"), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    result = _zsclip(tmp_path, "--model", "hf-hub:zsclip-test/tiny", "-t", "photo")
    assert result.returncode == 0, result.stderr
    assert "Retry" not in result.stderr and result.stdout.count("blue_ring.png") == 1
