"""Low-rank adapters (LoRA; Hu et al., 2021): fine-tune a frozen model through a few small matrices.

A frozen linear layer ``W x + b`` gets a trainable low-rank update beside it::

    y = W x + b + (alpha / r) * B (A x)        A: (r, in_features), B: (out_features, r), r << in, out

``A`` starts random and ``B`` at zero, so the adapted model computes exactly what the pretrained one does
until training moves ``B``. After training the update can be folded into the weight
(``W' = W + (alpha / r) B A``): no extra cost at inference. The parametrisation, initialisation and
scaling are those of Hugging Face ``peft`` (``tests/test_lora.py`` checks the forward pass against it)::

    apply_lora(model, rank=8, alpha=16, targets=("attn",))   # wrap, freeze the rest
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-3)
    ...
    merge_lora(model)                                         # plain nn.Linear again, same outputs
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LoRALinear", "apply_lora", "merge_lora", "lora_parameters", "trainable_parameters"]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update scaled by ``alpha / rank``."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        if rank > min(base.in_features, base.out_features):
            raise ValueError(f"rank={rank} is more than the layer's smaller side ({base.in_features} -> "
                             f"{base.out_features}): a rank-r update of this layer needs r <= "
                             f"{min(base.in_features, base.out_features)}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and peft) initialise a weight
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:
        """The frozen base weight (code that reads ``layer.weight`` keeps working)."""
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def delta_weight(self) -> Tensor:
        """The update the adapter adds to the weight: (alpha / rank) B A, (out_features, in_features)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_features) -> (..., out_features): the frozen layer plus the low-rank path."""
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing what this module computes (dropout aside), weights folded in."""
        b = self.base
        out = nn.Linear(b.in_features, b.out_features, bias=b.bias is not None, device=b.weight.device,
                        dtype=b.weight.dtype)
        out.weight.copy_(b.weight + self.delta_weight())
        if b.bias is not None:
            out.bias.copy_(b.bias)
        out.requires_grad_(False)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, targets: Sequence[str] = ("attn",),
               dropout: float = 0.0, trainable: Sequence[str] = ()) -> nn.Module:
    """Wrap every ``nn.Linear`` whose qualified name contains one of ``targets`` in a ``LoRALinear`` and
    freeze every other parameter, except those whose names contain one of ``trainable`` (e.g. a new
    classification head). In place; returns ``model``. Its outputs are unchanged until the adapters train.

    ``targets`` are substrings of ``model.named_modules()`` names: ``("attn",)`` is every attention
    projection of labkit's GPT (``transformer.h.0.attn.c_attn``) and BERT (``blocks.0.attn.query``).
    """
    if isinstance(targets, str) or isinstance(trainable, str):
        raise TypeError("targets and trainable are sequences of name fragments: write targets=('attn',), not 'attn'")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)
               and not name.endswith(".base") and any(t in name for t in targets)]
    if not linears:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"no nn.Linear module's name contains any of {tuple(targets)}; the model's linear layers "
                         f"are: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in linears:
        _set_module(model, name, LoRALinear(linear, rank, alpha, dropout))
    for name, p in model.named_parameters():
        if any(t in name for t in trainable):
            p.requires_grad_(True)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every ``LoRALinear`` in ``model`` by the plain ``nn.Linear`` with its update folded in
    (``LoRALinear.merged``); in place, returns ``model``. The outputs stay the same."""
    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, m in wrapped:
        _set_module(model, name, m.merged())
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (every ``lora_A`` and ``lora_B``), for the optimizer."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


def trainable_parameters(model: nn.Module) -> int:
    """How many parameters will train (``requires_grad``), a shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
