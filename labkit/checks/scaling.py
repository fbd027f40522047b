"""Checkers for notebook 16 (scaling up: the online-softmax update of FlashAttention); see labkit.checks._core."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._core import Case, CheckResult, check_close

__all__ = ["check_online_softmax_update"]


# --- exercise: one step of the online softmax ------------------------------------------------------------------


def _flat(m, l, acc):
    return torch.cat([torch.as_tensor(m).flatten(), torch.as_tensor(l).flatten(), torch.as_tensor(acc).flatten()])


def _update_reference(m, l, acc, scores, v):
    from labkit.flash import online_softmax_update

    return _flat(*online_softmax_update(m, l, acc, scores, v))


def _state_after(scores, v):
    # the running (m, l, acc) of a block of scores seen before, computed directly
    m = scores.amax(-1)
    p = torch.exp(scores - m.unsqueeze(-1))
    return m, p.sum(-1), p @ v


def _update_cases() -> list[Case]:
    g = torch.Generator().manual_seed(160)
    s1, s2 = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    v1, v2 = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    start = (torch.full((3,), -math.inf, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
             torch.zeros(3, 2, dtype=torch.float64))
    big = s2 + 8.0  # the new block holds the larger scores: the old sums must be rescaled
    return [Case("the first block (m = -inf, l = 0, acc = 0)", (*start, s1, v1)),
            Case("a second block, smaller scores than the first", (*_state_after(s1 + 3.0, v1), s2, v2)),
            Case("a second block with larger scores (m grows)", (*_state_after(s1, v1), big, v2)),
            Case("batched rows (2, 3, ...)", (*_state_after(torch.stack([s1, s1 * 2]), v1), torch.stack([s2, big]), v2))]


def _no_rescale(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1))
    p = torch.exp(scores - m_new.unsqueeze(-1))
    return _flat(m_new, l + p.sum(-1), acc + p @ v)


def _no_shift(m, l, acc, scores, v):
    p = torch.exp(scores)
    return _flat(torch.maximum(m, scores.amax(-1)), l + p.sum(-1), acc + p @ v)


def check_online_softmax_update(learner_fn: Callable) -> CheckResult:
    """Notebook 16: ``online_softmax_update(m, l, acc, scores, v)`` -> ``(m, l, acc)``: the running max, the
    denominator sum(exp(s - m)) and the numerator sum(exp(s - m) v) after one more block of scores."""
    return check_close(
        "online_softmax_update", lambda *a: _flat(*learner_fn(*a)), _update_reference, _update_cases(),
        hint="Hint: m' = max(m, scores.amax(-1)); p = exp(scores - m'[..., None]); c = exp(m - m'); "
             "l' = c * l + p.sum(-1); acc' = c[..., None] * acc + p @ v.",
        mistakes=[(_no_rescale, "Hint: when the max grows, the old sums were computed with the old max: multiply l "
                                "and acc by exp(m - m') before adding the new block."),
                  (_no_shift, "Hint: subtract the running max before exp (exp(scores - m')), or large scores "
                              "overflow; l and acc are then sums of exp(s - m').")],
        atol=1e-9, rtol=1e-9,
    )
