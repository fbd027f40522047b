import pytest
import torch
from torch import nn

from labkit import zoo

CALLS = []


def _build(meta):
    return nn.Linear(meta["n_in"], 1)


def _train():
    CALLS.append(1)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.fill_(0.5)
    return model, {"n_in": 3}


def test_trains_once_then_loads_from_cache(isolated_cache, capsys):
    zoo.register(zoo.Recipe("test-linear", "a test model", build=_build, train=_train), overwrite=True)
    CALLS.clear()
    first = zoo.load("test-linear")
    assert "training it now" in capsys.readouterr().out
    assert zoo.path("test-linear").is_file() and CALLS == [1]
    second = zoo.load("test-linear")
    assert CALLS == [1]  # not trained again
    assert torch.equal(second.weight, first.weight) and second.zoo_meta == {"n_in": 3}
    assert not second.training
    torch.load(zoo.path("test-linear"), weights_only=True)  # a plain state-dict checkpoint


def test_preseeded_zoo_dir_is_used(isolated_cache, tmp_path, monkeypatch):
    zoo.register(zoo.Recipe("test-seeded", "seeded", build=_build, train=_train), overwrite=True)
    seeded = tmp_path / "seed"
    (seeded / "zoo").mkdir(parents=True)
    model = nn.Linear(2, 1)
    torch.save({"model": model.state_dict(), "meta": {"n_in": 2}}, seeded / "zoo" / zoo.path("test-seeded").name)
    monkeypatch.setenv("LABKIT_DATA_DIR", str(seeded))
    CALLS.clear()
    loaded = zoo.load("test-seeded")
    assert CALLS == [] and torch.equal(loaded.weight, model.weight)


def test_unknown_name_lists_known():
    zoo.register(zoo.Recipe("test-known", "x", build=_build, train=_train), overwrite=True)
    with pytest.raises(KeyError, match="test-known"):
        zoo.load("nope")


def test_builtin_recipes_are_registered():
    assert "gpt-shakespeare" in zoo.available()
    assert zoo.path("gpt-shakespeare").name.startswith("gpt-shakespeare-v")
