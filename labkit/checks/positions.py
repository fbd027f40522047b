"""Checkers for notebook 02 (positional encoding); see labkit.checks._core for the pattern."""

from __future__ import annotations

from typing import Callable

import torch

from ._core import Case, CheckResult, check_close

__all__ = ["check_sinusoidal_table", "check_rope_rotate"]


# --- exercise 1: the sinusoidal table -------------------------------------------


def _sinusoidal_reference(context_length: int, d_model: int) -> torch.Tensor:
    from labkit.layers import SinusoidalPositionalEncoding

    return SinusoidalPositionalEncoding(d_model, context_length=context_length).pe


def check_sinusoidal_table(learner_fn: Callable) -> CheckResult:
    """Notebook 02: ``sinusoidal_table(context_length, d_model)`` -> (context_length, d_model) with
    PE[pos, 2i] = sin(pos / 10000^(2i/d_model)) and PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model))."""
    cases = [Case(f"context_length={n}, d_model={d}", (n, d)) for n, d in [(4, 2), (10, 8), (50, 64), (128, 512)]]

    def swapped(context_length, d_model):  # cosines in the even columns, sines in the odd ones
        pe = _sinusoidal_reference(context_length, d_model)
        return torch.stack((pe[:, 1::2], pe[:, 0::2]), dim=-1).reshape(context_length, d_model)

    def column_index(context_length, d_model):  # exponent j / d_model with the column index j
        angle = torch.arange(context_length, dtype=torch.float32)[:, None] / 10000.0 ** (
            torch.arange(d_model, dtype=torch.float32) / d_model)
        pe = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle[:, 1::2])
        return pe

    def from_one(context_length, d_model):  # positions 1..context_length
        return _sinusoidal_reference(context_length + 1, d_model)[1:]

    mistakes = [
        (swapped, "Hint: sines and cosines are swapped: sin goes in the even columns (pe[:, 0::2]), cos in the "
                  "odd ones (pe[:, 1::2])."),
        (column_index, "Hint: a sine and its cosine share one frequency: column 2i+1 uses the exponent 2i/d_model "
                       "of its pair, not (2i+1)/d_model."),
        (from_one, "Hint: positions start at 0 (torch.arange(context_length)), so row 0 is sin 0 = 0 and cos 0 = 1."),
    ]
    return check_close(
        "sinusoidal_table",
        learner_fn,
        _sinusoidal_reference,
        cases,
        mistakes=mistakes,
        hint=(
            "Hint: the EVEN columns 2i hold sines and the ODD columns 2i+1 cosines of the SAME angle "
            "pos / 10000**(2i / d_model) — the exponent uses the even index 2i (torch.arange(0, d_model, 2)), "
            "not the column index j, and pos runs from 0 to context_length-1."
        ),
        atol=1e-4,
    )


# --- exercise 2: rotate one vector with RoPE ----------------------------------------


def _rope_reference(x: torch.Tensor, pos: int, base: float = 10000.0) -> torch.Tensor:
    from labkit.layers import RotaryEmbedding

    rope = RotaryEmbedding(x.size(-1), context_length=pos + 1, base=base)
    return rope(x[None], offset=pos)[0]


def _rope_rotated(x: torch.Tensor, pos: int, base: float = 10000.0) -> torch.Tensor:
    from labkit.layers import rotate_half

    d = x.size(-1)
    angle = (pos * base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)).repeat(2)  # (d,)
    return x * angle.cos() + rotate_half(x) * angle.sin()


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
    def interleaved(x, pos, base=10000.0):  # GPT-J / the paper's layout: neighbours x[2i], x[2i+1]
        d = x.shape[-1]
        theta = pos * base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        out = torch.empty_like(x)
        out[0::2] = x[0::2] * theta.cos() - x[1::2] * theta.sin()
        out[1::2] = x[0::2] * theta.sin() + x[1::2] * theta.cos()
        return out

    mistakes = [
        (interleaved, "Hint: that is the interleaved layout (GPT-J, the paper's notation), pairing neighbours; "
                      "here the pairs are the two halves, x[i] with x[i + d/2] (rotate_half)."),
        (lambda x, pos, base=10000.0: _rope_rotated(x, -pos, base),
         "Hint: you rotated clockwise (by -angle): the first half becomes x1 cos - x2 sin, the second "
         "x1 sin + x2 cos."),
        (lambda x, pos, base=10000.0: _rope_reference(x, pos),
         "Hint: use the base you are given: the case with base=100 got the result for base 10000."),
    ]
    return check_close(
        "rope_rotate",
        learner_fn,
        _rope_reference,
        _rope_cases(),
        mistakes=mistakes,
        hint=(
            "Hint: pair x[i] with x[i + d/2] (the two HALVES, not neighbours x[2i], x[2i+1]); the angle of pair i "
            "is pos * base**(-2i/d) for i = 0 .. d/2-1; rotate counter-clockwise: "
            "(x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos), i.e. x * cos + rotate_half(x) * sin with "
            "rotate_half(x) = cat(-x2, x1)."
        ),
        atol=1e-4,
    )
