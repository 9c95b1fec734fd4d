"""Helpers for the browser tests: a private JupyterLab server, headless Chromium, page actions, DOM probes.

A browser test opens a fresh copy of a notebook in a real JupyterLab page (``lab_session``) and
clicks through it the way a student would (``open_notebook``, ``run_all``, ``save_notebook``).
Everything here stays on ``127.0.0.1``: the server's update check, news feed and extension
catalogue are turned off, and Chromium starts with its background networking off.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import nbformat
import pytest

from mttlib.io import outputs_dir
from nbharness import NOTEBOOKS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "install it with .ci/install-browser (Debian packages chromium and chromium-driver)"

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)
PAGE_TIMEOUT_S = 120  # JupyterLab's first load on a busy 2-core machine

# JupyterLab user settings for the test profile: no news or update toasts, and every cell kept
# in the page (the default windowing leaves off-screen cells out of reach of the probes).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def missing_browser_reason() -> str | None:
    """Why the browser test cannot run here (a sentence), or ``None`` when it can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing: {INSTALL_HINT}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the Python package selenium is missing: pip install -e '.[dev]'"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def set_parameters(notebook: dict, **values) -> dict:
    """Rewrite the ``NAME: type = value`` lines of the ``parameters`` cell (in place).

    Each value is written as a Python literal; the type hint and the help comment stay.
    Raises ``ValueError`` when the cell or one of the names is missing.
    """
    cells = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"expected one cell tagged 'parameters', found {len(cells)}")
    cell = cells[0]
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    for name, value in values.items():
        pattern = re.compile(rf"^({re.escape(name)}\s*:\s*[^=]+?=\s*)(.*?)(\s+#.*)?$", re.MULTILINE)
        source, count = pattern.subn(lambda m: m.group(1) + repr(value) + (m.group(3) or ""), source)
        if count != 1:
            raise ValueError(f"the parameters cell has no single line '{name}: type = value'")
    cell["source"] = source.splitlines(keepends=True)
    return notebook


class LabServer:
    """``jupyter lab`` on a free localhost port, its token passed through the environment.

    ``start()`` waits until ``/api/status`` answers; ``stop()`` ends the server and its kernels.
    The server's output goes to ``log_path``.
    """

    def __init__(self, root_dir: Path, work_dir: Path, startup_timeout: float = 120.0):
        self.root_dir = Path(root_dir)
        self.work_dir = Path(work_dir)
        self.log_path = self.work_dir / "jupyter-server.log"
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MPLBACKEND", None)  # the kernel must keep its inline backend to show figures
        profile = self.work_dir / "jupyter-profile"
        env.update({
            "JUPYTER_TOKEN": self.token,
            "JUPYTER_CONFIG_DIR": str(profile / "config"),
            "JUPYTER_DATA_DIR": str(profile / "data"),
            "JUPYTER_RUNTIME_DIR": str(profile / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(profile / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(profile / "lab-workspaces"),
            "IPYTHONDIR": str(profile / "ipython"),
            "PYTHONUNBUFFERED": "1",
        })
        for name, settings in LAB_SETTINGS.items():
            path = profile / "lab-settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings))
        return env

    def start(self) -> None:
        """Start the server (with this Python, so kernel ``python3`` is this environment's)."""
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root_dir}", "--ServerApp.open_browser=False",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self._environment(), cwd=self.root_dir, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                self.api("status")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer within {self.startup_timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def api(self, path: str, timeout: float = 10.0):
        """GET ``/api/<path>`` with the token in the Authorization header; the decoded JSON."""
        request = urllib.request.Request(f"{self.base_url}/api/{path}",
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def kernel_state(self, notebook_name: str) -> str | None:
        """The execution state of the kernel attached to ``notebook_name`` (``None``: no session)."""
        for session in self.api("sessions"):
            if Path(session.get("path", "")).name == notebook_name and session.get("kernel"):
                return session["kernel"].get("execution_state")
        return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """End the server and everything it started (its kernels), waiting for them to go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own process group: it and its kernels
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_chromium(profile_dir: Path, log_path: Path):
    """Headless Chromium driven by the system chromedriver (Selenium downloads nothing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_path))
    return webdriver.Chrome(service=service, options=options)


def save_screenshot(driver, path: Path) -> Path:
    """Write a PNG of the browser's viewport to ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(driver.get_screenshot_as_png())
    os.replace(tmp, path)
    return path


def artifacts_dir() -> Path:
    """Where the browser tests keep their screenshots."""
    return outputs_dir() / "test-artifacts"


@contextmanager
def lab_session(tmp_path: Path, notebook: str, **params) -> Iterator["LabPage"]:
    """A private JupyterLab server whose root holds a fresh copy of ``notebooks/<notebook>`` with
    ``params`` written into its parameters cell, and headless Chromium; yields a :class:`LabPage`
    and ends both whatever happens. Skips the calling test when the browser is missing."""
    reason = missing_browser_reason()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    root = tmp_path / "lab-root"
    root.mkdir()
    copy = json.loads((NOTEBOOKS / notebook).read_text())  # read now: the file may be regenerated
    (root / notebook).write_text(json.dumps(set_parameters(copy, **params), indent=1))
    server = LabServer(root, tmp_path)
    with mock.patch.dict(os.environ, SE_OFFLINE="true"):  # Selenium Manager must never try to download
        try:
            server.start()
            driver = start_chromium(tmp_path / "chromium-profile", tmp_path / "chromedriver.log")
            try:
                yield LabPage(server, driver, root / notebook)
            finally:
                driver.quit()
        finally:
            server.stop()


@contextmanager
def smoke_session(tmp_path: Path, notebook: str) -> Iterator["LabPage"]:
    """:func:`lab_session` for ``notebook`` at smoke size with its widgets on, writing its figures and
    runs under ``tmp_path``: what a learner gets from Run All with ``SMOKE = True``."""
    with lab_session(tmp_path, notebook, SMOKE=True, INTERACTIVE=True, OUT_DIR=str(tmp_path / "outputs"),
                     RUNS_DIR=str(tmp_path / "runs")) as page:
        yield page


@dataclass
class LabPage:
    """One notebook in a JupyterLab page: the server, the browser, and the notebook's file on disk."""

    lab: LabServer
    driver: Any
    path: Path

    def wait(self, timeout: float = PAGE_TIMEOUT_S, poll: float = 0.5):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=poll)

    def prompts(self) -> list[str]:
        return self.driver.execute_script(PROMPTS_JS)

    def kernel_state(self) -> str | None:
        return self.lab.kernel_state(self.path.name)

    def open(self) -> None:
        """Open the notebook, logged in by the token; wait for its cells and an idle kernel."""
        code_cells = sum(c["cell_type"] == "code" for c in json.loads(self.path.read_text())["cells"])
        self.driver.get(f"{self.lab.base_url}/lab/tree/{self.path.name}?token={self.lab.token}")
        self.wait().until(lambda d: len(self.prompts()) == code_cells, "the notebook's cells did not appear")
        self.wait().until(lambda d: self.kernel_state() == "idle", "the kernel did not become idle")

    def run_all(self, timeout: float) -> None:
        """Run → Run All Cells, as a student would; wait until no cell is queued or running ([*])."""
        click_menu(self.driver, self.wait(), "Run", "runmenu:run-all")
        self.wait(timeout, 1.0).until(lambda d: any(p != "[ ]:" for p in self.prompts()),
                                      "Run All Cells did not start any cell")
        self.wait(timeout, 1.0).until(
            lambda d: not any("*" in p for p in self.prompts()) and self.kernel_state() == "idle",
            "the notebook was still running")

    def scroll_to(self, element) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)

    def save(self) -> nbformat.NotebookNode:
        """File → Save; the executed notebook read back from disk."""
        saved_before = self.path.stat().st_mtime_ns
        click_menu(self.driver, self.wait(), "File", "docmanager:save")
        self.wait().until(lambda d: self.path.stat().st_mtime_ns != saved_before, "the notebook was not saved")
        self.wait().until(lambda d: _readable(self.path), "the saved notebook could not be read")
        return nbformat.read(self.path, as_version=4)

    @contextmanager
    def screenshot_on_failure(self, name: str) -> Iterator[None]:
        """On an exception: a screenshot ``name`` under :func:`artifacts_dir` and the server log's tail."""
        shot = artifacts_dir() / name
        shot.unlink(missing_ok=True)  # a stale one from an earlier run would mislead
        try:
            yield
        except Exception:
            save_screenshot(self.driver, shot)
            print(f"failure screenshot: {shot}\nserver log tail:\n{self.lab.log_text()[-3000:]}")
            raise


def _readable(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def error_outputs(notebook: dict) -> list[str]:
    """``"Name: message"`` of every error output in an executed notebook."""
    return [f"{out.get('ename')}: {out.get('evalue')}"
            for cell in notebook["cells"] if cell["cell_type"] == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def unexecuted_cells(notebook: dict) -> list[int]:
    """Indices (among code cells) of the cells without an execution count."""
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    return [i for i, c in enumerate(code) if not isinstance(c.get("execution_count"), int)]


# --- DOM probes (run in the page, so no element handle can go stale) -----------------------

PROMPTS_JS = """
return Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
            .map(p => p.textContent.trim());
"""

OUTPUT_IMAGES_JS = """
return Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img'))
            .filter(img => !img.closest('.widget-output'))
            .map(img => (img.getAttribute('src') || '').slice(0, 40));
"""

WIDGET_IMAGE_SRC_JS = """
const img = document.querySelector('.jp-Notebook .widget-output .jp-OutputArea-output img');
return img ? img.getAttribute('src') : null;
"""

WIDGET_SUMMARY_JS = """
const q = s => document.querySelectorAll('.jp-Notebook ' + s).length;
const readout = document.querySelector('.jp-Notebook .widget-slider .widget-readout');
return {widgets: q('.jupyter-widgets'), sliders: q('.widget-slider'), dropdowns: q('.widget-dropdown'),
        handles: q('.widget-slider .noUi-handle'), readout: readout ? readout.textContent.trim() : null};
"""

SLIDER_HANDLE_CSS = ".jp-Notebook .widget-slider .noUi-handle"

# Every image a widget's Output shows, in order, with its decoded size (0 until it has loaded).
WIDGET_OUTPUT_IMAGES_JS = """
return Array.from(document.querySelectorAll('.jp-Notebook .widget-output .jp-OutputArea-output img'))
            .map(img => ({src: img.getAttribute('src') || '', width: img.naturalWidth, height: img.naturalHeight}));
"""


def widget_xpath(kind: str, description: str) -> str:
    """XPath of the ipywidgets control of ``kind`` (``dropdown``, ``slider``) labelled ``description``."""
    return (f"//*[contains(@class,'jp-Notebook')]//div[contains(concat(' ', @class, ' '), ' widget-{kind} ')]"
            f"[./label[normalize-space(.)='{description}']]")


def click_menu(driver, wait, menu: str, command: str) -> None:
    """Open the main menu ``menu`` (its label) and click the item that runs ``command``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    label = wait.until(ec.element_to_be_clickable(
        (By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')]"
                   f"[.//*[contains(@class,'lm-MenuBar-itemLabel') and normalize-space(.)='{menu}']]")))
    label.click()
    item = wait.until(ec.element_to_be_clickable(
        (By.CSS_SELECTOR, f".lm-Menu:not(.lm-MenuBar) li.lm-Menu-item[data-command='{command}']:not(.lm-mod-disabled)")))
    item.click()
