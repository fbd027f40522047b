"""Checkers for notebook 02 (positional encoding); see labkit.checks._core for the pattern."""

from __future__ import annotations

from typing import Callable

import torch

from ._core import Case, CheckResult, check_close

__all__ = ["check_sinusoidal_table", "check_rope_rotate"]


# --- exercise 1: the sinusoidal table -------------------------------------------


def _sinusoidal_reference(max_len: int, d_model: int) -> torch.Tensor:
    from labkit.layers import SinusoidalPositionalEncoding

    return SinusoidalPositionalEncoding(d_model, max_len=max_len).pe


def check_sinusoidal_table(learner_fn: Callable) -> CheckResult:
    """Notebook 02: ``sinusoidal_table(max_len, d_model)`` -> (max_len, d_model) with
    PE[pos, 2i] = sin(pos / 10000^(2i/d_model)) and PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model))."""
    cases = [Case(f"max_len={n}, d_model={d}", (n, d)) for n, d in [(4, 2), (10, 8), (50, 64), (128, 512)]]
    return check_close(
        "sinusoidal_table",
        learner_fn,
        _sinusoidal_reference,
        cases,
        hint=(
            "Hint: the EVEN columns 2i hold sines and the ODD columns 2i+1 cosines of the SAME angle "
            "pos / 10000**(2i / d_model) — the exponent uses the even index 2i (torch.arange(0, d_model, 2)), "
            "not the column index j, and pos runs from 0 to max_len-1."
        ),
        atol=1e-4,
    )


# --- exercise 2: rotate one vector with RoPE ----------------------------------------


def _rope_reference(x: torch.Tensor, pos: int, base: float = 10000.0) -> torch.Tensor:
    from labkit.layers import RotaryEmbedding

    rope = RotaryEmbedding(x.size(-1), max_len=pos + 1, base=base)
    return rope(x[None], offset=pos)[0]


def _rope_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    cases = [Case("x=(1, 0), pos=1 (a quarter-turn test: expect (cos 1, sin 1))", (torch.tensor([1.0, 0.0]), 1))]
    for d, pos in [(4, 3), (8, 0), (16, 7), (64, 100)]:
        cases.append(Case(f"x of shape ({d},), pos={pos}", (torch.randn(d, generator=g), pos)))
    cases.append(Case("x of shape (8,), pos=5, base=100", (torch.randn(8, generator=g), 5), {"base": 100.0}))
    return cases


def check_rope_rotate(learner_fn: Callable) -> CheckResult:
    """Notebook 02: ``rope_rotate(x, pos, base=10000.0)`` rotates one vector x (d,) to position ``pos``,
    pairing x[i] with x[i + d/2] ("rotate half", as HF Llama) at angle pos * base^(-2i/d)."""
    return check_close(
        "rope_rotate",
        lambda x, pos, **kw: learner_fn(x.clone(), pos, **kw),
        _rope_reference,
        _rope_cases(),
        hint=(
            "Hint: pair x[i] with x[i + d/2] (the two HALVES, not neighbours x[2i], x[2i+1]); the angle of pair i "
            "is pos * base**(-2i/d) for i = 0 .. d/2-1; rotate counter-clockwise: "
            "(x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos), i.e. x * cos + rotate_half(x) * sin with "
            "rotate_half(x) = cat(-x2, x1)."
        ),
        atol=1e-4,
    )
