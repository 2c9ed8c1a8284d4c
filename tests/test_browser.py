"""End to end in a real browser: JupyterLab serves notebook 02 and trimmed notebooks 05, 06 and 07, headless Chromium
runs them, and a control moves each explorer's figure.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``; ``.ci/run``
installs them) and the ``selenium`` package of the test extra; skipped cleanly without them. The notebooks are
copied to a temporary folder and served from there, so the browser's run never touches the committed files.
Notebooks 05, 06 and 07 are served trimmed to their parameter, import and explorer cells (their training sections
would take minutes and are run by nbval anyway). A
screenshot of the explorer after the slider moved is written to ``runs/screenshots/`` (git-ignored).
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import secrets
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NOTEBOOK = "02_anchor_sizes.ipynb"
RFCN_NOTEBOOK = "05_rfcn.ipynb"
RFCN_TRIMMED = "05_rfcn_explorer.ipynb"
SR_NOTEBOOK = "06_super_resolution.ipynb"
SR_TRIMMED = "06_super_resolution_explorer.ipynb"
EFPN_NOTEBOOK = "07_efpn.ipynb"
EFPN_TRIMMED = "07_efpn_explorer.ipynb"
SCREENSHOTS = ROOT / "runs" / "screenshots"
# Run-all takes about 45 s for notebook 02 on an idle 2-core machine; the other pytest worker shares those cores.
RUN_ALL_TIMEOUT = 600
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="no headless browser: install Debian's chromium and chromium-driver (.ci/run does)"),
]


def load_lab_script():
    """``scripts/lab.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("sodlib_lab_script", ROOT / "scripts" / "lab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_for(condition, timeout: float, what: str, interval: float = 0.5, describe=None):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what`` after ``timeout`` s, with
    ``describe()`` (what the page shows) appended when given."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            state = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{state}")
        time.sleep(interval)


def explorer_cells_only(notebook: dict, explorer_call: str) -> dict:
    """``notebook`` (nbformat json) cut to its first two code cells (parameters, imports) and the code cell that
    contains ``explorer_call``, outputs cleared; fails if the notebook no longer has that cell."""
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    explorer = [cell for cell in code if explorer_call in "".join(cell["source"])]
    assert len(explorer) == 1, f"expected one cell calling {explorer_call!r}, found {len(explorer)}"
    cells = [dict(cell, outputs=[], execution_count=None) for cell in code[:2] + explorer]
    return dict(notebook, cells=cells)


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """JupyterLab serving a copy of notebook 02 and notebook 05 cut to its explorer (kernel in the fast setting,
    inline figures); yields (url, token)."""
    lab_script = load_lab_script()
    served = tmp_path / "notebooks"
    served.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, served / NOTEBOOK)
    rfcn = json.loads((ROOT / "notebooks" / RFCN_NOTEBOOK).read_text())
    (served / RFCN_TRIMMED).write_text(json.dumps(explorer_cells_only(rfcn, "ps_pooling_explorer(")))
    sr = json.loads((ROOT / "notebooks" / SR_NOTEBOOK).read_text())
    (served / SR_TRIMMED).write_text(json.dumps(explorer_cells_only(sr, "sr_explorer(")))
    efpn = json.loads((ROOT / "notebooks" / EFPN_NOTEBOOK).read_text())
    (served / EFPN_TRIMMED).write_text(json.dumps(explorer_cells_only(efpn, "level_explorer(")))
    monkeypatch.setenv("SODLIB_FAST", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per kernel: the other pytest worker has the other core
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must keep matplotlib's inline backend
    port, token = lab_script.free_port(), secrets.token_hex(16)
    server = lab_script.start_lab(port, token, root=served)  # the copies, never the committed files
    try:
        listed = lab_script.listed_notebooks(port, token, server=server)
        assert NOTEBOOK in listed and RFCN_TRIMMED in listed and SR_TRIMMED in listed and EFPN_TRIMMED in listed
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except Exception:
            server.kill()


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def run_menu_command(driver, menu: str, commands: tuple[str, ...]) -> None:
    """Open the JupyterLab menu titled ``menu`` and click the first item bound to one of ``commands``
    (JupyterLab 4 binds its menus to ``editmenu:*`` / ``runmenu:*`` commands, notebooks to ``notebook:*``)."""
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
    next(item for item in items if item.text.strip() == menu).click()
    selector = ", ".join(f".lm-Menu-item[data-command='{c}']" for c in commands)
    entry = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, selector), 20, f"one of the menu items {commands} in {menu}")
    entry[0].click()


def explorer_images(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, ".widget-output img")


def image_source(driver, index: int) -> str:
    """The ``src`` (a data URL) of the ``index``-th explorer figure, found afresh (a redraw replaces the element)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(10):
        images = explorer_images(driver)
        if len(images) <= index:
            return ""
        try:
            return images[index].get_attribute("src") or ""
        except StaleElementReferenceException:
            time.sleep(0.2)
    return ""


def image_digest(driver, index: int) -> str:
    return hashlib.sha256(image_source(driver, index).encode()).hexdigest()


def settled_digest(driver, index: int, quiet: float = 2.0, timeout: float = 60.0) -> str:
    """The figure's digest once it has not changed for ``quiet`` seconds (each key press may redraw it)."""
    deadline = time.monotonic() + timeout
    last, since = image_digest(driver, index), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = image_digest(driver, index)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"explorer figure {index} kept changing for {timeout:.0f} s")


def open_and_run_all(driver, url: str, token: str, notebook: str, explorers: int) -> None:
    """Open ``notebook`` in JupyterLab, clear its stored outputs, run all cells, and wait until ``explorers``
    explorer figures are drawn and no cell is busy; fails on any traceback in the outputs."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/lab/tree/{notebook}?token={token}&reset")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell"), 120, "the notebook to open")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
             or driver.find_elements(By.XPATH, "//*[contains(@class,'jp-Toolbar')]//*[contains(text(),'Idle')]"), 120,
             "the kernel to start", interval=1.0)
    run_menu_command(driver, "Edit", ("editmenu:clear-all", "notebook:clear-all-cell-outputs"))
    wait_for(lambda: not explorer_images(driver), 30, "the stored outputs to clear")
    run_menu_command(driver, "Run", ("runmenu:run-all", "notebook:run-all-cells"))

    def busy_prompts():
        return [p for p in driver.find_elements(By.CSS_SELECTOR, ".jp-InputArea-prompt") if "*" in p.text]

    def tracebacks():
        errors = driver.find_elements(By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.stderr'] .jp-RenderedText")
        return [e.text for e in errors if "Traceback" in e.text or "Error" in e.text]

    def explorers_drawn():
        return len(explorer_images(driver)) >= explorers and not busy_prompts()

    def page_state():
        errors = tracebacks()
        return (f"{len(explorer_images(driver))} explorer figure(s) drawn, {len(busy_prompts())} cell(s) still queued "
                f"or running" + (f", first error: {errors[0][-1500:]}" if errors else ", no error shown"))

    wait_for(explorers_drawn, RUN_ALL_TIMEOUT, f"{notebook} to run and {explorers} explorer(s) to draw", interval=2.0,
             describe=page_state)
    errors = tracebacks()
    assert not errors, errors[0][-2000:]


def slider_labelled(driver, label: str):
    """The ipywidgets slider whose label starts with ``label``."""
    from selenium.webdriver.common.by import By

    sliders = driver.find_elements(By.CSS_SELECTOR, ".widget-slider")
    return next(s for s in sliders if s.find_element(By.CSS_SELECTOR, ".widget-label").text.strip().startswith(label))


def press_slider(driver, label: str, key: str, times: int):
    """Click the handle of the slider labelled ``label`` and press ``key`` (a selenium ``Keys`` value) ``times``
    times; returns the slider."""
    from selenium.webdriver.common.by import By

    slider = slider_labelled(driver, label)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", slider)
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    for _ in range(times):
        handle.send_keys(key)
    return slider


def report_containing(driver, phrase: str) -> str:
    """The text of the first explorer report (``.widget-html pre``) that contains ``phrase``, or ``""``."""
    from selenium.webdriver.common.by import By

    reports = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".widget-html pre") if phrase in e.text]
    return reports[0] if reports else ""


def save_explorer_screenshot(driver, index: int, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", explorer_images(driver)[index])
    time.sleep(0.5)
    assert driver.save_screenshot(str(SCREENSHOTS / name))


def test_notebook_02_runs_in_chromium_and_a_slider_redraws_the_figure(browser, lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, token = lab
    open_and_run_all(browser, url, token, NOTEBOOK, explorers=2)

    # the IoU explorer is the first explorer: move its offset slider with the keyboard
    before = settled_digest(browser, 0)
    offset = slider_labelled(browser, "offset d")
    readout_before = offset.find_element(By.CSS_SELECTOR, ".widget-readout").text
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", offset)
    handle = offset.find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    for _ in range(4):
        handle.send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: offset.find_element(By.CSS_SELECTOR, ".widget-readout").text != readout_before, 30, "the slider to move")
    wait_for(lambda: image_digest(browser, 0) != before, 60, "the figure to be redrawn after the slider moved")
    after = settled_digest(browser, 0)
    assert after != before
    readout_after = offset.find_element(By.CSS_SELECTOR, ".widget-readout").text
    assert float(readout_after) > float(readout_before)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", explorer_images(browser)[0])
    time.sleep(0.5)
    path = SCREENSHOTS / "notebook02_iou_explorer.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    png = base64.b64decode(image_source(browser, 0).split(",", 1)[1])
    (SCREENSHOTS / "notebook02_iou_explorer_figure.png").write_bytes(png)

    # the anchor explorer (the second one): a finer stride redraws its figure too
    before = settled_digest(browser, 1)
    stride = slider_labelled(browser, "stride")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", stride)
    handle = stride.find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    handle.send_keys(Keys.ARROW_LEFT)
    wait_for(lambda: image_digest(browser, 1) != before, 60, "the anchor explorer to redraw after the stride moved")
    settled_digest(browser, 1)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", explorer_images(browser)[1])
    time.sleep(0.5)
    assert browser.save_screenshot(str(SCREENSHOTS / "notebook02_anchor_explorer.png"))


def test_notebook_05_pooling_explorer_redraws_when_the_roi_moves_by_sub_pixel_steps(browser, lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, token = lab
    open_and_run_all(browser, url, token, RFCN_TRIMMED, explorers=1)
    report_before = wait_for(lambda: report_containing(browser, "worst bin"), 30, "the explorer's report of the three poolings")
    assert report_before.count("worst bin off by") == 3, report_before

    before = settled_digest(browser, 0)
    readout_before = slider_labelled(browser, "shift x").find_element(By.CSS_SELECTOR, ".widget-readout").text
    shift = press_slider(browser, "shift x", Keys.ARROW_RIGHT, 3)  # three quarter-pixel steps
    wait_for(lambda: shift.find_element(By.CSS_SELECTOR, ".widget-readout").text != readout_before, 30, "the slider to move")
    wait_for(lambda: image_digest(browser, 0) != before, 60, "the pooling explorer to redraw after the RoI moved")
    assert settled_digest(browser, 0) != before
    wait_for(lambda: report_containing(browser, "worst bin") != report_before, 30, "the report to follow the moved RoI")
    assert float(shift.find_element(By.CSS_SELECTOR, ".widget-readout").text) == pytest.approx(
        float(readout_before) + 0.75)
    save_explorer_screenshot(browser, 0, "notebook05_pooling_explorer.png")


def test_notebook_06_sr_explorer_redraws_when_another_crop_is_picked(browser, lab):
    from selenium.webdriver.common.keys import Keys

    url, token = lab
    open_and_run_all(browser, url, token, SR_TRIMMED, explorers=1)
    report_before = wait_for(lambda: report_containing(browser, "PSNR"), 30, "the explorer's report of the crop's PSNR")
    assert report_before.startswith("crop 3") and "bicubic" in report_before, report_before

    before = settled_digest(browser, 0)
    press_slider(browser, "crop", Keys.ARROW_RIGHT, 2)
    wait_for(lambda: image_digest(browser, 0) != before, 60, "the SR explorer to redraw after another crop was picked")
    assert settled_digest(browser, 0) != before
    wait_for(lambda: report_containing(browser, "PSNR").startswith("crop 5"), 30, "the report to name the new crop")
    save_explorer_screenshot(browser, 0, "notebook06_sr_explorer.png")


def test_notebook_07_level_explorer_follows_the_object_across_the_extended_threshold(browser, lab):
    from selenium.webdriver.common.keys import Keys

    url, token = lab
    open_and_run_all(browser, url, token, EFPN_TRIMMED, explorers=1)
    report_before = wait_for(lambda: report_containing(browser, "FPN pools it from"), 30, "the explorer's report of the levels")
    assert report_before.startswith("object 12 px") and "EFPN from P'2" in report_before, report_before

    before = settled_digest(browser, 0)
    press_slider(browser, "object side (px)", Keys.ARROW_RIGHT, 28)  # 12 -> 26 px: 18.2 px resized, over T = 17.92
    wait_for(lambda: image_digest(browser, 0) != before, 60, "the level explorer to redraw after the object grew")
    assert settled_digest(browser, 0) != before
    report_after = wait_for(lambda: (lambda r: r if r.startswith("object 26 px") else None)(report_containing(browser, "FPN pools it from")),
                            30, "the report to follow the larger object")
    assert "EFPN from P2" in report_after, report_after
    save_explorer_screenshot(browser, 0, "notebook07_level_explorer.png")
