"""The repository URL is one setting (pyproject.toml); badges and install cells follow it."""

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("repo_url", ROOT / "tools" / "repo_url.py")
repo_url = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repo_url)


def test_every_badge_and_install_cell_names_the_setting():
    assert repo_url.main(["--check"]) == 0
    names = [n for path in repo_url.files() for n in repo_url.mentions(path.read_text(encoding="utf-8"))]
    assert len(names) >= 10 and set(names) == {repo_url.setting()}  # README badges + notebook install cells


def test_a_changed_setting_is_written_everywhere_and_checked(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    text = (ROOT / "pyproject.toml").read_text().replace(
        "https://github.com/foundation-models-lab/lab", "https://github.com/a-school/fm-course")
    (tmp_path / "pyproject.toml").write_text(text)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "notebooks" / "00_start_here.ipynb", tmp_path / "notebooks" / "00_start_here.ipynb")
    monkeypatch.setattr(repo_url, "ROOT", tmp_path)
    assert repo_url.main(["--check"]) == 1  # the copies still name the old repository
    assert repo_url.main([]) == 0 and repo_url.main(["--check"]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "mybinder.org/v2/gh/a-school/fm-course/" in readme and "foundation-models-lab" not in readme
    cells = json.loads((tmp_path / "notebooks" / "00_start_here.ipynb").read_text())["cells"]
    assert any("git+https://github.com/a-school/fm-course" in "".join(c["source"]) for c in cells)
