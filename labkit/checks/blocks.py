"""Checkers for notebooks 05 (the encoder block) and 06 (the decoder); see labkit.checks._core for the pattern."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._core import Case, CheckResult, check_close

__all__ = [
    "check_rms_norm",
    "check_sublayer",
    "check_encoder_block_params",
    "check_subsequent_mask",
    "check_teacher_forcing",
]

IGNORE_INDEX = -100  # what F.cross_entropy skips by default


# --- notebook 05 -----------------------------------------------------------


def _rms_norm_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    cases = []
    for shape in [(6,), (3, 8), (2, 4, 16)]:
        x = torch.randn(*shape, generator=g) * 3 + 1  # a non-zero mean: RMSNorm must not remove it
        gain = torch.rand(shape[-1], generator=g) + 0.5
        cases.append(Case(f"x of shape {shape}", (x, gain)))
    x = torch.randn(4, 8, generator=g) * 1e-3  # tiny values: here eps matters
    cases.append(Case("tiny x (1e-3), where eps matters", (x, torch.ones(8)), {"eps": 1e-6}))
    return cases


def check_rms_norm(learner_fn: Callable) -> CheckResult:
    """Notebook 05: ``rms_norm(x, gain, eps=1e-6)`` = x / sqrt(mean(x**2) + eps) * gain over the last dim."""
    return check_close(
        "rms_norm",
        learner_fn,
        lambda x, gain, eps=1e-6: F.rms_norm(x, (x.size(-1),), gain, eps),
        _rms_norm_cases(),
        hint=(
            "Hint: average x**2 over the LAST dim only (keepdim=True), add eps INSIDE the square root, divide, "
            "then multiply by the gain. Unlike LayerNorm, RMSNorm does not subtract the mean and has no bias."
        ),
    )


def _sublayer_reference(x, sublayer, norm, norm_first):
    return x + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))


def _sublayer_cases() -> list[Case]:
    torch.manual_seed(0)  # module initialisation below; restored by the caller's own seeding
    g = torch.Generator().manual_seed(6)
    cases = []
    for shape, kind in [((5, 8), "linear"), ((2, 6, 16), "feed-forward")]:
        d = shape[-1]
        sub = nn.Linear(d, d) if kind == "linear" else nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
        norm = nn.LayerNorm(d)
        with torch.no_grad():  # a non-trivial gain and bias, so that where the norm goes shows
            norm.weight.copy_(torch.rand(d, generator=g) + 0.5)
            norm.bias.copy_(torch.randn(d, generator=g))
        x = torch.randn(*shape, generator=g) * 2 + 1
        for norm_first in (False, True):
            name = f"{'pre' if norm_first else 'post'}-norm, {kind} sublayer, x of shape {shape}"
            cases.append(Case(name, (x, sub, norm, norm_first)))
    return cases


def check_sublayer(learner_fn: Callable) -> CheckResult:
    """Notebook 05: ``sublayer(x, f, norm, norm_first)``: post-norm norm(x + f(x)), pre-norm x + f(norm(x))."""
    rng = torch.get_rng_state()
    try:
        cases = _sublayer_cases()
    finally:
        torch.set_rng_state(rng)  # don't disturb the notebook's random stream
    with torch.no_grad():
        return check_close(
            "sublayer",
            learner_fn,
            _sublayer_reference,
            cases,
            hint=(
                "Hint: post-norm (norm_first=False) normalises AFTER the residual add: norm(x + f(x)). "
                "Pre-norm (norm_first=True) normalises only the sublayer's input and adds the ORIGINAL x: "
                "x + f(norm(x)) (not norm(x) + f(norm(x)))."
            ),
        )


def _encoder_block_params(d_model: int, d_ff: int) -> int:
    from labkit.layers import EncoderBlock

    return sum(p.numel() for p in EncoderBlock(d_model, 1, d_ff).parameters())


def check_encoder_block_params(learner_fn: Callable) -> CheckResult:
    """Notebook 05: ``encoder_block_params(d_model, d_ff)``, the number of parameters of an EncoderBlock."""
    cases = [Case(f"d_model={d}, d_ff={f}", (d, f)) for d, f in [(4, 8), (64, 256), (512, 2048), (768, 3072)]]
    return check_close(
        "encoder_block_params",
        learner_fn,
        _encoder_block_params,
        cases,
        hint=(
            "Hint: every Linear has a weight (in × out) AND a bias (out). Attention has 4 projections "
            "(W_Q, W_K, W_V, W_O: d_model × d_model each, whatever n_heads is), the feed-forward network 2 "
            "(d_model × d_ff and d_ff × d_model), and each of the 2 LayerNorms a gain and a bias of size d_model."
        ),
    )


# --- notebook 06 -----------------------------------------------------------


def check_subsequent_mask(learner_fn: Callable) -> CheckResult:
    """Notebook 06: ``subsequent_mask(T)``, bool (T, T), True where query i must NOT see key j (j > i)."""
    return check_close(
        "subsequent_mask",
        learner_fn,
        lambda T: torch.ones(T, T, dtype=torch.bool).triu(1),
        [Case(f"T={T}", (T,)) for T in (1, 4, 7)],
        hint=(
            "Hint: in nn.MultiheadAttention's convention True means BLOCKED, so the mask is True strictly "
            "above the diagonal (the future): torch.triu(..., diagonal=1). A token may see itself, so the "
            "diagonal is False; tril gives the opposite convention (labkit.attention.causal_mask's)."
        ),
    )


def _teacher_forcing_reference(targets, bos_id, eos_id, pad_id):
    L = max(len(t) for t in targets) + 1
    dec_in = torch.full((len(targets), L), pad_id, dtype=torch.long)
    labels = torch.full((len(targets), L), IGNORE_INDEX, dtype=torch.long)
    for i, t in enumerate(targets):
        dec_in[i, : len(t) + 1] = torch.tensor([bos_id, *t])
        labels[i, : len(t) + 1] = torch.tensor([*t, eos_id])
    return dec_in, labels


def check_teacher_forcing(learner_fn: Callable) -> CheckResult:
    """Notebook 06: ``teacher_forcing(targets, bos_id, eos_id, pad_id)`` -> (decoder_input, labels), each (B, L+1)."""
    cases = [
        Case("one target [5, 6, 7]", ([[5, 6, 7]], 1, 2, 0)),
        Case("targets of equal length", ([[3, 4], [5, 6]], 1, 2, 0)),
        Case("targets of lengths 4, 1, 2 (padding needed)", ([[9, 8, 7, 6], [5], [4, 3]], 10, 11, 12)),
    ]
    return check_close(
        "teacher_forcing",
        learner_fn,
        _teacher_forcing_reference,
        cases,
        hint=(
            "Hint: the decoder input is BOS followed by the target (the tokens seen so far), the labels are the "
            "target followed by EOS (the token to predict next): the same sequence shifted by one. Both have "
            "length max_len + 1; pad the input with pad_id but the labels with -100, the index cross_entropy ignores."
        ),
    )
