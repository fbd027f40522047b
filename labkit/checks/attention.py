"""Exercise checkers for attention (notebooks 03 and 04); see labkit.checks._core for the pattern.

Each checker runs the learner's function against the reference on seeded cases, with a
few *typical mistakes* (no max subtraction in softmax, no 1/sqrt(d_k), a mask read the
wrong way round, a reshape without its transpose…): when the learner's answers match one
of them on every case, the hint names that mistake (``check_close``'s ``mistakes``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._core import Case, CheckResult, check_close

__all__ = ["check_softmax", "check_scaled_dot_product_attention", "check_split_heads", "check_merge_heads"]


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


# ---------------------------------------------------------------------------
# Notebook 03: softmax, scaled dot-product attention
# ---------------------------------------------------------------------------


def _softmax_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    return [
        Case("a vector of 5", (_randn(g, 5),)),
        Case("scores (3, 4)", (_randn(g, 3, 4, scale=3.0),)),
        Case("a batch (2, 3, 6)", (_randn(g, 2, 3, 6),)),
        Case("large scores [[1000, 1001, 1002], [-1000, -1000, -1000]]",
             (torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1000.0, -1000.0]]),)),
    ]


def _softmax_naive(x):
    e = x.exp()
    return e / e.sum(dim=-1, keepdim=True)


def _softmax_global_max(x):
    e = (x - x.max()).exp()
    return e / e.sum(dim=-1, keepdim=True)


def _softmax_all(x):
    e = (x - x.max(dim=-1, keepdim=True).values).exp()
    return e / e.sum()


def _softmax_dim0(x):
    return torch.softmax(x, dim=0)


_SOFTMAX_HINT = (
    "Hint: subtract each row's maximum (x.max(dim=-1, keepdim=True).values), exponentiate, and divide by the "
    "sum over the last dimension (.sum(dim=-1, keepdim=True)); the output has the input's shape."
)
_SOFTMAX_OVERFLOW = (
    "Hint: exp overflows for large scores (exp(1000) is inf in float32, and inf/inf is nan). Subtract each "
    "row's maximum before exp: softmax(x) = softmax(x - c) for any constant c, and then the largest term is exp(0) = 1."
)


def check_softmax(learner_fn: Callable) -> CheckResult:
    """Notebook 03: a numerically stable ``softmax(x)`` over the last dimension."""
    mistakes = [
        (_softmax_naive, _SOFTMAX_OVERFLOW),
        (_softmax_global_max, "Hint: subtract each row's own maximum (keepdim=True), not the maximum of the whole "
                              "tensor: a row far below the global maximum underflows to 0/0 = nan."),
        (_softmax_all, "Hint: divide by the sum over the last dimension only (.sum(dim=-1, keepdim=True)), "
                       "not the sum of the whole tensor: every row must sum to 1."),
        (_softmax_dim0, "Hint: normalise over the last dimension (dim=-1), the keys, not the first: every row "
                        "must sum to 1."),
    ]
    return check_close("softmax", learner_fn, lambda x: torch.softmax(x, dim=-1), _softmax_cases(), _SOFTMAX_HINT,
                       mistakes=mistakes, nonfinite_hint=_SOFTMAX_OVERFLOW)


def _sdpa_reference(q, k, v, mask=None):
    from labkit.attention import scaled_dot_product_attention

    return scaled_dot_product_attention(q, k, v, mask)


def _sdpa_variant(q, k, v, mask=None, scale=None, invert=False, fill=float("-inf"), after=False, dim=-1):
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        allowed = ~mask if invert else mask
        if not after:
            scores = scores.masked_fill(~allowed, fill)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and after:
        weights = weights * allowed
    return weights @ v, weights


def _sdpa_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()  # True where query i may see key j <= i
    pad = torch.ones(2, 1, 5, dtype=torch.bool)
    pad[1, 0, 3:] = False  # the second sequence has 2 padding tokens at the end
    free = torch.rand(4, 6, generator=g) > 0.4
    free[:, 0] = True  # every query may attend somewhere
    return [
        Case("no mask, q k v (2, 4, 8)", (_randn(g, 2, 4, 8), _randn(g, 2, 4, 8), _randn(g, 2, 4, 8))),
        Case("causal mask (5, 5)", (_randn(g, 2, 5, 8), _randn(g, 2, 5, 8), _randn(g, 2, 5, 8), causal)),
        Case("padding mask (2, 1, 5)", (_randn(g, 2, 5, 4), _randn(g, 2, 5, 4), _randn(g, 2, 5, 4), pad)),
        Case("heads (2, 3, T_q=4, d_k=8), T_k=6, d_v=5, mask (4, 6)",
             (_randn(g, 2, 3, 4, 8), _randn(g, 2, 3, 6, 8), _randn(g, 2, 3, 6, 5), free)),
    ]


_SDPA_HINT = (
    "Hint: scores = q @ k.transpose(-2, -1) / sqrt(d_k); where mask is False set the score to -inf "
    "(scores.masked_fill(~mask, float('-inf'))); weights = softmax over the last dim; return (weights @ v, weights)."
)


def check_scaled_dot_product_attention(learner_fn: Callable) -> CheckResult:
    """Notebook 03: ``attention(q, k, v, mask=None) -> (out, weights)``, a bool mask True where a query may attend."""
    mistakes = [
        (lambda q, k, v, m=None: _sdpa_variant(q, k, v, m, scale=1.0),
         "Hint: the scores are not scaled: divide q @ k^T by sqrt(d_k), with d_k = q.size(-1)."),
        (lambda q, k, v, m=None: _sdpa_variant(q, k, v, m, scale=1.0 / q.size(-1)),
         "Hint: divide the scores by sqrt(d_k), not by d_k."),
        (lambda q, k, v, m=None: _sdpa_variant(q, k, v, m, invert=True),
         "Hint: the mask is read the wrong way round: here (as in F.scaled_dot_product_attention) True means "
         "the query MAY attend to that key; block where the mask is False (masked_fill(~mask, float('-inf')))."),
        (lambda q, k, v, m=None: _sdpa_variant(q, k, v, m, fill=0.0),
         "Hint: a blocked score must become -inf, not 0: exp(0) = 1, so a 0 score still gets weight. "
         "Use masked_fill(~mask, float('-inf'))."),
        (lambda q, k, v, m=None: _sdpa_variant(q, k, v, m, after=True),
         "Hint: mask the scores BEFORE the softmax (set them to -inf); zeroing weights after the softmax leaves "
         "rows that no longer sum to 1."),
        (lambda q, k, v, m=None: _sdpa_variant(q, k, v, m, dim=-2),
         "Hint: take the softmax over the keys, the last dimension (dim=-1): each query's weights sum to 1."),
    ]
    return check_close("scaled_dot_product_attention", learner_fn, _sdpa_reference, _sdpa_cases(), _SDPA_HINT,
                       mistakes=mistakes)


# ---------------------------------------------------------------------------
# Notebook 04: splitting d_model into heads and merging them back
# ---------------------------------------------------------------------------


def _split_reference(x, n_heads):
    B, T, d_model = x.shape
    return x.view(B, T, n_heads, d_model // n_heads).transpose(1, 2)  # (B, n_heads, T, d_k)


def _merge_reference(x):
    B, n_heads, T, d_k = x.shape
    return x.transpose(1, 2).reshape(B, T, n_heads * d_k)  # (B, T, d_model)


def check_split_heads(learner_fn: Callable) -> CheckResult:
    """Notebook 04: ``split_heads(x, n_heads)``: (B, T, d_model) -> (B, n_heads, T, d_k)."""
    g = torch.Generator().manual_seed(5)
    cases = [
        Case("x (2, 5, 12), n_heads=3", (_randn(g, 2, 5, 12), 3)),
        Case("x (1, 7, 8), n_heads=2", (_randn(g, 1, 7, 8), 2)),
        Case("x (3, 4, 16), n_heads=4", (_randn(g, 3, 4, 16), 4)),
        Case("x (2, 3, 6), n_heads=1", (_randn(g, 2, 3, 6), 1)),
    ]
    mistakes = [
        (lambda x, h: x.reshape(x.size(0), x.size(1), h, -1),
         "Hint: almost: after .view(B, T, n_heads, d_k) you still need .transpose(1, 2) to put the head axis "
         "before T."),
        (lambda x, h: x.reshape(x.size(0), h, x.size(1), -1),
         "Hint: a direct .view(B, n_heads, T, d_k) cuts the (T, d_model) block in the wrong places and mixes "
         "tokens into heads; view as (B, T, n_heads, d_k) first, then .transpose(1, 2)."),
        (lambda x, h: x.reshape(x.size(0), x.size(1), -1, h).permute(0, 3, 1, 2),
         "Hint: each head owns a contiguous slice of d_model (head i: features i*d_k to (i+1)*d_k), so split the "
         "last axis as (n_heads, d_k), not (d_k, n_heads)."),
    ]
    hint = "Hint: B, T, d_model = x.shape; x.view(B, T, n_heads, d_model // n_heads).transpose(1, 2)."
    return check_close("split_heads", learner_fn, _split_reference, cases, hint, mistakes=mistakes)


def check_merge_heads(learner_fn: Callable) -> CheckResult:
    """Notebook 04: ``merge_heads(x)``: (B, n_heads, T, d_k) -> (B, T, n_heads * d_k), the inverse of split_heads."""
    g = torch.Generator().manual_seed(6)
    cases = [
        Case("x (2, 3, 5, 4)", (_randn(g, 2, 3, 5, 4),)),
        Case("x (1, 2, 7, 4)", (_randn(g, 1, 2, 7, 4),)),
        Case("x (3, 4, 4, 4)", (_randn(g, 3, 4, 4, 4),)),
        Case("x (2, 1, 3, 6)", (_randn(g, 2, 1, 3, 6),)),
    ]
    mistakes = [
        (lambda x: x.reshape(x.size(0), x.size(2), -1),
         "Hint: reshaping (B, n_heads, T, d_k) straight to (B, T, d_model) interleaves tokens and heads; "
         ".transpose(1, 2) first, to (B, T, n_heads, d_k), then reshape."),
        (lambda x: x.permute(0, 2, 3, 1).reshape(x.size(0), x.size(2), -1),
         "Hint: put the heads side by side (head 0's d_k features, then head 1's, …): .transpose(1, 2) to "
         "(B, T, n_heads, d_k), then reshape; permuting d_k before n_heads interleaves them."),
    ]
    hint = ("Hint: x.transpose(1, 2) gives (B, T, n_heads, d_k); then .reshape(B, T, n_heads * d_k). (.view fails "
            "on the transposed tensor, which is not contiguous: use .reshape or .contiguous().view.)")
    return check_close("merge_heads", learner_fn, _merge_reference, cases, hint, mistakes=mistakes)
