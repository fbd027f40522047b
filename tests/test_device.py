import contextlib

import pytest
import torch

from labkit import device as dev
from labkit import threads


def test_default_is_best_available(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    assert str(dev.get_device()) == dev.available_devices()[0]
    if not torch.cuda.is_available() and not dev._mps_available():
        assert dev.get_device().type == "cpu"


def test_env_override_and_prefer(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert dev.get_device() == torch.device("cpu")
    monkeypatch.setenv("LABKIT_DEVICE", " CPU ")
    assert dev.get_device() == torch.device("cpu")
    assert dev.get_device("cpu") == torch.device("cpu")


def test_unknown_name_is_clear_error(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"Unknown device 'tpu' \(from LABKIT_DEVICE\).*cpu"):
        dev.get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_device_lists_available(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    with pytest.raises(ValueError, match=r"'cuda:1'.*not available.*Available: .*cpu"):
        dev.get_device("cuda:1")
    with pytest.raises(ValueError, match="not available"):
        dev.get_device("cuda")


def test_seed_everything_repeats():
    import random

    import numpy as np

    dev.seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3))
    dev.seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_autocast_is_noop_on_cpu():
    assert dev.autocast_dtype("cpu") is None
    ctx = dev.autocast("cpu")
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_describe_prints_versions(capsys):
    info = dev.describe("cpu")
    out = capsys.readouterr().out
    assert info["torch"] == torch.__version__ and torch.__version__ in out and "cpu_threads" in out


def test_describe_reports_usable_cpus(capsys):
    info = dev.describe("cpu")
    assert info["usable_cpus"] == threads.usable_cpus() and "usable_cpus" in capsys.readouterr().out


def test_module_device_is_where_the_parameters_are():
    assert dev.module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert dev.module_device(torch.nn.Linear(2, 2).to("meta")) == torch.device("meta")
    assert dev.module_device(torch.nn.BatchNorm1d(2, affine=False).to("meta")) == torch.device("meta")  # buffers only
    assert dev.module_device(torch.nn.ReLU()) == torch.device("cpu")  # nothing to move: the CPU


def test_to_device_moves_every_tensor_and_keeps_the_containers():
    from typing import NamedTuple

    class Pair(NamedTuple):
        a: torch.Tensor
        b: int

    x = torch.ones(2)
    batch = (x, [torch.zeros(1), "text"], {"k": torch.arange(3)}, Pair(torch.ones(1), 7), None)
    moved = dev.to_device(batch, "meta")
    assert isinstance(moved, tuple) and isinstance(moved[1], list) and isinstance(moved[3], Pair)
    assert moved[0].device.type == moved[1][0].device.type == moved[2]["k"].device.type == "meta"
    assert moved[3].a.device.type == "meta" and moved[3].b == 7 and moved[1][1] == "text" and moved[4] is None
    assert dev.to_device(batch, "cpu")[0] is x  # already there: not copied
