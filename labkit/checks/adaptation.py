"""Checkers for notebook 10 (fine-tuning and LoRA: the adapter's forward pass, freezing); see labkit.checks._core."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ._core import Case, CheckResult, check_close, check_true

__all__ = ["check_lora_forward", "check_freeze_for_lora"]


# --- exercise: the LoRA forward pass -------------------------------------------------------


def _lora_cases() -> list[Case]:
    g = torch.Generator().manual_seed(100)

    def case(name, batch, d_in, d_out, r, scaling):
        x = torch.randn(*batch, d_in, generator=g)
        W, b = torch.randn(d_out, d_in, generator=g) / d_in**0.5, torch.randn(d_out, generator=g)
        A, B = torch.randn(r, d_in, generator=g) / d_in**0.5, torch.randn(d_out, r, generator=g)
        return Case(f"{name}: x {tuple(x.shape)}, W {tuple(W.shape)}, rank {r}, scaling {scaling}",
                    (x, W, b, A, B, scaling))

    return [case("one vector", (1,), 8, 6, 2, 2.0), case("a batch", (5,), 16, 12, 4, 0.5),
            case("a batch of sequences", (2, 3), 16, 16, 8, 4.0)]


def _lora_reference(x, W, b, A, B, scaling):
    return x @ W.T + b + (x @ A.T @ B.T) * scaling


_LORA_MISTAKES = [
    (lambda x, W, b, A, B, s: x @ W.T + b + x @ A.T @ B.T,
     "Hint: the low-rank path is multiplied by the scaling alpha / r; without it, changing the rank would "
     "change how large the update is."),
    (lambda x, W, b, A, B, s: (x @ A.T @ B.T) * s,
     "Hint: that is the update alone; the frozen layer's own output x @ W.T + b comes first: y = base(x) + update."),
    (lambda x, W, b, A, B, s: x @ W.T + (x @ A.T @ B.T) * s,
     "Hint: the bias b of the frozen layer is missing."),
]


def check_lora_forward(learner_fn: Callable) -> CheckResult:
    """Notebook 10: ``lora_forward(x, W, b, A, B, scaling)`` -> x W^T + b + scaling * (x A^T) B^T, for x (..., d_in),
    W (d_out, d_in), b (d_out,), A (r, d_in), B (d_out, r)."""
    return check_close(
        "lora_forward", learner_fn, _lora_reference, _lora_cases(),
        hint=("Hint: the frozen layer gives x @ W.T + b; the adapter first projects down with A, (..., d_in) -> "
              "(..., r), then up with B, (..., r) -> (..., d_out): x @ A.T @ B.T, times scaling; add the two."),
        mistakes=_LORA_MISTAKES, atol=1e-5, rtol=1e-5,
    )


# --- exercise: freeze what LoRA must not train ------------------------------------------------


def _adapted_model() -> nn.Module:
    from labkit.lora import LoRALinear

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("embed", nn.Embedding(20, 8))
    model.add_module("attn", LoRALinear(nn.Linear(8, 8), rank=2))
    model.add_module("mlp", nn.Linear(8, 8))
    model.add_module("head", nn.Linear(8, 2))
    for p in model.parameters():
        p.requires_grad_(True)  # as if nothing had been frozen yet
    return model


def check_freeze_for_lora(learner_fn: Callable) -> CheckResult:
    """Notebook 10: ``freeze_for_lora(model)`` leaves ``requires_grad`` True on the adapters (every parameter whose
    name ends with ``lora_A`` or ``lora_B``) and on the classification head (names starting with ``head``) only."""
    def condition():
        model = _adapted_model()
        result = learner_fn(model)
        if result is not None and result is not model:
            return "freeze_for_lora should change the model in place (set requires_grad) and return nothing"
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        want = sorted(n for n, _ in model.named_parameters() if n.endswith(("lora_A", "lora_B")) or n.startswith("head"))
        if trainable == want:
            return True
        if not trainable:
            return ("every parameter is frozen, the adapters and the head too: nothing would train. Freeze all, "
                    "then switch requires_grad back on for the lora_A/lora_B parameters and the head")
        extra = [n for n in trainable if n not in want]
        missing = [n for n in want if n not in trainable]
        if extra:
            return (f"these would still train but belong to the pretrained model: {', '.join(extra)} "
                    "(in LoRA the pretrained weights stay frozen, the base layer inside the adapter included)")
        return f"these should train but are frozen: {', '.join(missing)}"

    return check_true("freeze_for_lora", condition,
                      hint="Hint: loop over model.named_parameters(); p.requires_grad_(name.endswith(('lora_A', "
                           "'lora_B')) or name.startswith('head')).")
