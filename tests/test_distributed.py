"""Data and model parallel training with PyTorch's own engine on 2 gloo processes on the CPU: DDP and FSDP
(``fully_shard``) end with the same parameters as one process that sees the doubled batch, and their
checkpoints load in a single process with ``weights_only=True``."""

import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from labkit import distributed
from labkit.train import load_checkpoint, save_checkpoint

STEPS, BATCH, WORLD = 5, 6, 2  # BATCH messages per rank


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 4)).double()


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(WORLD * BATCH, 8, generator=g, dtype=torch.float64), torch.randn(WORLD * BATCH, 4, generator=g, dtype=torch.float64)


def train_steps(model, rank: int = 0, world: int = 1) -> None:
    # SGD with momentum: its step is proportional to the gradient, so a sum where DDP should average would show
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    per_rank = WORLD * BATCH // world
    for step in range(STEPS):
        x, y = global_batch(step)
        x, y = x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]
        F.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _worker(rank: int, port: int, mode: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    r, world, device = distributed.setup()
    assert (r, world, device.type) == (rank, WORLD, "cpu") and distributed.is_main() == (rank == 0)
    model = make_model()
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model)
        train_steps(wrapped, r, world)
        if distributed.is_main():
            save_checkpoint(out, wrapped)  # unwraps DDP's .module
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        # each rank holds only its shard of every weight
        w = model[0].weight
        assert w.to_local().shape[0] == w.shape[0] // world
        train_steps(model, r, world)
        # the full (gathered) state dict, on rank 0, in a plain model
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if distributed.is_main():
            plain = make_model()
            plain.load_state_dict(state)
            save_checkpoint(out, plain)
    probe = torch.tensor([float(rank)])
    assert distributed.all_reduce_mean(probe).item() == pytest.approx((WORLD - 1) / 2)
    distributed.cleanup()


@pytest.fixture(scope="module")
def single_process_params():
    model = make_model()
    train_steps(model)
    return model.state_dict()


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_doubled_batch(tmp_path, single_process_params, mode):
    out = str(tmp_path / f"{mode}.pt")
    mp.spawn(_worker, args=(distributed.free_port(), mode, out), nprocs=WORLD, join=True)
    fresh = make_model()
    load_checkpoint(out, fresh)  # a checkpoint written under DDP/FSDP loads in one process (weights_only=True)
    initial = make_model().state_dict()
    for name, p in fresh.state_dict().items():
        assert not torch.equal(p, initial[name])  # it trained
        assert torch.allclose(p, single_process_params[name], atol=1e-10, rtol=0), name


def test_single_process_fallback():
    assert not distributed.is_distributed()
    assert distributed.setup()[:2] == (0, 1) and distributed.is_main()
    t = torch.ones(3)
    assert torch.equal(distributed.all_reduce_mean(t), torch.ones(3))
    distributed.cleanup()


def test_commands_run_as_argument_lists_with_a_space_in_the_path(tmp_path):
    """Notebook 16's launcher: `python -m labkit.scripts.pretrain ... --out <dir>` and torchrun with 2 processes, into a
    folder whose path has a space (a Windows user folder, "My Drive" on Colab), which a shell string would split."""
    import json
    import sys

    out = tmp_path / "runs with a space"
    args = ["-m", "labkit.scripts.pretrain", "--recipe", "gpt-shakespeare", "--steps", "2", "--batch-size", "4",
            "--set", "optimizer=adamw", "--log-every", "1"]
    env = {**os.environ, "LABKIT_PROGRESS": "off", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    shown = distributed.shown([sys.executable, *args, "--out", out / "one"])
    assert shown.startswith("python -m labkit.scripts.pretrain") and f"'{out / 'one'}'" in shown  # quoted to copy and paste
    assert distributed.shown([*distributed.torchrun(2), "x.py"]) == "torchrun --nproc_per_node 2 x.py"
    for name, launcher in (("one", [sys.executable]), ("two", distributed.torchrun(2))):
        printed = distributed.run_command([*launcher, *args, "--out", out / name], env=env, timeout=300)
        history = json.loads((out / name / "history.json").read_text())
        assert history["world_size"] == (1 if name == "one" else 2) and "2 steps" in printed
    with pytest.raises(RuntimeError, match="the command failed .*--no-such-flag"):
        distributed.run_command([sys.executable, "-m", "labkit.scripts.pretrain", "--no-such-flag"], env=env)


@pytest.mark.parametrize("n_gpus, local_world, backend, device, note", [
    (0, 1, "gloo", "cpu", False),
    (0, 2, "gloo", "cpu", False),
    (1, 1, "nccl", "cuda:0", False),
    (1, 2, "gloo", "cpu", True),  # Colab: two processes, one GPU
    (2, 2, "nccl", "cuda:1", False),  # the second rank gets the second GPU
    (2, 1, "nccl", "cuda:0", False),
])
def test_the_backend_and_device_each_rank_gets(n_gpus, local_world, backend, device, note):
    local_rank = local_world - 1
    got_backend, got_device, got_note = distributed.choose(local_rank, local_world, n_gpus)
    expected = torch.device(device) if device == "cpu" else torch.device("cuda", int(device[-1]))
    assert (got_backend, got_device) == (backend, expected)
    assert (got_note is not None) == note
    if note:
        assert "NCCL needs one GPU per process" in got_note and "--nproc_per_node 1" in got_note


def test_labkit_device_cpu_keeps_every_rank_on_the_cpu_and_nccl_without_gpus_is_an_error():
    assert distributed.choose(0, 2, 2, forced_cpu=True)[:2] == ("gloo", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="needs one CUDA GPU per process: 2 processes on this machine, 1 GPU"):
        distributed.choose(0, 2, 1, backend="nccl")
    assert distributed.choose(0, 2, 1, backend="gloo")[:2] == ("gloo", torch.device("cpu"))


def test_setup_asks_torch_how_many_gpus_and_says_why_it_stays_on_the_cpu(monkeypatch, capsys):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed, "is_distributed", lambda: False)
    assert distributed.setup() == (0, 2, torch.device("cpu")) and calls == ["gloo"]
    assert "2 processes share 1 GPU(s)" in capsys.readouterr().out


def test_each_rank_gets_its_slice_of_the_global_batch():
    data = torch.arange(1000)
    whole = distributed.rank_batches(data, 16, 8, seed=3, rank=0, world=1)(5)
    halves = [distributed.rank_batches(data, 16, 8, seed=3, rank=r, world=2)(5) for r in (0, 1)]
    assert torch.equal(torch.cat([h[0] for h in halves]), whole[0])
    assert torch.equal(torch.cat([h[1] for h in halves]), whole[1])
    with pytest.raises(ValueError, match="divisible"):
        distributed.rank_batches(data, 16, 7, seed=3, rank=0, world=2)
