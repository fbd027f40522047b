"""Evaluation: perplexity for language models, accuracy for classifiers, BLEU for translation.

Intrinsic evaluation asks how well a model predicts held-out text (perplexity);
extrinsic evaluation asks how well it does a task (accuracy, BLEU).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .data import sequential_windows

__all__ = ["lm_loss", "perplexity", "accuracy", "bleu"]


@torch.no_grad()
def lm_loss(model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over every non-overlapping window of ``data``.

    The model is called as ``model(x, y)`` and returns ``(logits, loss)``; windows are
    weighted by their token count, so the result is the mean over all predicted tokens.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in sequential_windows(data, block_size, batch_size):
        _, loss = model(x.to(device), y.to(device))
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats): the effective number of equally likely choices per token."""
    return math.exp(loss)


def accuracy(predictions: torch.Tensor | Sequence, targets: torch.Tensor | Sequence) -> float:
    """Fraction of predictions equal to their targets (logits are argmaxed over the last dim)."""
    p, t = torch.as_tensor(predictions), torch.as_tensor(targets)
    if p.dim() == t.dim() + 1:
        p = p.argmax(-1)
    if p.shape != t.shape:
        raise ValueError(f"predictions {tuple(p.shape)} and targets {tuple(t.shape)} must have the same shape")
    return (p == t).float().mean().item()


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0–100) computed by sacrebleu, the field's reference implementation."""
    try:
        import sacrebleu
    except ImportError:
        raise ImportError("BLEU needs sacrebleu: pip install sacrebleu") from None
    refs = [list(references)] if references and isinstance(references[0], str) else [list(r) for r in zip(*references)]
    return sacrebleu.corpus_bleu(list(hypotheses), refs).score
