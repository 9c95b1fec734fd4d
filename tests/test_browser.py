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

import re
import time

import pytest

import browser_helpers as bh
from nbharness import recorded_results

NOTEBOOK = "00_setup_and_data.ipynb"
RUN_TIMEOUT_S = 300  # all of notebook 00 at smoke size, kernel start included
REDRAW_TIMEOUT_S = 60


@pytest.fixture
def page(tmp_path):
    """Notebook 00 at smoke size, widgets on, in a private JupyterLab page."""
    with bh.smoke_session(tmp_path, NOTEBOOK) as lab_page:
        yield lab_page


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook00_in_jupyterlab(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    started = time.monotonic()
    driver, lab = page.driver, page.lab
    redraw_wait = page.wait(REDRAW_TIMEOUT_S, 0.25)
    with page.screenshot_on_failure("browser_notebook00_failure.png"):
        page.open()
        page.run_all(RUN_TIMEOUT_S)

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
        page.scroll_to(handle)
        handle.send_keys(Keys.ARROW_RIGHT)
        redraw_wait.until(lambda d: d.execute_script(bh.WIDGET_SUMMARY_JS)["readout"] == "1",
                          "the slider did not move to seed 1")
        after = redraw_wait.until(
            lambda d: (src := d.execute_script(bh.WIDGET_IMAGE_SRC_JS)) and src != before and src,
            "moving the slider did not redraw the widget's figure")
        assert after.startswith("data:image/png")

        page.scroll_to(driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .widget-output"))
        print(f"screenshot: {bh.save_screenshot(driver, bh.artifacts_dir() / 'browser_notebook00.png')}")

        # Save from the page and read the executed notebook back from disk.
        executed = page.save()

    assert not bh.error_outputs(executed), f"cells raised errors in the browser: {bh.error_outputs(executed)}"
    assert not bh.unexecuted_cells(executed), f"code cells left unexecuted: {bh.unexecuted_cells(executed)}"
    results = recorded_results(executed)
    assert (results["num_train"], results["num_test"], results["num_classes"]) == (5000, 1000, 10)
    assert results["dsa_groups"] == 6 and results["dsa_replay_identical"] is True

    # The login token must not leak into the server's log (the URL it prints shows "...").
    log = lab.log_text()
    assert f"127.0.0.1:{lab.port}" in log, "the server log was not captured"
    assert lab.token not in log, "the login token appears in the Jupyter server log"
    assert not re.search(r"token=[0-9a-f]{16,}", log), "a token-like value appears in the server log"
    print(f"browser test took {time.monotonic() - started:.0f} s")
