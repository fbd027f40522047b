import importlib

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


def test_builtin_list_is_the_recipes_package():
    from labkit import recipes

    names = zoo.available()
    assert set(names) >= {r.name for r in recipes.recipes().values()} >= {"gpt-shakespeare", "bert-english"}
    for module in recipes.RECIPE_MODULES:  # each declares one recipe whose functions live in its own module
        r = importlib.import_module(f"labkit.recipes.{module}").RECIPE
        assert r.train.startswith(f"labkit.recipes.{module}:") and r.build.startswith(f"labkit.recipes.{module}:")
    assert zoo._recipe("bert-english").train.startswith("labkit.recipes.bert_english:")
    assert zoo._resolve(zoo._recipe("gpt-shakespeare").build).__module__ == "labkit.recipes.gpt_shakespeare"


def test_find_says_which_checkpoint_load_would_use(isolated_cache, tmp_path, monkeypatch):
    zoo.register(zoo.Recipe("test-find", "find", build=_build, train=_train), overwrite=True)
    assert zoo.find("test-find") is None
    cached = zoo.save("test-find", nn.Linear(3, 1), {"n_in": 3})
    assert zoo.find("test-find") == cached == zoo.path("test-find")
    seeded = tmp_path / "seed"
    (seeded / "zoo").mkdir(parents=True)
    torch.save({"model": nn.Linear(2, 1).state_dict(), "meta": {"n_in": 2}}, seeded / "zoo" / cached.name)
    monkeypatch.setenv("LABKIT_DATA_DIR", str(seeded))
    assert zoo.find("test-find") == cached  # the cache comes first: a model retrained here wins over a kit's
    cached.unlink()
    assert zoo.find("test-find") == seeded / "zoo" / cached.name  # then the pre-seeded copy
    assert zoo.load("test-find").zoo_meta == {"n_in": 2}


def test_a_failed_save_keeps_the_previous_checkpoint(isolated_cache, monkeypatch):
    zoo.register(zoo.Recipe("test-atomic", "atomic", build=_build, train=_train), overwrite=True)
    zoo.save("test-atomic", nn.Linear(3, 1), {"n_in": 3})

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    with monkeypatch.context() as m, pytest.raises(OSError):
        m.setattr(torch, "save", broken_save)
        zoo.save("test-atomic", nn.Linear(3, 1), {"n_in": 3, "newer": True})
    assert torch.load(zoo.path("test-atomic"), weights_only=True)["meta"] == {"n_in": 3}
    files = sorted(p.name for p in zoo.path("test-atomic").parent.iterdir())
    assert files == [zoo.MANIFEST, zoo.MANIFEST + ".lock", zoo.path("test-atomic").name]  # no half-written file
    assert zoo.check(zoo.path("test-atomic")) is None  # and the manifest still describes the file that is there


_TWO_PROCESSES = r"""
import sys, time
import torch
from torch import nn
from labkit import zoo

calls = sys.argv[1]

def train():
    with open(calls, "a") as f:  # count the trainings
        f.write("trained\n")
    time.sleep(1.5)  # long enough for the other process to arrive and find no checkpoint
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.fill_(0.25)
    return model, {"n_in": 3}

zoo.register(zoo.Recipe("test-locked", "two processes", build=lambda meta: nn.Linear(meta["n_in"], 1),
                        train=train), overwrite=True)
model = zoo.load("test-locked")
print("weight", model.weight.sum().item(), flush=True)
"""


def test_two_processes_train_once(isolated_cache, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "load.py"
    script.write_text(_TWO_PROCESSES)
    calls = tmp_path / "calls.txt"
    env = {**__import__("os").environ, "LABKIT_CACHE_DIR": str(isolated_cache)}
    procs = [subprocess.Popen([sys.executable, str(script), str(calls)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert calls.read_text().count("trained") == 1  # one trained; the other waited, then loaded
    assert all("weight 0.75" in out for out, _ in outs)  # both got the trained model
    waited = [out for out, _ in outs if "waiting for it to finish" in out]
    assert len(waited) == 1
    assert (isolated_cache / "zoo").is_dir() and not list((isolated_cache / "zoo").glob("*.tmp"))


_HOLDER = r"""
import sys, time
from pathlib import Path
from labkit import zoo

with zoo._lock(Path(sys.argv[1]), "test-killed"):
    print("holding", flush=True)
    time.sleep(600)  # a kernel training a model, until it is killed
"""


def test_a_lock_whose_holder_was_killed_is_taken_at_once(tmp_path):
    """A kernel killed mid-training (Jupyter's "restart", a closed laptop) leaves the lock file, not the lock."""
    import signal
    import subprocess
    import sys
    import time

    from filelock import FileLock, Timeout

    target = tmp_path / "zoo" / "test-killed-v1.pt"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        lock_file = target.with_name(target.name + ".lock")
        with pytest.raises(Timeout):  # held while its holder lives
            FileLock(lock_file).acquire(timeout=0.5)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert lock_file.exists()  # the killed process could not clean up
        t0 = time.perf_counter()
        with zoo._lock(target, "test-killed"):
            pass
        assert time.perf_counter() - t0 < 2.0
    finally:
        holder.kill()


def test_saved_files_are_readable_by_others_as_the_umask_allows(isolated_cache):
    import os
    import stat

    zoo.register(zoo.Recipe("test-mode", "mode", build=_build, train=_train), overwrite=True)
    old = os.umask(0o022)
    try:
        mode = stat.S_IMODE(zoo.save("test-mode", nn.Linear(3, 1), {"n_in": 3}).stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o644  # a learner sharing the folder can load it (mkstemp alone would give 0600)
