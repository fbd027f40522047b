"""Several processes, one model: the small helpers that PyTorch's distributed engine needs around it (notebook 16).

``torchrun --nproc_per_node 2 script.py`` starts two processes and gives each the environment variables RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. ``setup()`` reads them and joins the process group (``gloo``
on the CPU, ``nccl`` on CUDA GPUs); the training itself uses PyTorch's own wrappers,
``torch.nn.parallel.DistributedDataParallel`` (every rank holds the whole model; gradients are averaged by an
all-reduce in the backward pass) or ``torch.distributed.fsdp.fully_shard`` (parameters, gradients and optimizer
state sharded across ranks, gathered layer by layer when needed)::

    rank, world, device = distributed.setup()
    model = DDP(model.to(device))              # or fully_shard(...)
    ...
    if distributed.is_main():                  # log and save from one rank only
        ...
    distributed.cleanup()

Without torchrun (a notebook, a plain ``python``), ``setup()`` is a no-op that returns rank 0 of 1, so the same
script runs in one process.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist

from .device import get_device

__all__ = ["choose", "setup", "cleanup", "is_distributed", "rank", "world_size", "is_main", "all_reduce_mean", "comm_device",
           "free_port", "rank_batches", "torchrun", "shown", "run_command"]


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that prints, logs and writes checkpoints."""
    return rank() == 0


def choose(local_rank: int, local_world_size: int, n_gpus: int, backend: str | None = None,
           forced_cpu: bool = False) -> tuple[str, torch.device, str | None]:
    """``(backend, device, note)`` for one rank: ``nccl`` with the GPU of its local rank where there is a GPU for
    every process on this machine; else ``gloo`` on the CPU, with a note saying why (two processes on Colab's one
    GPU, or LABKIT_DEVICE=cpu). An explicit ``backend`` is kept, and ``nccl`` without enough GPUs is an error."""
    enough = n_gpus >= local_world_size and not forced_cpu
    if backend == "nccl" and not enough:
        raise RuntimeError(f"backend 'nccl' needs one CUDA GPU per process: {local_world_size} processes on this "
                           f"machine, {n_gpus} GPU(s){' (LABKIT_DEVICE=cpu)' if forced_cpu else ''}. Use "
                           f"backend='gloo', or start at most {n_gpus} process(es) per machine.")
    if backend is None:
        backend = "nccl" if enough and n_gpus > 0 else "gloo"
    if backend == "nccl":
        return backend, torch.device("cuda", local_rank), None
    note = None
    if n_gpus > 0 and not forced_cpu:
        note = (f"{local_world_size} processes share {n_gpus} GPU(s) on this machine: NCCL needs one GPU per "
                f"process, so the processes train on the CPU with gloo (the same algorithm; "
                f"`torchrun --nproc_per_node {n_gpus}` would use the GPU(s)).")
    return backend, torch.device("cpu"), note


def setup(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes in the environment: ``(rank, world_size, device)``. ``nccl`` and
    the GPU of the rank's LOCAL_RANK where this machine has a GPU per process, else ``gloo`` on the CPU (``choose``).
    Outside torchrun (no WORLD_SIZE), nothing happens: ``(0, 1, get_device())``."""
    if "WORLD_SIZE" not in os.environ or is_distributed():
        return rank(), world_size(), get_device() if not is_distributed() else _joined_device()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend, device, note = choose(local_rank, local_world, n_gpus, backend,
                                   forced_cpu=os.environ.get("LABKIT_DEVICE", "").lower() == "cpu")
    if note and int(os.environ.get("RANK", 0)) == 0:
        print(note, flush=True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def _joined_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def cleanup() -> None:
    """Leave the process group (at the end of a script; safe to call when there is none)."""
    if is_distributed():
        dist.destroy_process_group()


def comm_device() -> torch.device:
    """Where the process group's collectives take their tensors: this rank's GPU for ``nccl``, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks, in place on every rank (what DDP does to each gradient); the
    tensor itself in a single process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def free_port() -> int:
    """A free TCP port on this machine, for MASTER_PORT when starting processes by hand (tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc_per_node: int) -> list[str]:
    """The ``torchrun --nproc_per_node N`` command as an argument list, with this Python (the environment's
    ``torchrun`` script runs exactly this)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc_per_node)]


def shown(args: Sequence[str | Path]) -> str:
    """The command as a learner would type it in a terminal: ``python`` and ``torchrun`` for this Python's
    long path, and every argument quoted where it needs to be (a path with a space)."""
    words = [str(a) for a in args]
    if words[:3] == [sys.executable, "-m", "torch.distributed.run"]:
        words = ["torchrun", *words[3:]]
    elif words[:1] == [sys.executable]:
        words = ["python", *words[1:]]
    return shlex.join(words)


def run_command(args: Sequence[str | Path], env: dict | None = None, timeout: float = 600) -> str:
    """Run a command given as an argument list (no shell: a path with a space stays one argument) and return what
    it printed; if it fails, raise with the end of its output."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the command failed (exit {done.returncode}): {shown(args)}\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def rank_batches(data: torch.Tensor, context_length: int, batch_size: int, seed: int, rank: int, world: int):
    """``get_batch(i)`` for rank ``rank`` of ``world``: its slice of the i-th global batch of ``batch_size``
    random windows (drawn from a generator seeded by ``seed`` and ``i`` only, the same on every rank)."""
    if batch_size % world:
        raise ValueError(f"a batch of {batch_size} must be divisible by the number of processes ({world})")
    per_rank = batch_size // world

    def get_batch(i: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        starts = torch.randint(len(data) - context_length, (batch_size,), generator=g)[rank * per_rank:(rank + 1) * per_rank]
        x = torch.stack([data[s:s + context_length] for s in starts.tolist()])
        y = torch.stack([data[s + 1:s + 1 + context_length] for s in starts.tolist()])
        return x, y

    return get_batch
