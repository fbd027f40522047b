"""Pretrain a zoo recipe from the command line, in one process or several (notebook 16)::

    python -m labkit.pretrain --recipe gpt-shakespeare --steps 200 --out runs/one
    torchrun --nproc_per_node 2 -m labkit.pretrain --recipe gpt-shakespeare --steps 200 --out runs/two

The same script either way. Under ``torchrun`` each process joins the process group (``gloo`` on the CPU,
``nccl`` on GPUs: ``labkit.distributed.setup``), wraps the model in PyTorch's ``DistributedDataParallel`` and
trains on its share of every batch: the step's ``--batch-size`` windows are drawn from a generator seeded by
the step alone, the same on every rank, and rank r takes the r-th slice. So N processes see exactly the
windows one process sees, and end with the same losses and weights (up to the order in which gradients are
summed). Across machines, the command gains ``--nnodes``, ``--node-rank`` and a rendezvous endpoint
(``--rdzv-backend c10d --rdzv-endpoint host:29500``); nothing in this file changes.

``--strategy fsdp`` shards instead of replicating: PyTorch's FSDP (``fully_shard`` on each block, then on the
whole model) keeps 1/N of every parameter, gradient and optimizer moment on each rank, gathers a block's full
weights just before it runs and reduce-scatters its gradients after. It needs an optimizer that works on shards
element by element (``--set optimizer=adamw``: Muon orthogonalises whole matrices). ``history.json`` records,
for every rank, the bytes it holds of parameters, gradients and optimizer state (``memory``).

``--set name=value`` overrides any field of the recipe (``--set n_layer=2 --set block_size=32``). Rank 0 writes
``OUT/checkpoint.pt`` (``labkit.train``'s checkpoint: state dicts, loadable with ``weights_only=True`` in a
single process), and ``OUT/history.json`` (the mean train loss over the ranks at every logged step, the
held-out loss, the settings and the time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from . import distributed
from ._io import atomic_write_text

__all__ = ["RECIPES", "STRATEGIES", "main", "parse_overrides", "rank_batches", "local_bytes"]

RECIPES = ("gpt-shakespeare",)
STRATEGIES = ("ddp", "fsdp")


def local_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The bytes this process holds of parameters, gradients and optimizer state (a sharded tensor counts its
    local shard only: FSDP's DTensors)."""
    def nbytes(t):
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    return {"parameters": sum(nbytes(p) for p in params),
            "gradients": sum(nbytes(p.grad) for p in params if p.grad is not None),
            "optimizer": sum(nbytes(v) for v in state)}


def parse_overrides(recipe, items: list[str]):
    """``recipe`` with ``name=value`` overrides, each value converted to the field's type."""
    fields = {f.name: f for f in dataclasses.fields(recipe)}
    changes = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: expected name=value with name one of {', '.join(sorted(fields))}")
        current = getattr(recipe, name)
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {item!r}: {name} is true or false")
            changes[name] = value.lower() in ("true", "1")
        elif current is None or isinstance(current, (int, float, str)):
            kind = type(current) if current is not None else float
            try:
                changes[name] = kind(value) if value.lower() != "none" else None
            except ValueError:
                raise SystemExit(f"--set {item!r}: {name} must be a {kind.__name__}") from None
        else:
            changes[name] = tuple(float(v) for v in value.split(","))
    return dataclasses.replace(recipe, **changes)


def rank_batches(data: torch.Tensor, block_size: int, batch_size: int, seed: int, rank: int, world: int):
    """``get_batch(i)`` for rank ``rank`` of ``world``: its slice of the i-th global batch of ``batch_size``
    random windows (drawn from a generator seeded by ``seed`` and ``i`` only, the same on every rank)."""
    if batch_size % world:
        raise SystemExit(f"--batch-size {batch_size} must be divisible by the number of processes ({world})")
    per_rank = batch_size // world

    def get_batch(i: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=g)[rank * per_rank:(rank + 1) * per_rank]
        x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
        y = torch.stack([data[s + 1:s + 1 + block_size] for s in starts.tolist()])
        return x, y

    return get_batch


def main(argv: list[str] | None = None) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from .recipes.gpt_shakespeare import LAB, build_model, build_optimizer, evaluate_lm, shakespeare_data, train_config
    from .train import train

    p = argparse.ArgumentParser(prog="python -m labkit.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="gpt-shakespeare", choices=RECIPES)
    p.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="windows per step over all processes (default: the recipe's)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--strategy", default="ddp", choices=STRATEGIES,
                   help="with several processes: replicate the model (ddp) or shard it (fsdp)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a recipe field")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-tokens", type=int, default=20_000, help="held-out tokens for the final loss")
    p.add_argument("--out", default="runs/pretrain", help="folder for checkpoint.pt and history.json")
    args = p.parse_args(argv)

    recipe = parse_overrides(LAB, args.set)
    recipe = dataclasses.replace(recipe, steps=args.steps or recipe.steps, batch_size=args.batch_size or recipe.batch_size)
    if args.strategy == "fsdp" and recipe.optimizer != "adamw":
        raise SystemExit("--strategy fsdp shards every weight matrix across the processes, and Muon needs whole "
                         "matrices (it orthogonalises them): add --set optimizer=adamw")
    rank, world, device = distributed.setup()
    tok, train_data, val_data = shakespeare_data()
    model = build_model(recipe, tok.vocab_size).to(device)  # seeded: the same initial weights on every rank
    sharded = args.strategy == "fsdp" and world > 1
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world,))
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)  # one all-gather per block: only one block's full weights at a time
        fully_shard(model, mesh=mesh)  # the rest (embeddings, final norm, head)
        wrapped = model
    elif world > 1:
        wrapped = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        wrapped = model
    optimizer = build_optimizer(model, recipe)  # after sharding: its moments are shards too
    checkpoint = None if sharded else str(Path(args.out) / "checkpoint.pt")  # sharded: gathered below instead
    config = dataclasses.replace(train_config(recipe, progress=distributed.is_main(), log_every=args.log_every),
                                 grad_accum=args.grad_accum, checkpoint_path=checkpoint,
                                 desc=f"{args.recipe} (rank {rank} of {world})")
    micro = recipe.batch_size // args.grad_accum
    if micro * args.grad_accum != recipe.batch_size:
        raise SystemExit(f"--batch-size {recipe.batch_size} must be divisible by --grad-accum {args.grad_accum}")
    t0 = time.perf_counter()
    history = train(wrapped, rank_batches(train_data, recipe.block_size, micro, recipe.seed, rank, world), config,
                    optimizer=optimizer)
    seconds = time.perf_counter() - t0
    # what this rank holds at its fullest: parameters, optimizer moments, and the gradients of one more backward
    x, y = rank_batches(train_data, recipe.block_size, micro, recipe.seed, rank, world)(0)
    wrapped(x.to(device), y.to(device)).loss.backward()
    memory = local_bytes(model, optimizer)
    optimizer.zero_grad(set_to_none=True)
    memory_by_rank = [memory] * world
    if world > 1:
        torch.distributed.all_gather_object(memory_by_rank, memory)
    if sharded:  # every rank takes part in gathering the full weights; rank 0 saves them as a plain state dict
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from .train import save_checkpoint

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if distributed.is_main():
            plain = build_model(recipe, tok.vocab_size)
            plain.load_state_dict(state)
            save_checkpoint(Path(args.out) / "checkpoint.pt", plain, step=history.completed_steps)
            model = plain.to(device)  # evaluated below in one process
    result = {"recipe": args.recipe, "world_size": world, "strategy": args.strategy if world > 1 else "single",
              "steps": history.completed_steps, "memory": memory_by_rank,
              "batch_size": recipe.batch_size, "grad_accum": args.grad_accum, "seconds": seconds,
              "steps_logged": history.steps, "train_loss": history.train_loss,
              "tokens_per_s": history.completed_steps * recipe.batch_size * recipe.block_size / seconds,
              "overrides": args.set}
    if distributed.is_main():
        result["val_loss"] = evaluate_lm(model, val_data[: args.eval_tokens + 1], recipe.block_size)
        atomic_write_text(Path(args.out) / "history.json", json.dumps(result, indent=1))
        print(f"{args.recipe}: {world} process(es), {history.completed_steps} steps in {seconds:.1f} s, "
              f"final train loss {history.train_loss[-1]:.4f}, held-out loss {result['val_loss']:.4f}")
    distributed.cleanup()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
