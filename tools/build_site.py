"""Build the course website from the saved notebooks, without executing anything: `make site`.

    python tools/build_site.py                # build/site/index.html and one page per notebook
    python tools/build_site.py --out DIR      # somewhere else

The pages are the notebooks as saved (prose, code, text outputs, plots, the offline attention views), in order,
with a sidebar, rendered equations and a search box; the home page is the README. Each notebook page starts with
its links (Colab, Binder, the .ipynb file); its goal and run time are its first cell. A widget, which needs a
running kernel, is shown as the static picture of its default view (what its output area showed when the
notebook was saved) with its controls' default values and a line saying that it is live when the notebook runs.
Nothing is fetched while building or reading the site: the theme and MathJax come with the Python packages.
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import repo_url  # noqa: E402  (the one repository setting, and the release tag)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CONTROLS = {  # model name -> how its default value reads
    "IntSliderModel", "FloatSliderModel", "FloatLogSliderModel", "IntRangeSliderModel", "FloatRangeSliderModel",
    "DropdownModel", "SelectModel", "RadioButtonsModel", "ToggleButtonsModel", "TextModel", "TextareaModel",
    "CheckboxModel", "ToggleButtonModel", "IntTextModel", "FloatTextModel", "BoundedIntTextModel",
    "BoundedFloatTextModel", "SelectionSliderModel", "ComboboxModel",
}


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _model(state: dict, ref: str) -> dict | None:
    return state.get(ref.replace("IPY_MODEL_", ""))


def _control_text(model: dict) -> str | None:
    s = model["state"]
    name = model["model_name"]
    if name not in CONTROLS:
        return None
    value = s.get("value")
    if "_options_labels" in s and isinstance(s.get("index"), int):
        value = s["_options_labels"][s["index"]]
    label = s.get("description") or name.replace("Model", "").lower()
    return f"{label} = {value!r}" if isinstance(value, str) else f"{label} = {value}"


def _walk(state: dict, model: dict, controls: list[str], outputs: list[dict], html_parts: list[str]) -> bool:
    """Collect a widget tree's controls, output areas and HTML; False for a progress bar (shown by its text)."""
    name, s = model["model_name"], model["state"]
    if name == "FloatProgressModel" or name == "IntProgressModel":
        return False
    if name == "OutputModel":
        outputs.extend(copy.deepcopy(s.get("outputs", [])))
    elif name in ("HTMLModel", "HTMLMathModel") and s.get("value"):
        html_parts.append(s["value"])
    elif name == "LabelModel" and s.get("value"):
        html_parts.append(html.escape(s["value"]))
    elif name == "ButtonModel":
        controls.append(f"[{s.get('description', 'button')}]")
    elif (text := _control_text(model)) is not None:
        controls.append(text)
    for ref in s.get("children", []):
        child = _model(state, ref)
        if child is not None and not _walk(state, child, controls, outputs, html_parts):
            return False
    return True


def static_widget(output: dict, state: dict) -> list[dict]:
    """The outputs that stand for one widget: its default view, or nothing for a progress bar."""
    model = _model(state, output["data"][WIDGET_VIEW]["model_id"])
    if model is None:  # no saved state: only its text remains
        return []
    controls, outputs, html_parts = [], [], []
    if not _walk(state, model, controls, outputs, html_parts):
        return []  # a progress bar: the summary line printed after it says what it showed
    note = ("<div class='lab-widget-note'>An interactive widget: it is live when you run the notebook. Here, its "
            "default view" + (":" if controls else ".") + "</div>")
    if controls:
        note += "<div class='lab-widget-controls'>" + html.escape(", ".join(controls)) + "</div>"
    body = "".join(f"<div>{part}</div>" for part in html_parts)
    head = {"output_type": "display_data", "metadata": {},
            "data": {"text/html": f"<div class='lab-widget'>{note}{body}</div>"}}
    return [head, *outputs]


def prepare_notebook(path: Path, repo: str, tag: str) -> dict:
    nb = json.loads(path.read_text(encoding="utf-8"))
    state = nb.get("metadata", {}).pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        new = []
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                new.extend(static_widget(output, state))
            else:
                new.append(output)
        cell["outputs"] = new
    links = (f"<div class='lab-links'>"
             f"<a href='https://colab.research.google.com/github/{repo}/blob/{tag}/notebooks/{path.name}'>Open in Colab</a>"
             f"<a href='https://mybinder.org/v2/gh/{repo}/{tag}?urlpath=lab/tree/notebooks/{path.name}'>Open in Binder</a>"
             f"<a href='https://github.com/{repo}/blob/{tag}/notebooks/{path.name}'>The notebook on GitHub</a>"
             f"</div>")
    first = nb["cells"][0]
    source = "".join(first["source"])
    title, _, rest = source.partition("\n")  # the "# NN · title" line, then the links, then the goal
    first["source"] = f"{title}\n\n{links}\n{rest}".splitlines(True)
    return nb


def home_page(repo: str, tag: str) -> str:
    """The README, its links to other files of the repository pointing at them on GitHub, without the badge
    pictures (they come from other hosts), and the series as the site's table of contents."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"\[!\[([^\]]*)\]\([^)]*\)\]\(([^)]*)\)", r"[\1](\2)", text)  # badge pictures -> plain links

    def link(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"[a-z]+://|#|mailto:", target) or target.startswith("notebooks/"):
            return m.group(0)
        return f"{m.group(1)}(https://github.com/{repo}/blob/{tag}/{target})"

    text = re.sub(r"(\[[^\]]*\])\(([^)]+)\)", link, text)
    toc = "\n".join(f"notebooks/{p.stem}" for p in notebooks())
    return text + f"\n\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n:caption: The notebooks\n\n{toc}\n```\n"


def build(out: Path, src: Path) -> float:
    repo, tag = repo_url.setting(), repo_url.release()
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "site" / "conf.py", src / "conf.py")
    shutil.copytree(ROOT / "site" / "_static", src / "_static")
    (src / "index.md").write_text(home_page(repo, tag), encoding="utf-8")
    for path in notebooks():
        nb = prepare_notebook(path, repo, tag)
        (src / "notebooks" / path.name).write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "LAB_SITE_SETTINGS": json.dumps(
        {"repository": f"https://github.com/{repo}", "version": tag})}
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-d", str(src / "_doctrees"),
                    str(src), str(out)], check=True, env=env)
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    args = ap.parse_args(argv)
    seconds = build(args.out, ROOT / "build" / "site-src")
    pages = len(list(args.out.rglob("*.html")))
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 1e6
    print(f"site built in {seconds:.0f} s: {args.out}/index.html ({pages} pages, {size:.0f} MB). To read it: "
          f"python -m http.server -d {args.out} 8000, then open http://127.0.0.1:8000")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
