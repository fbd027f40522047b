"""Train the lab's GPT as a pipeline of stages, one per process, with ``torch.distributed.pipelining`` (GPipe), or
the same model in one process for comparison (notebook 16)::

    torchrun --nproc_per_node 2 -m labkit.scripts.pipeline --steps 20 --out runs/pipe   # 2 stages, one per process
    python -m labkit.scripts.pipeline --steps 20 --out runs/pipe-one                     # the same model in one

``labkit.pipeline`` cuts the model; rank 0 writes ``OUT/history.json`` (the loss at every step and the time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import distributed
from .._io import atomic_write_text
from ..models.gpt import GPT, GPTConfig
from ..pipeline import split_gpt
from ..recipes.gpt_shakespeare import shakespeare_data

__all__ = ["main"]


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def main(argv: list[str] | None = None) -> dict:
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    p = argparse.ArgumentParser(prog="python -m labkit.scripts.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16, help="windows per step (split into micro-batches)")
    p.add_argument("--microbatches", type=int, default=4)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--context-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="float64 makes the comparison with one process exact up to 1e-10 (tests)")
    p.add_argument("--out", default="runs/pipeline")
    args = p.parse_args(argv)
    if args.batch_size % args.microbatches:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by --microbatches {args.microbatches}")

    torch.set_default_dtype(getattr(torch, args.dtype))  # the stages' receive buffers too
    rank, world, device = distributed.setup()
    tok, train_data, _ = shakespeare_data()
    torch.manual_seed(args.seed)  # the same whole model on every rank; each keeps its stage
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=args.context_length, n_layers=args.n_layers, n_heads=4,
                        d_model=args.d_model, bias=False, tie_weights=False)).to(device, getattr(torch, args.dtype))
    get_batch = distributed.rank_batches(train_data, args.context_length, args.batch_size, args.seed, 0, 1)  # the whole batch
    if world > 1:
        module = split_gpt(gpt, world)[rank]
        stage = PipelineStage(module, rank, world, device)
        schedule = ScheduleGPipe(stage, n_microbatches=args.microbatches, loss_fn=_loss)
    else:
        module = gpt
    optimizer = torch.optim.AdamW(module.parameters(), lr=args.lr, weight_decay=0.0)
    losses = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        x, y = (t.to(device) for t in get_batch(step))
        if world == 1:  # the reference: the mean of the micro-batches' losses, as the schedule computes it
            micro = [_loss(gpt(xm).logits, ym) for xm, ym in zip(x.chunk(args.microbatches), y.chunk(args.microbatches))]
            loss = torch.stack(micro).mean()
            loss.backward()
            losses.append(loss.item())
        else:
            step_losses = []
            if stage.is_first:
                schedule.step(x)
            elif stage.is_last:
                schedule.step(target=y, losses=step_losses)
            else:
                schedule.step()
            value = torch.tensor([torch.stack(step_losses).mean().item() if stage.is_last else 0.0], dtype=torch.float64)
            torch.distributed.broadcast(value, src=world - 1)  # the last stage knows the loss; everyone logs it
            losses.append(value.item())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in module.parameters())
    held = [params] * world
    if world > 1:
        torch.distributed.all_gather_object(held, params)
    result = {"world_size": world, "steps": args.steps, "microbatches": args.microbatches, "loss": losses,
              "seconds": seconds, "parameters_per_rank": held}
    if distributed.is_main():
        atomic_write_text(Path(args.out) / "history.json", json.dumps(result, indent=1))
        print(f"pipeline: {world} stage(s), {args.steps} steps in {seconds:.1f} s, final loss {losses[-1]:.4f}, "
              f"parameters per rank {held}")
    distributed.cleanup()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
