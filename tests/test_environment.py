"""labkit.environment: the environment check of notebook 00 finds each problem a learner meets and says what to do."""

import importlib.metadata as metadata

import pytest

import labkit
from labkit import environment


def _by_what(checks):
    return {c.what: c for c in checks}


def test_this_environment_is_ready():
    checks = environment.check_environment(network=False, show=False)
    assert [c for c in checks if c.status == "problem"] == []
    found = _by_what(checks)
    assert found["the lab's package"].found == f"foundation-models-lab {labkit.__version__}"
    assert {"torch", "transformers", "filelock", "cache", "device", "Hugging Face hub"} <= set(found)


def test_the_package_version_is_the_distributions():
    assert labkit.__version__ == metadata.version("foundation-models-lab")


def test_a_missing_or_too_old_dependency_is_a_problem_with_the_install_command(monkeypatch):
    real_requires, real_version = metadata.requires, metadata.version
    monkeypatch.setattr(metadata, "requires", lambda name: real_requires(name) + ["not-a-real-package>=1"])
    monkeypatch.setattr(metadata, "version",
                        lambda name: "1.20.0" if name == "numpy" else real_version(name))
    found = _by_what(environment.check_environment(network=False, show=False))
    assert found["not-a-real-package"].status == "problem" and "pip install" in found["not-a-real-package"].advice
    assert found["numpy"].status == "problem" and ">=1.26" in found["numpy"].advice


def test_a_torch_newer_than_tested_is_a_warning(monkeypatch):
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "2.20.0+cu130" if name == "torch" else real_version(name))
    torch_check = _by_what(environment.check_environment(network=False, show=False))["torch"]
    assert torch_check.status == "warning" and "torch==2.13.0" in torch_check.advice


def test_an_unrelated_labkit_is_caught(monkeypatch):
    monkeypatch.setattr(labkit, "__version__", "0.0.3.dev11")
    check = _by_what(environment.check_environment(network=False, show=False))["import labkit"]
    assert check.status == "problem" and "pip uninstall labkit" in check.advice


def test_an_unwritable_cache_is_a_problem(monkeypatch, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(not_a_folder / "cache"))
    check = _by_what(environment.check_environment(network=False, show=False))["cache"]
    assert check.status == "problem" and "LABKIT_CACHE_DIR" in check.advice


def test_data_is_found_pre_seeded_or_else_the_learner_is_told_how(monkeypatch, isolated_cache, capsys):
    monkeypatch.setattr(environment, "_reachable", lambda url, timeout: False)
    checks = _by_what(environment.check_environment(show=True))
    check = checks["data: tinyshakespeare"]
    assert check.status == "warning" and "LABKIT_DATA_DIR" in check.advice
    assert "-> copy tinyshakespeare.txt into a folder" in capsys.readouterr().out
    monkeypatch.setattr(environment, "_reachable", lambda url, timeout: True)
    assert _by_what(environment.check_environment(show=False))["data: tinyshakespeare"].found.startswith("downloadable")


@pytest.mark.parametrize("variable, value", [("LABKIT_HUB", "sometimes"), ("LABKIT_DEVICE", "tpu")])
def test_a_bad_setting_is_a_problem(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    checks = environment.check_environment(network=False, show=False)
    bad = [c for c in checks if c.status == "problem"]
    assert len(bad) == 1 and bad[0].found == value
