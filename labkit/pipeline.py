"""Pipeline parallelism for the lab's GPT with PyTorch's ``torch.distributed.pipelining`` (notebook 16)::

    torchrun --nproc_per_node 2 -m labkit.scripts.pipeline --steps 20 --out runs/pipe   # 2 stages, one per process
    python -m labkit.scripts.pipeline --steps 20 --out runs/pipe-one                     # the same model in one

Data parallelism copies the whole model to every process; pipeline parallelism cuts the model into consecutive
**stages**, one per process: stage 0 holds the embeddings and the first blocks, the last stage the remaining
blocks, the final LayerNorm and the output layer. A batch is split into ``--microbatches`` micro-batches; under
the GPipe schedule stage 0 runs the forward of micro-batch 1, sends its activations to stage 1 and starts
micro-batch 2 while stage 1 works on the first, and the backward runs the same way in reverse. Only activations
(B/m, T, C) cross between processes, never weights or their gradients. The idle time at the start and end (the
"bubble") is a fraction (S - 1) / (m + S - 1) of the step for S stages.

Both runs build the same seeded model and see the same batches, with AdamW at a constant learning rate, so the
two processes' losses equal the one process's up to float rounding (``tests/test_scripts_pipeline.py``). The model is a
character-level GPT on Tiny Shakespeare with untied input and output embeddings (a tied matrix would live on two
stages). This module cuts the model (``split_gpt``, ``GPTStage``); ``labkit.scripts.pipeline`` runs it, and rank 0
writes ``OUT/history.json``: the loss at every step and the time.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GPTStage", "split_gpt"]


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
    n = gpt.config.n_layers
    if not 1 <= n_stages <= n:
        raise ValueError(f"cannot cut {n} blocks into {n_stages} stages: use between 1 and {n}")
    bounds = [round(i * n / n_stages) for i in range(n_stages + 1)]
    return [GPTStage(gpt, bounds[i], bounds[i + 1], i == 0, i == n_stages - 1) for i in range(n_stages)]
