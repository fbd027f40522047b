"""Sphinx configuration of the course website (`make site`): the saved notebooks, as they are, never re-executed.

tools/build_site.py prepares the pages in build/site-src (the notebooks with a line of links at the top and each
widget as the static picture of its default view; the README as the home page) and runs Sphinx on them with this
file. Everything the pages need ships with the Python packages (the theme, MathJax): nothing is fetched when the
site is built or read.
"""

import json
import os

SETTINGS = json.loads(os.environ.get("LAB_SITE_SETTINGS", "{}"))  # written by tools/build_site.py

project = "Foundation Models Lab"
author = "The Foundation Models Lab authors"
copyright = "2026, The Foundation Models Lab authors"
release = SETTINGS.get("version", "")

extensions = ["myst_nb", "sphinx-mathjax-offline"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
nb_execution_mode = "off"  # the saved outputs are the content
nb_ipywidgets_js = {}  # widgets are drawn as static pictures by tools/build_site.py: no widget scripts to fetch
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure", "myst.xref_missing"]

html_theme = "sphinx_book_theme"
html_title = "Foundation Models Lab"
html_static_path = ["_static"]
html_css_files = ["lab.css"]
html_favicon = "_static/favicon.png"  # a browser asks for one; without it, a 404 on every page
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    "repository_url": SETTINGS.get("repository", ""),
    "use_repository_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_context = {"default_mode": "light"}
