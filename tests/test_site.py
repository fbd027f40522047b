"""The course website (`make site`, tools/build_site.py) opened in a real browser, headless Chromium, with no network:
every page renders with no console error and no failed request, its images load, an offline attention view draws
its SVG, the search finds a term of a late notebook, and the sidebar lists the 17 notebooks in order. Also, without
a browser: a widget becomes the static picture of its default view.

`make test` builds the site before the browser tests; `make site` alone builds it (build/site).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "site"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
spec = importlib.util.spec_from_file_location("build_site", ROOT / "tools" / "build_site.py")
build_site = importlib.util.module_from_spec(spec)
sys.modules["build_site"] = build_site
spec.loader.exec_module(build_site)
NOTEBOOKS = [p.stem for p in build_site.notebooks()]


# ---- without a browser ------------------------------------------------------------------------------------------

def test_a_widget_becomes_its_default_view_and_a_progress_bar_disappears():
    nb = json.loads((ROOT / "notebooks" / "00_start_here.ipynb").read_text())
    state = nb["metadata"]["widgets"][build_site.WIDGET_STATE]["state"]
    views = [o for c in nb["cells"] for o in c.get("outputs", []) if build_site.WIDGET_VIEW in o.get("data", {})]
    kinds = {state[v["data"][build_site.WIDGET_VIEW]["model_id"]]["model_name"] for v in views}
    assert kinds == {"HBoxModel", "VBoxModel"}  # a progress bar, and the interactive curve fitter
    static = [build_site.static_widget(v, state) for v in views]
    bar = next(s for v, s in zip(views, static)
               if state[v["data"][build_site.WIDGET_VIEW]["model_id"]]["model_name"] == "HBoxModel")
    fitter = next(s for s in static if s)
    assert bar == []
    note = fitter[0]["data"]["text/html"]
    assert "live when you run the notebook" in note and "hidden = 4, steps = 100" in note  # the sliders' defaults
    assert [o["output_type"] for o in fitter[1:]] == ["display_data"] and "image/png" in fitter[1]["data"]


def test_every_notebook_page_links_to_colab_binder_and_the_notebook():
    repo, tag = build_site.repo_url.setting(), build_site.repo_url.release()
    nb = build_site.prepare_notebook(ROOT / "notebooks" / "07_translation_transformer.ipynb", repo, tag)
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# 07 · ") and "Expected run time" in first
    assert f"colab.research.google.com/github/{repo}/blob/{tag}/notebooks/07_translation_transformer.ipynb" in first
    assert f"mybinder.org/v2/gh/{repo}/{tag}?urlpath=lab/tree/notebooks/07_translation_transformer.ipynb" in first
    assert "widgets" not in nb["metadata"]


# ---- in a browser ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site_url():
    if not (SITE / "index.html").is_file():
        pytest.skip("the site is not built: run `make site` (make test does)")
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(type("Quiet", (SimpleHTTPRequestHandler,),
                                                        {"log_message": lambda *a: None}), directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: make test installs Debian's chromium when it is root with apt")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


def _open(browser, url: str):
    """A page at ``url``, with the console errors and failed or non-local requests it met."""
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("request", lambda r: problems.append(f"request to another host: {r.url}")
            if not r.url.startswith(("http://127.0.0.1", "data:", "blob:", "about:")) else None)
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    return page, problems


@pytest.mark.browser
@pytest.mark.parametrize("path", ["index.html", *[f"notebooks/{n}.html" for n in NOTEBOOKS]])
def test_every_page_renders_without_errors_and_its_images_load(browser, site_url, path):
    page, problems = _open(browser, f"{site_url}/{path}")
    try:
        assert problems == []
        broken = page.evaluate("""() => Array.from(document.images)
            .filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src)""")
        assert broken == []
        if path != "index.html":
            assert page.locator("article h1").first.inner_text().startswith(path[10:12] + " ")
            assert page.locator(".lab-links a", has_text="Open in Colab").count() == 1
            assert page.locator("article img").count() >= 1  # every notebook has at least one plot
        if path == "notebooks/02_positional_encoding.html":  # equations are typeset (MathJax, served locally)
            page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 10", timeout=20_000)
    finally:
        page.close()


@pytest.mark.browser
def test_an_offline_attention_view_draws_its_svg(browser, site_url):
    page, problems = _open(browser, f"{site_url}/notebooks/04_multi_head_attention.html")
    try:
        page.wait_for_function("""() => Array.from(document.querySelectorAll('[id^="labkit-bertviz-"]'))
            .some(root => root.querySelectorAll('svg rect, svg line').length > 10)""", timeout=20_000)
        assert problems == []
    finally:
        page.close()


@pytest.mark.browser
def test_the_sidebar_lists_the_notebooks_in_order(browser, site_url):
    page, _ = _open(browser, f"{site_url}/index.html")
    try:
        hrefs = page.evaluate("""() => Array.from(document.querySelectorAll('.bd-sidebar-primary nav a.reference'))
            .map(a => a.getAttribute('href'))""")
        listed = [h.split("/")[-1].replace(".html", "") for h in hrefs if "notebooks/" in h]
        assert listed == NOTEBOOKS and len(listed) == 17
    finally:
        page.close()


@pytest.mark.browser
def test_the_search_finds_a_term_of_a_late_notebook(browser, site_url):
    page, problems = _open(browser, f"{site_url}/search.html?q=FlashAttention")
    try:
        page.wait_for_selector("#search-results ul.search li", timeout=20_000)
        found = page.evaluate("""() => Array.from(document.querySelectorAll('#search-results ul.search li a'))
            .map(a => a.getAttribute('href'))""")
        assert any("16_scaling_up" in h for h in found), found
        assert problems == []
    finally:
        page.close()


def test_the_publishing_workflow_builds_with_the_site_extra():
    import tomllib

    import yaml
    from packaging.requirements import Requirement

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "site.yml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    install = next(s["run"] for s in steps if "run" in s and "sphinx" in s["run"])
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["site"]
    assert {Requirement(r).name for r in extra} <= set(install.split()) and "-c constraints.txt" in install
    assert any("tools/build_site.py" in s.get("run", "") for s in steps)
    assert workflow["jobs"]["deploy"]["steps"][0]["uses"].startswith("actions/deploy-pages")
