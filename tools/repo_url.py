"""Where the lab is published, as ONE setting: ``[project.urls] Repository`` and ``version`` in pyproject.toml.

The Binder and Colab badges in README.md and the install cell at the top of every notebook must name that
repository and release literally (they run before the lab is installed). Each names the release tag
``v<version>``, never the moving ``main``: a notebook opened from a badge and the package its install cell
installs are the same release, and Colab learners get what was tested. This tool writes the setting into all of
them, or checks that they agree with it:

    python tools/repo_url.py            # rewrite README.md and notebooks/*.ipynb from pyproject.toml
    python tools/repo_url.py --check    # exit 1 and list every place that names another repository or release

To publish a release: set its version in pyproject.toml, run the first command, commit, and push the tag
v<version> (CONTRIBUTING.md). To publish the lab elsewhere: change Repository, then run the first command.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The three kinds of link the lab uses, each with the repository (owner/name) and the release it names
LINKS = [
    re.compile(r"mybinder\.org/v2/gh/(?P<repo>[\w.-]+/[\w.-]+)/(?P<ref>[\w.-]+)"),
    re.compile(r"colab\.research\.google\.com/github/(?P<repo>[\w.-]+/[\w.-]+)/blob/(?P<ref>[\w.-]+)/"),
    re.compile(r"git\+https://github\.com/(?P<repo>[\w.-]+/[\w.-]+?)(?:\.git)?(?:@(?P<ref>[\w.-]+))?(?=[\"'\\\s]|$)"),
    re.compile(r"git clone https://github\.com/(?P<repo>[\w.-]+/[\w.-]+?)\.git"),  # no release: a clone gets them all
    re.compile(r"repository-code: \"https://github\.com/(?P<repo>[\w.-]+/[\w.-]+?)\""),  # CITATION.cff
    re.compile(r"\nversion: (?P<ref>v?[\w.-]+)\n"),  # CITATION.cff's version (written without the v)
]


def _project() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def setting() -> str:
    """owner/name from pyproject.toml's [project.urls] Repository."""
    url = _project()["urls"]["Repository"]
    m = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)/?", url)
    if not m:
        raise SystemExit(f"pyproject.toml: Repository must look like https://github.com/OWNER/NAME, got {url!r}")
    return m.group(1)


def release() -> str:
    """The release tag the links name: v<version> from pyproject.toml."""
    return f"v{_project()['version']}"


def files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CITATION.cff", *sorted((ROOT / "notebooks").glob("*.ipynb"))]


def _groups(m: re.Match) -> tuple[str | None, str | None]:
    repo = m.group("repo") if "repo" in m.re.groupindex else None
    ref = m.group("ref") if "ref" in m.re.groupindex else None
    if ref is not None and m.group(0).startswith("\nversion"):
        ref = "v" + ref.lstrip("v")
    return repo, ref


def mentions(text: str) -> list[tuple[str | None, str | None]]:
    """(owner/name, release) of every link in ``text``; None where a link names only one of them."""
    return [_groups(m) for p in LINKS for m in p.finditer(text)]


def _agrees(found: tuple[str | None, str | None], repo: str, ref: str) -> bool:
    return found[0] in (None, repo) and found[1] in (None, ref)


def rewrite(text: str, repo: str, ref: str) -> str:
    def fix(m: re.Match) -> str:
        whole, start = m.group(0), m.start()
        spans = []  # (start, end, new text) inside the match
        if "repo" in m.re.groupindex:
            spans.append((m.start("repo") - start, m.end("repo") - start, repo))
        if "ref" in m.re.groupindex:
            new = ref[1:] if whole.startswith("\nversion") else ref
            if m.group("ref") is None:  # a pip URL without a release: add it
                spans.append((len(whole), len(whole), "@" + ref))
            else:
                spans.append((m.start("ref") - start, m.end("ref") - start, new))
        for a, b, new in sorted(spans, reverse=True):
            whole = whole[:a] + new + whole[b:]
        return whole

    for p in LINKS:
        text = p.sub(fix, text)
    return text


def main(argv: list[str]) -> int:
    repo, ref, check = setting(), release(), "--check" in argv
    wrong = []
    for path in files():
        text = path.read_text(encoding="utf-8")
        others = sorted({f"{r or repo}@{t or ref}" for r, t in mentions(text) if not _agrees((r, t), repo, ref)})
        if others and check:
            wrong.append(f"{path.relative_to(ROOT)}: {', '.join(others)}")
        elif others:
            path.write_text(rewrite(text, repo, ref), encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: now points to {repo} at {ref}")
    if wrong:
        print(f"These name another repository or release than the setting ({repo} at {ref}, pyproject.toml):\n  "
              + "\n  ".join(wrong) + "\nRun: python tools/repo_url.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
