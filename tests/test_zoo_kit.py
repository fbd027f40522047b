"""The zoo's checksums and the classroom kit (labkit.zoo, labkit.zoo.kit, python -m labkit.zoo): damaged files are
named and never loaded, a retrain replaces a bad pre-seeded copy, and a kit packs and unpacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_fixtures import TRAINED, build, train

from labkit import data, zoo
from labkit._io import sha256sum
from labkit.zoo import kit


def _flip_a_byte(file: Path) -> None:
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    file.write_bytes(bytes(raw))


# ---- checksums ------------------------------------------------------------------------------------------------

def test_every_saved_checkpoint_is_in_the_manifest_with_where_and_how_long(zoo_cache):
    model = zoo.load("kit-a")
    entry = zoo.manifest(zoo.path("kit-a").parent)[zoo.path("kit-a").name]
    assert entry["sha256"] == sha256sum(zoo.path("kit-a")) and entry["bytes"] == zoo.path("kit-a").stat().st_size
    assert entry["trained_on"].startswith("cpu") and entry["seconds"] >= 0 and entry["name"] == "kit-a"
    assert model.zoo_source == "trained" and zoo.load("kit-a").zoo_source == "cache" and TRAINED == [0.5]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cached_checkpoint_is_named_and_retrained(zoo_cache, capsys, damage):
    zoo.load("kit-a")
    file = zoo.path("kit-a")
    if damage == "truncate":
        file.write_bytes(file.read_bytes()[:100])
    else:
        _flip_a_byte(file)
    capsys.readouterr()
    assert zoo.find("kit-a") is None
    model = zoo.load("kit-a")
    out = capsys.readouterr().out
    assert f"Not loading {file}" in out and ("truncated" in out if damage == "truncate" else "damaged" in out)
    assert "training it now" in out and model.zoo_source == "trained" and TRAINED == [0.5, 0.5]
    assert zoo.check(file) is None  # the retrained file replaced the bad one, and matches its manifest


def test_a_retrain_replaces_a_bad_pre_seeded_copy_rather_than_hiding_behind_it(zoo_cache, tmp_path, monkeypatch, capsys):
    zoo.load("kit-a")
    seeded = tmp_path / "kit"
    (seeded / "zoo").mkdir(parents=True)
    for f in (zoo.path("kit-a"), zoo.path("kit-a").parent / zoo.MANIFEST):
        (seeded / "zoo" / f.name).write_bytes(f.read_bytes())
    _flip_a_byte(seeded / "zoo" / zoo.path("kit-a").name)
    zoo.path("kit-a").unlink()
    monkeypatch.setenv("LABKIT_DATA_DIR", str(seeded))
    capsys.readouterr()
    model = zoo.load("kit-a")  # the bad pre-seeded copy is skipped, with its name, and a good one trained
    assert f"Not loading {seeded / 'zoo' / zoo.path('kit-a').name}" in capsys.readouterr().out
    assert model.zoo_source == "trained" and zoo.find("kit-a") == zoo.path("kit-a")
    assert zoo.load("kit-a").zoo_source == "cache"  # and the next load takes the good copy


def test_a_good_pre_seeded_copy_is_used_without_training(zoo_cache, tmp_path, monkeypatch):
    zoo.load("kit-a")
    seeded = tmp_path / "kit"
    kit.pack(seeded, ["kit-a"])
    zoo.path("kit-a").unlink()
    monkeypatch.setenv("LABKIT_DATA_DIR", str(seeded))
    assert zoo.load("kit-a").zoo_source == "pre-seeded" and TRAINED == [0.5]


def test_a_checkpoint_from_before_manifests_is_loaded_and_then_recorded(zoo_cache):
    zoo.path("kit-a").parent.mkdir(parents=True)
    torch.save({"model": nn.Linear(3, 1).state_dict(), "meta": {"n_in": 3}}, zoo.path("kit-a"))
    assert zoo.load("kit-a").zoo_source == "cache" and TRAINED == []
    assert zoo.path("kit-a").name in zoo.manifest(zoo.path("kit-a").parent)


def test_an_unlisted_file_that_does_not_load_is_named_and_retrained(zoo_cache, capsys):
    zoo.path("kit-a").parent.mkdir(parents=True)
    zoo.path("kit-a").write_bytes(b"not a checkpoint")
    assert zoo.load("kit-a").zoo_source == "trained"
    assert "it does not load" in capsys.readouterr().out


# ---- dependency order, list and verify ----------------------------------------------------------------------

def test_models_are_built_after_what_they_need(zoo_cache):
    assert zoo.order(["kit-b"]) == ["kit-a", "kit-b"]
    assert zoo.order()[:0] == [] and zoo.order().index("gpt-english") < zoo.order().index("gpt-english-sft")
    assert zoo.order().index("clip-digits") < zoo.order().index("ddpm-text-digits")
    assert [name for name, _ in kit.build(["kit-b"], progress=False)] == ["kit-a", "kit-b"]
    zoo.register(zoo.Recipe("kit-loop", "x", build=build, train=train, needs=("kit-loop",)), overwrite=True)
    with pytest.raises(ValueError, match="need each other: kit-loop -> kit-loop"):
        zoo.order(["kit-loop"])


def test_verify_reports_each_bad_file(zoo_cache):
    kit.build(["kit-b"], progress=False)
    assert all(reason is None for f, reason in kit.verify() if f.name.startswith("kit-"))
    _flip_a_byte(zoo.path("kit-b"))
    bad = {f.name: reason for f, reason in kit.verify() if reason is not None}
    assert list(bad) == [zoo.path("kit-b").name] and "damaged" in bad[zoo.path("kit-b").name]


def _cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "labkit.zoo", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_the_command_line_lists_and_verifies(tmp_path):
    env = {"LABKIT_CACHE_DIR": str(tmp_path / "cache"), "LABKIT_KIT_URL": "off"}
    listed = _cli("list", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    assert "gpt-english-sft" in listed.stdout and "0 of 9 built" in listed.stdout
    lines = listed.stdout.splitlines()
    assert next(i for i, l in enumerate(lines) if l.startswith("gpt-english ")) < \
        next(i for i, l in enumerate(lines) if l.startswith("gpt-english-sft"))
    verified = _cli("verify", env_extra=env)
    assert verified.returncode == 0 and "No checkpoints built yet" in verified.stdout
    assert _cli("build", env_extra=env).returncode == 2  # neither names nor --all: a usage error


def test_a_checkpoint_is_saved_for_the_cpu_and_loads_onto_the_device_asked_for(zoo_cache):
    trained = zoo.load("kit-a")  # trained here, on the CPU
    saved = torch.load(zoo.path("kit-a"), weights_only=True)["model"]
    assert all(t.device.type == "cpu" for t in saved.values())  # loadable on a machine without a GPU
    moved = zoo.load("kit-a", device="meta")  # any other device: the same file, moved there on load
    assert next(moved.parameters()).device.type == "meta" and next(trained.parameters()).device.type == "cpu"
    assert moved.zoo_source == "cache"


def test_list_says_where_and_how_long_each_built_copy_trained(zoo_cache, capsys):
    from labkit.zoo.__main__ import main

    kit.build(["kit-a"], progress=False)
    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("kit-")}
    entry = zoo.manifest(zoo.path("kit-a").parent)[zoo.path("kit-a").name]
    assert rows["kit-a"].endswith(f"{entry['seconds']:.0f} s on {entry['trained_on']}")
    assert entry["trained_on"].startswith("cpu: ") and rows["kit-b"].endswith(" -")  # not built: nothing to say


# ---- the kit: pack, unpack ------------------------------------------------------------------------------------

def test_pack_then_unpack_into_an_empty_cache_starts_without_training(zoo_cache, tmp_path, monkeypatch):
    kit.build(["kit-b"], progress=False)
    archive = kit.pack(tmp_path / "kit.tar", ["kit-b"])
    index = json.loads((tmp_path / "kit" / kit.KIT_INDEX).read_text())
    assert {"tinyshakespeare.txt", "zoo/" + zoo.path("kit-a").name, "zoo/" + zoo.path("kit-b").name} <= set(index["files"])
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "learner"))
    monkeypatch.delenv("LABKIT_DATA_DIR", raising=False)
    TRAINED.clear()
    kit.unpack(archive)
    assert zoo.load("kit-b").zoo_source == "cache" and TRAINED == []
    assert data.fetch("tinyshakespeare", progress=False) == tmp_path / "learner" / "tinyshakespeare.txt"
    assert not list((tmp_path / "learner").glob(".unpack-*"))


def test_pack_says_what_to_build_first(zoo_cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m labkit.zoo build kit-a"):
        kit.pack(tmp_path / "kit", ["kit-a"])


def test_a_damaged_kit_is_refused_before_anything_is_copied(zoo_cache, tmp_path, monkeypatch):
    kit.build(["kit-a"], progress=False)
    folder = kit.pack(tmp_path / "kit", ["kit-a"])
    _flip_a_byte(folder / "zoo" / zoo.path("kit-a").name)
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "learner"))
    with pytest.raises(ValueError, match="damaged"):
        kit.unpack(folder)
    assert not (tmp_path / "learner" / "zoo").exists()
