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
    x = torch.randn(3, 8, generator=g) * 0.1  # mean(x**2) ~ 0.01: an eps of 0.01 halves it
    cases.append(Case("x of about 0.1 with eps=0.01", (x, torch.rand(8, generator=g) + 0.5), {"eps": 1e-2}))
    return cases


def _rms_reference(x, gain, eps=1e-6):
    return F.rms_norm(x, (x.size(-1),), gain, eps)


def _rms(x, eps, dim=-1, keepdim=True, centre=False):
    x = x - x.mean(dim=-1, keepdim=True) if centre else x
    ms = x.pow(2).mean(dim=dim, keepdim=keepdim) if dim is not None else x.pow(2).mean()
    return x / torch.sqrt(ms + eps)


_RMS_MISTAKES = [
    (lambda x, gain, eps=1e-6: _rms(x, eps, centre=True) * gain,
     "Hint: subtracting the mean first is LayerNorm's centring; RMSNorm divides x itself by its root mean square."),
    (lambda x, gain, eps=1e-6: x / (torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True)) + eps) * gain,
     "Hint: eps is added under the root, sqrt(mean(x**2) + eps), not to the root afterwards: the two differ "
     "where x is tiny."),
    (lambda x, gain, eps=1e-6: _rms(x, eps, dim=None) * gain,
     "Hint: that divides by the root mean square of the WHOLE tensor; each position needs its own, over the "
     "last dim: x.pow(2).mean(dim=-1, keepdim=True)."),
    (lambda x, gain, eps=1e-6: _rms(x, 0.0) * gain,
     "Hint: eps is missing: add it under the square root, or a vector of zeros gives 0/0 = nan."),
    (lambda x, gain, eps=1e-6: _rms(x, 1e-6) * gain,
     "Hint: use the eps passed in: the case with eps=0.01 got the result for eps=1e-6 (a constant in place of "
     "the argument)."),
    (lambda x, gain, eps=1e-6: _rms(x, eps),
     "Hint: multiply by the learned gain at the end: rms_norm(x) * gain."),
]


def check_rms_norm(learner_fn: Callable) -> CheckResult:
    """Notebook 05: ``rms_norm(x, gain, eps=1e-6)`` = x / sqrt(mean(x**2) + eps) * gain over the last dim."""
    return check_close(
        "rms_norm",
        learner_fn,
        _rms_reference,
        _rms_norm_cases(),
        hint=(
            "Hint: average x**2 over the LAST dim only (keepdim=True), add eps INSIDE the square root, divide, "
            "then multiply by the gain. Unlike LayerNorm, RMSNorm does not subtract the mean and has no bias."
        ),
        mistakes=_RMS_MISTAKES,
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
    mistakes = [
        (lambda x, f, norm, norm_first: norm(x) + f(norm(x)) if norm_first else norm(x + f(x)),
         "Hint: in pre-norm the residual carries the input as it came in: x + f(norm(x)); adding norm(x) back "
         "normalises the residual stream itself."),
        (lambda x, f, norm, norm_first: norm(x + f(x)),
         "Hint: your answer is post-norm whatever norm_first says; with norm_first=True normalise the "
         "sublayer's input instead: x + f(norm(x))."),
        (lambda x, f, norm, norm_first: x + f(norm(x)),
         "Hint: your answer is pre-norm whatever norm_first says; with norm_first=False add first, then "
         "normalise: norm(x + f(x))."),
        (lambda x, f, norm, norm_first: f(norm(x)) if norm_first else norm(f(x)),
         "Hint: the residual connection is missing: add x back to the sublayer's output (x + ...)."),
    ]
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
            mistakes=mistakes,
        )


def _encoder_block_params(d_model: int, d_ff: int) -> int:
    from labkit.layers import EncoderBlock

    return sum(p.numel() for p in EncoderBlock(d_model, 1, d_ff).parameters())


def check_encoder_block_params(learner_fn: Callable) -> CheckResult:
    """Notebook 05: ``encoder_block_params(d_model, d_ff)``, the number of parameters of an EncoderBlock."""
    cases = [Case(f"d_model={d}, d_ff={f}", (d, f)) for d, f in [(4, 8), (64, 256), (512, 2048), (768, 3072)]]
    mistakes = [
        (lambda d, f: 4 * d * d + 2 * d * f,
         "Hint: you counted the weight matrices only: add every Linear's bias (d_model for each attention "
         "projection, d_ff and d_model in the feed-forward network) and the LayerNorms' gains and biases."),
        (lambda d, f: _encoder_block_params(d, f) - 4 * d,
         "Hint: the LayerNorms have parameters too: 2 of them, each a gain and a bias of size d_model, "
         "4 * d_model in all."),
        (lambda d, f: 4 * d * d + 2 * d * f + 4 * d,
         "Hint: the Linear layers' biases are missing: 4 * d_model for attention, d_ff + d_model for the "
         "feed-forward network."),
    ]
    return check_close(
        "encoder_block_params",
        learner_fn,
        _encoder_block_params,
        cases,
        mistakes=mistakes,
        hint=(
            "Hint: every Linear has a weight (in × out) AND a bias (out). Attention has 4 projections "
            "(W_Q, W_K, W_V, W_O: d_model × d_model each, whatever n_heads is), the feed-forward network 2 "
            "(d_model × d_ff and d_ff × d_model), and each of the 2 LayerNorms a gain and a bias of size d_model."
        ),
    )


# --- notebook 06 -----------------------------------------------------------


def check_subsequent_mask(learner_fn: Callable) -> CheckResult:
    """Notebook 06: ``subsequent_mask(T)``, bool (T, T), True where query i must NOT see key j (j > i)."""
    mistakes = [
        (lambda T: torch.ones(T, T, dtype=torch.bool).tril(),
         "Hint: that mask is True where a query MAY attend (causal_mask's convention); nn.MultiheadAttention "
         "wants True where it may NOT: negate it (~mask), which is triu(diagonal=1)."),
        (lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
         "Hint: triu() keeps the diagonal, so every token is blocked from itself: pass diagonal=1."),
        (lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1),
         "Hint: that blocks the past (below the diagonal); the future is ABOVE it: triu(diagonal=1)."),
    ]
    return check_close(
        "subsequent_mask",
        learner_fn,
        lambda T: torch.ones(T, T, dtype=torch.bool).triu(1),
        [Case(f"T={T}", (T,)) for T in (1, 4, 7)],
        mistakes=mistakes,
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

    def labels_padded_with_pad_id(targets, bos_id, eos_id, pad_id):
        dec_in, labels = _teacher_forcing_reference(targets, bos_id, eos_id, pad_id)
        return dec_in, labels.masked_fill(labels == IGNORE_INDEX, pad_id)

    def unshifted(targets, bos_id, eos_id, pad_id):
        dec_in, _ = _teacher_forcing_reference(targets, bos_id, eos_id, pad_id)
        return dec_in, dec_in

    mistakes = [
        (labels_padded_with_pad_id,
         "Hint: padded label positions must hold -100, the ignore_index of F.cross_entropy; a pad_id there "
         "would teach the model to predict padding after EOS."),
        (unshifted,
         "Hint: the labels equal the decoder input, so each position would predict the token it already sees: "
         "labels are the input shifted one step left, target + [EOS] against [BOS] + target."),
    ]
    return check_close(
        "teacher_forcing",
        learner_fn,
        _teacher_forcing_reference,
        cases,
        mistakes=mistakes,
        hint=(
            "Hint: the decoder input is BOS followed by the target (the tokens seen so far), the labels are the "
            "target followed by EOS (the token to predict next): the same sequence shifted by one. Both have "
            "length max_len + 1; pad the input with pad_id but the labels with -100, the index cross_entropy ignores."
        ),
    )
