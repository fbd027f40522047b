"""Notebook 04 in a real JupyterLab, driven by headless Chromium, with no network.

Runs every cell of a copy of ``notebooks/04_multi_head_attention.ipynb`` in JupyterLab and checks what only a
browser can: the offline bertviz views draw their SVG (no CDN), and moving a widget slider re-runs the plot
(the image in the widget's output changes). Run with ``pytest -m browser tests/test_browser_lab.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "04_multi_head_attention.ipynb"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S = 90  # JupyterLab answering over HTTP
RUN_ALL_S = 150  # every cell of the notebook executed, kernel idle
SLIDER_S = 30  # the widget's plot redrawn after a key press

pytestmark = pytest.mark.browser

# JavaScript run in the page. JupyterLab exposes its application object as window.jupyterapp
# (--LabApp.expose_app_in_browser), so we can run its own commands and read the notebook's model.
NOTEBOOK_READY = """() => {
    const app = window.jupyterapp;
    const nb = app && app.shell.currentWidget;
    const kernel = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
    return !!(nb && nb.content && nb.content.widgets.length && kernel && kernel.status === 'idle');
}"""
# 'done' when every code cell has run and the kernel is idle; 'error' as soon as a cell shows a traceback
# (Run All stops there, so waiting longer would only time out).
ALL_EXECUTED = """() => {
    const nb = window.jupyterapp.shell.currentWidget;
    const code = nb.content.widgets.filter(c => c.model.type === 'code');
    if (code.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'))) return 'error';
    const kernel = nb.sessionContext.session.kernel;
    const done = code.length > 0 && code.every(c => c.model.executionCount !== null) && kernel.status === 'idle';
    return done ? 'done' : false;
}"""
ERRORS_IN_OUTPUTS = """() => window.jupyterapp.shell.currentWidget.content.widgets
    .filter(c => c.model.type === 'code')
    .flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`))"""
BERTVIZ_DRAWN = """() => Array.from(document.querySelectorAll('[id^="labkit-bertviz-"]')).map(root => ({
    id: root.id,
    svg: root.querySelectorAll('svg').length,
    line: root.querySelectorAll('svg line').length,
    rect: root.querySelectorAll('svg rect').length,
    text: root.querySelectorAll('svg text').length,
}))"""
# The last interactive widget's plot: the <img> in its output area, and its sliders' handles.
WIDGET_IMG_SRC = """() => {
    const boxes = document.querySelectorAll('.widget-interact');
    const box = boxes[boxes.length - 1];
    const img = box && box.querySelector('img');
    return img ? img.getAttribute('src') : null;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a temp folder with a copy of notebook 04 (outputs cleared)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install it (e.g. `apt-get install -y chromium`, or `make browser-deps`) "
                    "to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright for the browser test")
    nbformat = pytest.importorskip("nbformat")
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists():
        pytest.skip(f"{jupyter} is missing: install the lab extras (pip install -e '.[lab]')")

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / NOTEBOOK, as_version=4)
    for cell in nb.cells:  # start from a clean notebook: every output we see comes from this run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, notebooks / NOTEBOOK)

    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),  # no user settings or saved workspace
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "LABKIT_DATA_DIR": os.environ.get("LABKIT_DATA_DIR", str(ROOT.parent / "shared" / "data")),
        "LABKIT_DEVICE": "cpu",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    cmd = [
        str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--ServerApp.token={token}", f"--notebook-dir={notebooks}", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyter.log", "wb")
    proc = subprocess.Popen(cmd, cwd=notebooks, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, last_error = time.time() + SERVER_START_S, None
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
            try:
                _get_json(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError as e:
                last_error = e
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not answer on {base} within {SERVER_START_S} s ({last_error})")
        yield {"base": base, "token": token, "log": tmp_path / "jupyter.log"}
    finally:
        try:
            for kernel in _get_json(f"{base}/api/kernels?token={token}", timeout=5):
                req = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(req, timeout=10).close()
        except Exception:
            pass
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _press_and_wait_for_new_plot(page, handle, key: str, before: str) -> str:
    handle.focus()
    handle.press(key)
    page.wait_for_function(f"before => ({WIDGET_IMG_SRC})() && ({WIDGET_IMG_SRC})() !== before", arg=before,
                           timeout=SLIDER_S * 1000)
    return page.evaluate(WIDGET_IMG_SRC)


def test_notebook_04_runs_in_jupyterlab_and_draws(lab):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base, token = lab["base"], lab["token"]
    page_errors, outside_requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else outside_requests.append(r.url))

            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=60_000)
            page.wait_for_function(NOTEBOOK_READY, timeout=90_000)

            # Run → Run All Cells, through JupyterLab's own command, then wait until every cell has run.
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            try:
                state = page.wait_for_function(ALL_EXECUTED, timeout=RUN_ALL_S * 1000, polling=500).json_value()
            except PlaywrightTimeout:
                pytest.fail(f"the notebook did not finish within {RUN_ALL_S} s; server log:\n"
                            f"{lab['log'].read_text()[-2000:]}")
            assert state == "done", f"a cell failed in JupyterLab: {page.evaluate(ERRORS_IN_OUTPUTS)}"

            # (1) both bertviz views drew their SVG, offline
            page.wait_for_function("() => document.querySelectorAll('[id^=\"labkit-bertviz-\"] svg line').length > 0",
                                   timeout=20_000)
            views = page.evaluate(BERTVIZ_DRAWN)
            assert len(views) == 2, views  # the head view and the model view
            for view in views:
                assert view["svg"] >= 1 and view["line"] > 0 and view["text"] > 0, view

            # (2) moving a slider re-runs the plot: the widget's image changes
            box = page.locator(".widget-interact").last
            box.scroll_into_view_if_needed()
            page.wait_for_function(f"() => ({WIDGET_IMG_SRC})() !== null", timeout=SLIDER_S * 1000)
            handles = box.locator(".noUi-handle")
            assert handles.count() == 2  # head, input seed
            first = page.evaluate(WIDGET_IMG_SRC)
            after_seed = _press_and_wait_for_new_plot(page, handles.nth(1), "ArrowRight", first)  # seed 0 -> 1
            head = handles.nth(0)
            key = "ArrowLeft" if head.get_attribute("aria-valuenow") == head.get_attribute("aria-valuemax") else "ArrowRight"
            after_head = _press_and_wait_for_new_plot(page, head, key, after_seed)  # another head
            assert len({first, after_seed, after_head}) == 3
        finally:
            browser.close()

    assert page_errors == [], page_errors
    assert outside_requests == [], f"the page tried to reach the network: {outside_requests[:5]}"
