"""environment.yml (Binder/conda) must list the same packages, with the same ranges, as pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = meta["dependencies"] + meta["optional-dependencies"]["lab"]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def _environment_requirements() -> dict[str, Requirement]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    entries = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            entries += [d for d in dep["pip"] if not d.startswith("-")]
        elif not re.match(r"^(python|pip)\b", dep):
            entries.append(dep)
    return {Requirement(e.replace("=", "==", 1) if re.match(r"^[\w-]+=[^=<>]", e) else e).name.lower():
            Requirement(e) for e in entries}


def test_same_packages():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert set(py) == set(env), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"


def test_same_version_ranges():
    py, env = _pyproject_requirements(), _environment_requirements()
    for name, req in py.items():
        assert str(req.specifier) == str(env[name].specifier), f"{name}: pyproject {req.specifier} vs environment.yml {env[name].specifier}"


def test_environment_uses_cpu_torch_and_installs_labkit():
    text = (ROOT / "environment.yml").read_text()
    assert "download.pytorch.org/whl/cpu" in text
    assert "pip install --no-deps -e ." in (ROOT / "postBuild").read_text()


def test_constraints_pin_every_dependency():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for r in meta["dependencies"] + sum(meta["optional-dependencies"].values(), []):
        req = Requirement(r)
        assert req.name.lower() in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[req.name.lower()], prereleases=True), f"{req.name}=={pins[req.name.lower()]} is outside {req.specifier}"
