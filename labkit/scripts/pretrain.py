"""Pretrain a zoo recipe from the command line, in one process or several (notebook 16)::

    python -m labkit.scripts.pretrain --recipe gpt-shakespeare --steps 200 --out runs/one
    torchrun --nproc_per_node 2 -m labkit.scripts.pretrain --recipe gpt-shakespeare --steps 200 --out runs/two

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

``--set name=value`` overrides any field of the recipe (``--set n_layers=2 --set context_length=32``). Rank 0 writes
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

from .. import distributed
from .._io import atomic_write_text
from ..perf import local_bytes
from ..recipes import parse_overrides
from ..recipes.gpt_shakespeare import LAB, build_lm, evaluate_lm, lm_optimizer, lm_train_config, shakespeare_data
from ..train import save_checkpoint, train

__all__ = ["RECIPES", "STRATEGIES", "main"]

RECIPES = ("gpt-shakespeare",)
STRATEGIES = ("ddp", "fsdp")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m labkit.scripts.pretrain", description=__doc__.split("\n\n")[0])
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
    return p.parse_args(argv)


def _recipe(args: argparse.Namespace):
    try:
        recipe = parse_overrides(LAB, args.set)
    except ValueError as e:
        raise SystemExit(f"--set {e}") from None
    recipe = dataclasses.replace(recipe, steps=args.steps or recipe.steps, batch_size=args.batch_size or recipe.batch_size)
    if args.strategy == "fsdp" and recipe.optimizer != "adamw":
        raise SystemExit("--strategy fsdp shards every weight matrix across the processes, and Muon needs whole "
                         "matrices (it orthogonalises them): add --set optimizer=adamw")
    if recipe.batch_size % args.grad_accum:
        raise SystemExit(f"--batch-size {recipe.batch_size} must be divisible by --grad-accum {args.grad_accum}")
    return recipe


def _wrap(model: torch.nn.Module, sharded: bool, world: int, device: torch.device) -> torch.nn.Module:
    """The model as the processes train it: sharded by FSDP, replicated by DDP, or itself in one process."""
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world,))
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)  # one all-gather per block: only one block's full weights at a time
        fully_shard(model, mesh=mesh)  # the rest (embeddings, final norm, head)
        return model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def _memory_by_rank(wrapped, model, optimizer, get_batch, device, world: int) -> list[dict]:
    """What each rank holds at its fullest: parameters, optimizer moments and the gradients of one backward."""
    x, y = get_batch(0)
    wrapped(x.to(device), y.to(device)).loss.backward()
    memory = local_bytes(model, optimizer)
    optimizer.zero_grad(set_to_none=True)
    memory_by_rank = [memory] * world
    if world > 1:
        torch.distributed.all_gather_object(memory_by_rank, memory)
    return memory_by_rank


def _save_gathered(model, recipe, vocab_size: int, out: Path, steps: int, device):
    """FSDP: every rank takes part in gathering the full weights; rank 0 saves them as a plain state dict and
    returns the whole model (evaluated in one process), the others their shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not distributed.is_main():
        return model
    plain = build_lm(recipe, vocab_size)
    plain.load_state_dict(state)
    save_checkpoint(out / "checkpoint.pt", plain, step=steps)
    return plain.to(device)


def main(argv: list[str] | None = None) -> dict:
    args = _arguments(argv)
    recipe = _recipe(args)
    rank, world, device = distributed.setup()
    if (recipe.batch_size // args.grad_accum) % world:
        raise SystemExit(f"--batch-size {recipe.batch_size} (over --grad-accum {args.grad_accum}) must be divisible "
                         f"by the number of processes ({world})")
    tok, train_data, val_data = shakespeare_data()
    model = build_lm(recipe, tok.vocab_size).to(device)  # seeded: the same initial weights on every rank
    sharded = args.strategy == "fsdp" and world > 1
    wrapped = _wrap(model, sharded, world, device)
    optimizer = lm_optimizer(model, recipe)  # after sharding: its moments are shards too
    out = Path(args.out)
    config = dataclasses.replace(lm_train_config(recipe, progress=distributed.is_main(), log_every=args.log_every),
                                 grad_accum=args.grad_accum, desc=f"{args.recipe} (rank {rank} of {world})",
                                 checkpoint_path=None if sharded else str(out / "checkpoint.pt"))
    get_batch = distributed.rank_batches(train_data, recipe.context_length, recipe.batch_size // args.grad_accum,
                                         recipe.seed, rank, world)
    t0 = time.perf_counter()
    history = train(wrapped, get_batch, config, optimizer=optimizer)
    seconds = time.perf_counter() - t0
    memory = _memory_by_rank(wrapped, model, optimizer, get_batch, device, world)
    if sharded:
        model = _save_gathered(model, recipe, tok.vocab_size, out, history.completed_steps, device)
    result = {"recipe": args.recipe, "world_size": world, "strategy": args.strategy if world > 1 else "single",
              "steps": history.completed_steps, "memory": memory, "batch_size": recipe.batch_size,
              "grad_accum": args.grad_accum, "seconds": seconds, "steps_logged": history.steps,
              "train_loss": history.train_loss, "overrides": args.set,
              "tokens_per_s": history.completed_steps * recipe.batch_size * recipe.context_length / seconds}
    if distributed.is_main():
        result["val_loss"] = evaluate_lm(model, val_data[: args.eval_tokens + 1], recipe.context_length)
        atomic_write_text(out / "history.json", json.dumps(result, indent=1))
        print(f"{args.recipe}: {world} process(es), {history.completed_steps} steps in {seconds:.1f} s, "
              f"final train loss {history.train_loss[-1]:.4f}, held-out loss {result['val_loss']:.4f}")
    distributed.cleanup()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
