"""Notebook 04's tiling widget in a real JupyterLab page, driven by headless Chromium.

Like the notebook-00 browser test (same server and browser, from ``browser_helpers``), this one
checks what a student sees. It opens a fresh copy of notebook 04 at smoke size with
``INTERACTIVE = True`` (the notebook trains its own expert into a temporary runs folder), runs
every cell from the Run menu, and then uses the tiling widget: its Output shows two figures, the
tiling (one canvas beside its tiling, wide) and the T-shirt (square). Picking another class and
then moving the tiles slider one step must each redraw both figures. Saved from the page, the
notebook must hold no error and the smoke-size numbers. A screenshot is kept under
``outputs/test-artifacts/``.
"""

from __future__ import annotations

import time

import pytest

import browser_helpers as bh
from nbharness import recorded_results

NOTEBOOK = "04_tileable_textures.ipynb"
CLASSES = ["airplane", "automobile", "frog", "ship"]  # the notebook's default CLASSES
RUN_TIMEOUT_S = 360  # notebook 04 at smoke size, its expert's training included
REDRAW_TIMEOUT_S = 60


@pytest.fixture
def page(tmp_path):
    """Notebook 04 at smoke size, widget on, in a private JupyterLab page."""
    with bh.smoke_session(tmp_path, NOTEBOOK) as lab_page:
        yield lab_page


def _views(driver) -> list[dict] | None:
    """The widget's two figures once both have loaded (tiling, then T-shirt), else ``None``."""
    images = driver.execute_script(bh.WIDGET_OUTPUT_IMAGES_JS)
    loaded = len(images) == 2 and all(img["width"] > 0 and img["src"].startswith("data:image/png") for img in images)
    return images if loaded else None


def _redrawn(driver, before: list[dict]) -> list[dict] | None:
    """Both figures once each differs from its ``before`` image, else ``None``."""
    views = _views(driver)
    return views if views and all(new["src"] != old["src"] for new, old in zip(views, before)) else None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook04_tiling_widget_in_jupyterlab(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    started = time.monotonic()
    driver = page.driver
    redraw_wait = page.wait(REDRAW_TIMEOUT_S, 0.25)
    with page.screenshot_on_failure("browser_notebook04_failure.png"):
        page.open()
        page.run_all(RUN_TIMEOUT_S)
        ran = time.monotonic()

        # The widget: a class dropdown of the distilled classes and a tiles slider at 3, found by their labels.
        pick = Select(driver.find_element(By.XPATH, bh.widget_xpath("dropdown", "class") + "//select"))
        assert [o.text for o in pick.options] == CLASSES
        assert pick.first_selected_option.text == CLASSES[0]
        tiles = driver.find_element(By.XPATH, bh.widget_xpath("slider", "tiles"))
        page.scroll_to(tiles)  # the widget in view, for a failure screenshot too
        readout = tiles.find_element(By.CSS_SELECTOR, ".widget-readout")
        assert readout.text.strip() == "3"

        # Its Output: the tiling (one canvas beside a square tiling: about twice as wide as high), then the T-shirt.
        views = redraw_wait.until(_views, "the widget's two figures did not appear")
        tiling, shirt = views
        assert tiling["width"] > 1.5 * tiling["height"], \
            f"the first figure is not the wide tiling: {tiling['width']} x {tiling['height']}"
        assert abs(shirt["width"] - shirt["height"]) <= 0.1 * shirt["height"], \
            f"the second figure is not the square T-shirt: {shirt['width']} x {shirt['height']}"

        # Another class: both figures are drawn again, from the other canvas.
        pick.select_by_visible_text(CLASSES[1])
        views = redraw_wait.until(lambda d: _redrawn(d, views), "picking another class did not redraw both figures")

        # One more tile per side, with the keyboard on the slider's handle: both figures again.
        tiles.find_element(By.CSS_SELECTOR, ".noUi-handle").send_keys(Keys.ARROW_RIGHT)
        redraw_wait.until(lambda d: readout.text.strip() == "4", "the tiles slider did not move to 4")
        views = redraw_wait.until(lambda d: _redrawn(d, views), "moving the tiles slider did not redraw both figures")

        page.scroll_to(driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .widget-output"))
        print(f"screenshot: {bh.save_screenshot(driver, bh.artifacts_dir() / 'browser_notebook04.png')}")
        executed = page.save()

    assert not bh.error_outputs(executed), f"cells raised errors in the browser: {bh.error_outputs(executed)}"
    assert not bh.unexecuted_cells(executed), f"code cells left unexecuted: {bh.unexecuted_cells(executed)}"
    results = recorded_results(executed)
    assert results["classes"] == CLASSES and results["iterations"] == 8
    assert results["canvas_shape"] == [3, 64, 64]
    print(f"browser test took {time.monotonic() - started:.0f} s; page open and Run All {ran - started:.0f} s, "
          f"of which the notebook's own cells {results['seconds']:.0f} s")
