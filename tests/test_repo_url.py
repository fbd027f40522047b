"""Where the lab is published is one setting (pyproject.toml's Repository and version); badges and install cells
name that repository and its release tag, never the moving main."""

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("repo_url", ROOT / "tools" / "repo_url.py")
repo_url = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repo_url)


def test_every_badge_and_install_cell_names_the_setting_and_release():
    assert repo_url.main(["--check"]) == 0
    names = [n for path in repo_url.files() for n in repo_url.mentions(path.read_text(encoding="utf-8"))]
    both = [n for n in names if None not in n]
    assert len(both) >= 2 * 17 and set(both) == {(repo_url.setting(), repo_url.release())}
    assert (repo_url.setting(), None) in names and (None, repo_url.release()) in names  # clone URL, CITATION.cff


def test_every_notebook_installs_the_lab_by_its_distribution_name():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first_code = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        source = "".join(first_code["source"])
        assert 'importlib.metadata.version("foundation-models-lab")' in source, path.name
        assert f'"foundation-models-lab @ git+https://github.com/{repo_url.setting()}@{repo_url.release()}"' in source


def test_a_changed_setting_is_written_everywhere_and_checked(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    text = (ROOT / "pyproject.toml").read_text().replace(
        "https://github.com/foundation-models-lab/lab", "https://github.com/a-school/fm-course")
    text = text.replace(f'version = "{repo_url.release()[1:]}"', 'version = "9.8.7"')
    (tmp_path / "pyproject.toml").write_text(text)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "CITATION.cff", tmp_path / "CITATION.cff")
    shutil.copy(ROOT / "notebooks" / "00_start_here.ipynb", tmp_path / "notebooks" / "00_start_here.ipynb")
    monkeypatch.setattr(repo_url, "ROOT", tmp_path)
    assert repo_url.main(["--check"]) == 1  # the copies still name the old repository and release
    assert repo_url.main([]) == 0 and repo_url.main(["--check"]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "mybinder.org/v2/gh/a-school/fm-course/v9.8.7" in readme and "foundation-models-lab/lab" not in readme
    citation = (tmp_path / "CITATION.cff").read_text()
    assert "\nversion: 9.8.7\n" in citation and 'repository-code: "https://github.com/a-school/fm-course"' in citation
    cells = json.loads((tmp_path / "notebooks" / "00_start_here.ipynb").read_text())["cells"]
    assert any("git+https://github.com/a-school/fm-course@v9.8.7\"" in "".join(c["source"]) for c in cells)


def test_a_pip_url_without_a_release_gets_one():
    text = 'pip install "foundation-models-lab @ git+https://github.com/x/y"'
    assert repo_url.rewrite(text, "x/y", "v1.0.0").endswith('git+https://github.com/x/y@v1.0.0"')
    assert repo_url.mentions('see git+https://github.com/x/y.git@main and more') == [("x/y", "main")]


def test_the_citation_names_this_release_and_repository():
    import yaml

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["title"] and citation["authors"]
    assert str(citation["version"]) == repo_url.release()[1:]
    assert citation["repository-code"] == f"https://github.com/{repo_url.setting()}"
