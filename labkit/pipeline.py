"""Pipeline parallelism for the lab's GPT with PyTorch's ``torch.distributed.pipelining`` (notebook 16)::

    torchrun --nproc_per_node 2 -m labkit.pipeline --steps 20 --out runs/pipe   # 2 stages, one per process
    python -m labkit.pipeline --steps 20 --out runs/pipe-one                     # the same model in one process

Data parallelism copies the whole model to every process; pipeline parallelism cuts the model into consecutive
**stages**, one per process: stage 0 holds the embeddings and the first blocks, the last stage the remaining
blocks, the final LayerNorm and the output layer. A batch is split into ``--microbatches`` micro-batches; under
the GPipe schedule stage 0 runs the forward of micro-batch 1, sends its activations to stage 1 and starts
micro-batch 2 while stage 1 works on the first, and the backward runs the same way in reverse. Only activations
(B/m, T, C) cross between processes, never weights or their gradients. The idle time at the start and end (the
"bubble") is a fraction (S - 1) / (m + S - 1) of the step for S stages.

Both runs build the same seeded model and see the same batches, with AdamW at a constant learning rate, so the
two processes' losses equal the one process's up to float rounding (``tests/test_pipeline.py``). The model is a
character-level GPT on Tiny Shakespeare with untied input and output embeddings (a tied matrix would live on two
stages). Rank 0 writes ``OUT/history.json``: the loss at every step and the time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from ._io import atomic_write_text

__all__ = ["GPTStage", "split_gpt", "main"]


class GPTStage(nn.Module):
    """Consecutive blocks ``blocks[start:stop]`` of a ``GPT``, with the embeddings if ``first`` and the final
    LayerNorm and output layer if ``last``: token ids or hidden states in, hidden states or logits out."""

    def __init__(self, gpt, start: int, stop: int, first: bool, last: bool):
        super().__init__()
        if gpt.config.tie_weights:
            raise ValueError("a GPT with tied input and output embeddings cannot be split into stages (the one matrix "
                             "would be needed on the first and the last): build it with tie_weights=False")
        self.first, self.last = first, last
        self.pos_emb = gpt.config.pos_emb
        if first:
            self.wte = gpt.transformer.wte
            self.wpe = gpt.transformer.wpe if self.pos_emb == "learned" else None
        self.blocks = nn.ModuleList(gpt.transformer.h[start:stop])
        if last:
            self.ln_f, self.lm_head = gpt.transformer.ln_f, gpt.lm_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:  # (B, T) ids -> (B, T, C)
            T = x.size(1)
            x = self.wte(x)
            if self.wpe is not None:
                x = x + self.wpe(torch.arange(T, device=x.device))
        for block in self.blocks:
            x, _ = block(x)
        if self.last:  # (B, T, C) -> (B, T, V)
            x = self.lm_head(self.ln_f(x))
        return x


def split_gpt(gpt, n_stages: int) -> list[GPTStage]:
    """``gpt`` cut into ``n_stages`` stages of (nearly) equal numbers of blocks, sharing its modules."""
    n = gpt.config.n_layer
    if not 1 <= n_stages <= n:
        raise ValueError(f"cannot cut {n} blocks into {n_stages} stages: use between 1 and {n}")
    bounds = [round(i * n / n_stages) for i in range(n_stages + 1)]
    return [GPTStage(gpt, bounds[i], bounds[i + 1], i == 0, i == n_stages - 1) for i in range(n_stages)]


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def main(argv: list[str] | None = None) -> dict:
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    from .models.gpt import GPT, GPTConfig
    from .pretrain import rank_batches
    from .recipes.gpt_shakespeare import shakespeare_data

    p = argparse.ArgumentParser(prog="python -m labkit.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16, help="windows per step (split into micro-batches)")
    p.add_argument("--microbatches", type=int, default=4)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
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
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size, n_layer=args.n_layer, n_head=4,
                        n_embd=args.n_embd, bias=False, tie_weights=False)).to(device, getattr(torch, args.dtype))
    get_batch = rank_batches(train_data, args.block_size, args.batch_size, args.seed, 0, 1)  # the whole batch
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
