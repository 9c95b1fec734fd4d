"""Notebook 00 in a real JupyterLab page, driven by headless Chromium.

The papermill tests check what a notebook computes; this one checks what a student sees. It
starts a private JupyterLab server, opens a fresh copy of notebook 00 (smoke size, widgets on),
runs every cell from the Run menu, and then checks that a matplotlib figure was drawn, that the
"Try it yourself" widgets appeared, and that moving the slider redraws the figure. Saved from
the page, the notebook must hold no error and the same numbers as the papermill test. The
server's log must never contain the login token. A screenshot is kept under
``outputs/test-artifacts/``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest

import browser_helpers as bh
from mttlib.io import outputs_dir
from nbharness import NOTEBOOKS, recorded_results

NOTEBOOK = "00_setup_and_data.ipynb"
PAGE_TIMEOUT_S = 120  # JupyterLab's first load on a busy 2-core machine
RUN_TIMEOUT_S = 300  # all of notebook 00 at smoke size, kernel start included
REDRAW_TIMEOUT_S = 60


def artifacts_dir() -> Path:
    return outputs_dir() / "test-artifacts"


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server whose root holds a fresh copy of notebook 00 at smoke size."""
    reason = bh.missing_browser_reason()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    root = tmp_path / "lab-root"
    root.mkdir()
    notebook = json.loads((NOTEBOOKS / NOTEBOOK).read_text())  # read now: the file may be regenerated
    bh.set_parameters(notebook, SMOKE=True, INTERACTIVE=True, OUT_DIR=str(tmp_path / "outputs"),
                      RUNS_DIR=str(tmp_path / "runs"))
    (root / NOTEBOOK).write_text(json.dumps(notebook, indent=1))
    server = bh.LabServer(root, tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def driver(tmp_path, lab, monkeypatch):
    """Headless Chromium with a fresh profile; quit at the end whatever happens."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never try to download
    browser = bh.start_chromium(tmp_path / "chromium-profile", tmp_path / "chromedriver.log")
    try:
        yield browser
    finally:
        browser.quit()


def _prompts(driver) -> list[str]:
    return driver.execute_script(bh.PROMPTS_JS)


def _wait_run_finished(driver, lab, wait) -> None:
    """Wait until no cell is queued or running ([*]) and the kernel reports idle."""
    wait.until(lambda d: any(p != "[ ]:" for p in _prompts(d)), "Run All Cells did not start any cell")
    wait.until(lambda d: not any("*" in p for p in _prompts(d)) and lab.kernel_state(NOTEBOOK) == "idle",
               "the notebook was still running")


def _errors(notebook: dict) -> list[str]:
    return [f"{out.get('ename')}: {out.get('evalue')}"
            for cell in notebook["cells"] if cell["cell_type"] == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook00_in_jupyterlab(lab, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    started = time.monotonic()
    page_wait = WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.5)
    run_wait = WebDriverWait(driver, RUN_TIMEOUT_S, poll_frequency=1.0)
    redraw_wait = WebDriverWait(driver, REDRAW_TIMEOUT_S, poll_frequency=0.25)
    notebook_file = lab.root_dir / NOTEBOOK
    code_cells = sum(c["cell_type"] == "code" for c in json.loads(notebook_file.read_text())["cells"])
    failure_shot = artifacts_dir() / "browser_notebook00_failure.png"
    failure_shot.unlink(missing_ok=True)  # a stale one from an earlier run would mislead
    try:
        # Open the notebook, logged in by the token, and wait for its kernel.
        driver.get(f"{lab.base_url}/lab/tree/{NOTEBOOK}?token={lab.token}")
        page_wait.until(lambda d: len(_prompts(d)) == code_cells, "the notebook's cells did not appear")
        page_wait.until(lambda d: lab.kernel_state(NOTEBOOK) == "idle", "the kernel did not become idle")

        # Run → Run All Cells, as a student would.
        bh.click_menu(driver, page_wait, "Run", "runmenu:run-all")
        _wait_run_finished(driver, lab, run_wait)

        # A static matplotlib figure was rendered as a PNG image in an output area.
        images = driver.execute_script(bh.OUTPUT_IMAGES_JS)
        assert sum(src.startswith("data:image/png") for src in images) >= 3, \
            f"expected the real-image, DSA and ZCA figures as PNG outputs, found {images}"

        # The "Try it yourself" widgets: a dropdown, a slider at seed 0, and their figure.
        widgets = driver.execute_script(bh.WIDGET_SUMMARY_JS)
        assert widgets["dropdowns"] >= 1 and widgets["sliders"] >= 1 and widgets["handles"] >= 1, widgets
        assert widgets["readout"] == "0", widgets
        before = redraw_wait.until(lambda d: d.execute_script(bh.WIDGET_IMAGE_SRC_JS),
                                   "the widget's figure did not appear")
        assert before.startswith("data:image/png")

        # Move the slider one step with the keyboard; the figure must be drawn again, differently.
        handle = driver.find_element(By.CSS_SELECTOR, bh.SLIDER_HANDLE_CSS)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
        handle.send_keys(Keys.ARROW_RIGHT)
        redraw_wait.until(lambda d: d.execute_script(bh.WIDGET_SUMMARY_JS)["readout"] == "1",
                          "the slider did not move to seed 1")
        after = redraw_wait.until(
            lambda d: (src := d.execute_script(bh.WIDGET_IMAGE_SRC_JS)) and src != before and src,
            "moving the slider did not redraw the widget's figure")
        assert after.startswith("data:image/png")

        output = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .widget-output")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", output)
        shot = bh.save_screenshot(driver, artifacts_dir() / "browser_notebook00.png")
        print(f"screenshot: {shot}")

        # Save from the page and read the executed notebook back from disk.
        saved_before = notebook_file.stat().st_mtime_ns
        bh.click_menu(driver, page_wait, "File", "docmanager:save")
        page_wait.until(lambda d: notebook_file.stat().st_mtime_ns != saved_before, "the notebook was not saved")
        page_wait.until(lambda d: _readable(notebook_file), "the saved notebook could not be read")
    except Exception:
        bh.save_screenshot(driver, failure_shot)
        print(f"failure screenshot: {failure_shot}\nserver log tail:\n{lab.log_text()[-3000:]}")
        raise

    executed = nbformat.read(notebook_file, as_version=4)
    assert not _errors(executed), f"cells raised errors in the browser: {_errors(executed)}"
    counts = [c.get("execution_count") for c in executed["cells"] if c["cell_type"] == "code"]
    assert all(isinstance(n, int) for n in counts), f"cells left unexecuted: execution counts {counts}"
    results = recorded_results(executed)
    assert (results["num_train"], results["num_test"], results["num_classes"]) == (5000, 1000, 10)
    assert results["dsa_groups"] == 6 and results["dsa_replay_identical"] is True

    # The login token must not leak into the server's log (the URL it prints shows "...").
    log = lab.log_text()
    assert f"127.0.0.1:{lab.port}" in log, "the server log was not captured"
    assert lab.token not in log, "the login token appears in the Jupyter server log"
    assert not re.search(r"token=[0-9a-f]{16,}", log), "a token-like value appears in the server log"
    print(f"browser test took {time.monotonic() - started:.0f} s")


def _readable(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False
