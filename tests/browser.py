"""Drive a notebook in JupyterLab from headless Chromium (Debian's, no browser download).

Used by the real-browser test of the teaching notebook. JupyterLab runs from this venv on
loopback with its settings, workspaces and runtime files in a temporary folder, so a user's
Jupyter configuration is neither read nor changed.
"""

from __future__ import annotations

import json
import os
import re
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


# User settings for the test's JupyterLab: no news toast over the page. (Setting
# autoStartDefaultKernel to avoid the Select Kernel dialog made things worse under load:
# the page connected to the kernel twice and widgets failed with "model not found";
# run_all_cells accepts the dialog instead.)
LAB_SETTINGS = {
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


# the notebook toolbar's kernel indicator when the kernel is idle
KERNEL_IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
ERROR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
# the input prompt of every code cell: "[ ]:" not run, "[*]:" queued or running, "[3]:" ran
CELL_PROMPTS = """() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
    .map(e => e.textContent.trim())"""


def run_all_cells(page, timeout: float = 240, idle_grace: float = 10) -> dict:
    """Run every code cell of the open notebook and wait until each has run.

    JupyterLab can lose a Run All request made while the notebook's kernel is still
    connecting: seen here under load, Run All ran the first cell and left the rest at
    [ ]:, and once in CI it was answered by a Select Kernel dialog. So dialogs are
    accepted and Run All is repeated whenever no cell is queued or running for
    ``idle_grace`` seconds while some cell has not run. Returns the number of Run All
    requests and the texts of the dialogs accepted. An error output fails at once with
    its text; ``timeout`` seconds without finishing raise TimeoutError.
    """
    requests, dialogs, idle_since = 0, [], None
    deadline = time.time() + timeout
    while True:
        dialogs += accept_dialogs(page)
        errors = page.locator(ERROR_OUTPUT)
        if errors.count():
            raise AssertionError(f"a cell failed: {errors.first.inner_text()}")
        prompts = page.evaluate(CELL_PROMPTS)
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return {"run_all_requests": requests, "dialogs": dialogs}
        if any("*" in p for p in prompts):
            idle_since = None
        elif idle_since is None:
            idle_since = time.time()
        if requests == 0 or (idle_since is not None and time.time() - idle_since > idle_grace):
            page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=10_000)
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            requests, idle_since = requests + 1, None
        if time.time() > deadline:
            raise TimeoutError(
                f"cells not run after {timeout} s and {requests} Run All requests: "
                f"prompts {prompts}, dialogs {dialogs}"
            )
        time.sleep(0.5)


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


# A viewer's canvas drawn: brainsprite paints the three planes on one canvas per iframe.
VIEWER_CANVASES = """() => Array.from(document.querySelectorAll('iframe.viewer')).map(f => {
    const c = f.contentDocument && f.contentDocument.querySelector('canvas');
    return c ? [c.width, c.height] : null; })"""


def open_report(path: Path, screenshot: Path, *, wait_ms: int = 3000) -> dict:
    """Open a static HTML page (a study's report.html) in headless Chromium.

    Returns the page's console messages (``[(type, text)]``, uncaught errors as
    ``pageerror``), its visible text, the ``alt`` of every image, the size of each
    three-plane viewer's canvas and every link's ``href``; saves a screenshot of the
    first screen to ``screenshot`` and one of the whole page beside it (``*-full.png``).
    """
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        console: list[tuple[str, str]] = []
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
        page.on("requestfailed", lambda r: console.append(("requestfailed", r.url)))
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        page.wait_for_timeout(wait_ms)  # the viewers draw once their sprites decode
        page.screenshot(path=str(screenshot))
        page.screenshot(
            path=str(screenshot.with_name(screenshot.stem + "-full.png")), full_page=True
        )
        out = {
            "console": console,
            "text": page.inner_text("body"),
            "images": page.eval_on_selector_all("img", "els => els.map(e => e.alt)"),
            "viewers": page.evaluate(VIEWER_CANVASES),
            "links": page.eval_on_selector_all(
                "a[href]", "els => els.map(e => e.getAttribute('href'))"
            ),
        }
        browser.close()
    return out
