"""Drive a notebook in JupyterLab from headless Chromium (Debian's, no browser download).

Used by the real-browser test of the teaching notebook. JupyterLab runs from this venv on
loopback with its settings, workspaces and runtime files in a temporary folder, so a user's
Jupyter configuration is neither read nor changed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


# User settings for the test's JupyterLab. Without autoStartDefaultKernel, JupyterLab 4 may
# answer the opened notebook with a "Select Kernel" dialog (it did once in CI, and every
# click behind the dialog was lost); news would put a toast over the page.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}


def write_lab_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def accept_dialogs(page) -> list[str]:
    """Accept any open JupyterLab dialog (e.g. kernel selection); returns their texts."""
    texts = []
    for dialog in page.locator(".jp-Dialog").all():
        if dialog.is_visible():
            texts.append(dialog.inner_text())
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    return texts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on loopback, serving ``root``."""

    def __init__(self, root: Path, home: Path, env: dict | None = None):
        self.root, self.home = root, home
        self.port = free_port()
        self.token = "msnb-browser-test"
        home.mkdir(parents=True, exist_ok=True)
        write_lab_settings(home / "settings")
        self.env = {
            **os.environ,
            **(env or {}),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        }
        self.log = open(home / "lab.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                f"--port={self.port}", f"--ServerApp.token={self.token}",
                f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False", "--allow-root",
                "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def wait(self, timeout: float = 60) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: see {self.home / 'lab.log'}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not start in {timeout} s: see {self.home / 'lab.log'}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
