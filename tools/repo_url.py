"""The repository the lab is published at, as ONE setting: ``[project.urls] Repository`` in pyproject.toml.

The Binder and Colab badges in README.md and the install cell at the top of every notebook must name
that repository literally (they run before labkit is installed). This tool writes the setting into
all of them, or checks that they agree with it:

    python tools/repo_url.py            # rewrite README.md and notebooks/*.ipynb from pyproject.toml
    python tools/repo_url.py --check    # exit 1 and list every place that names another repository

To publish the lab elsewhere: change the setting in pyproject.toml, then run the first command.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# owner/name inside the three kinds of link the lab uses (Binder, Colab, pip install from git)
PATTERNS = [
    re.compile(r"(mybinder\.org/v2/gh/)([\w.-]+/[\w.-]+)(/)"),
    re.compile(r"(colab\.research\.google\.com/github/)([\w.-]+/[\w.-]+)(/blob/)"),
    re.compile(r"(git\+https://github\.com/)([\w.-]+/[\w.-]+?)(\.git)?(?=[\"'\\@\s]|$)"),
]


def setting() -> str:
    """owner/name from pyproject.toml's [project.urls] Repository."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    m = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)/?", url)
    if not m:
        raise SystemExit(f"pyproject.toml: Repository must look like https://github.com/OWNER/NAME, got {url!r}")
    return m.group(1)


def files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "notebooks").glob("*.ipynb"))]


def mentions(text: str) -> list[str]:
    """Every owner/name the links in ``text`` point to."""
    return [m.group(2) for p in PATTERNS for m in p.finditer(text)]


def rewrite(text: str, repo: str) -> str:
    for p in PATTERNS:
        text = p.sub(lambda m: m.group(1) + repo + (m.group(3) or ""), text)
    return text


def main(argv: list[str]) -> int:
    repo, check = setting(), "--check" in argv
    wrong = []
    for path in files():
        text = path.read_text(encoding="utf-8")
        others = sorted({r for r in mentions(text) if r != repo})
        if others and check:
            wrong.append(f"{path.relative_to(ROOT)}: {', '.join(others)}")
        elif others:
            path.write_text(rewrite(text, repo), encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: now points to {repo}")
    if wrong:
        print(f"These name another repository than the setting ({repo}, pyproject.toml [project.urls]):\n  "
              + "\n  ".join(wrong) + "\nRun: python tools/repo_url.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
