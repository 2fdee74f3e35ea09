"""A real Label Studio server for tests: started from its own virtualenv (the `label-studio` package pins many
libraries, so it never shares zsclip's), on 127.0.0.1, SQLite in a temporary folder, local files served from
a document root, no network (its version check and analytics off), one user with a known API token.

Where the binary is: $ZSCLIP_LABEL_STUDIO_BIN (.ci/run sets it), else .venv-ls/ in the repository, else
/work/venvs/label-studio. Tests using it skip, saying so, when none exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from serving import free_port

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = [os.environ.get("ZSCLIP_LABEL_STUDIO_BIN", ""), str(REPO / ".venv-ls" / "bin" / "label-studio"),
              "/work/venvs/label-studio/bin/label-studio"]
TOKEN = "0123456789abcdef0123456789abcdef01234567"
#: a first start creates its SQLite database (Django migrations): minutes on a busy machine
START_TIMEOUT_S = 900


def label_studio_bin() -> str | None:
    return next((c for c in CANDIDATES if c and os.access(c, os.X_OK)), None)


class LabelStudio:
    """A running server: ``url``, ``client`` (httpx, authenticated), ``document_root`` (local files)."""

    def __init__(self, binary: str, root: Path) -> None:
        self.document_root = root / "files"
        self.document_root.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = root / "home"
        home.mkdir()
        env = {key: value for key, value in os.environ.items() if not key.startswith(("LABEL_STUDIO", "HOST"))}
        env.update({
            "HOME": str(home), "LABEL_STUDIO_BASE_DATA_DIR": str(root / "data"),
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
            "DJANGO_DB": "sqlite", "PYTHONUNBUFFERED": "1",
            # the ML backend (zsclip serve) is on 127.0.0.1 too: Label Studio refuses local hosts by default
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false", "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        })
        self.log = (root / "label-studio.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(root / "data"), "--username", "zsclip@example.com", "--password", "zsclip-test-pw",
             "--user-token", TOKEN, "--enable-legacy-api-token"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=root)
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60)
        self.log_path = root / "label-studio.log"
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if self.client.get("/api/projects").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer within {START_TIMEOUT_S} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def create_project(self, title: str, label_config: str) -> int:
        response = self.client.post("/api/projects", json={"title": title, "label_config": label_config})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def tasks(self, project: int) -> list[dict]:
        """Every task of ``project`` with its predictions, as the API returns them."""
        tasks, page = [], 1
        while True:
            response = self.client.get("/api/tasks", params={"project": project, "page": page, "page_size": 100,
                                                             "fields": "all"})
            if response.status_code == 404:  # past the last page
                break
            assert response.status_code == 200, response.text
            batch = response.json()["tasks"]
            tasks += batch
            if len(batch) < 100:
                break
            page += 1
        return tasks

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def copy_images(source: Path, root: Path) -> Path:
    target = root / "photos"
    target.mkdir()
    for path in sorted(source.glob("*.png")):
        shutil.copy(path, target / path.name)
    return target
