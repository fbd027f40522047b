"""Checkers for notebook 08 (pretraining a GPT: sampling and perplexity); see labkit.checks._core.

A filtered logit must be ``-inf`` (so that softmax gives it probability exactly 0), so
the filter checkers compare *which* entries survive and their values separately,
and say what differs (0 instead of -inf, k-1 survivors, the wrong ones) rather than
only a largest difference; a learner's answer that matches a typical mistake (the
token that crosses p left out, a top-k of the whole batch...) gets that mistake's
hint (``labkit.checks._core.matching_mistake``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ._core import Case, CheckResult, Mistake, check_close, check_true, matching_mistake

__all__ = ["check_top_k_filter", "check_top_p_filter", "check_perplexity"]


def _logit_cases(seed: int) -> list[torch.Tensor]:
    """Seeded logits of several shapes: one row, a batch of rows, a (B, T, V) block."""
    g = torch.Generator().manual_seed(seed)
    return [
        3 * torch.randn(10, generator=g),  # (V,)
        3 * torch.randn(4, 65, generator=g),  # (B, V): a batch over the Shakespeare vocabulary
        2 * torch.randn(2, 3, 50, generator=g),  # (B, T, V)
    ]


def _filter_problem(got, want: torch.Tensor, logits: torch.Tensor, before: torch.Tensor,
                    case: str) -> str | None:
    """A sentence saying how ``got`` (a filtered copy of ``logits``) differs from ``want``, or None."""
    if not torch.equal(logits, before):
        return f"case '{case}': the input logits were changed in place; return a new tensor instead"
    if not isinstance(got, torch.Tensor):
        return f"case '{case}': expected a tensor of logits, got {type(got).__name__}"
    if got.shape != want.shape:
        return f"case '{case}': expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
    keep_want = torch.isfinite(want)
    keep_got = torch.isfinite(got)
    if torch.isnan(got).any():
        return f"case '{case}': the output contains NaN"
    dropped = ~keep_want
    if dropped.any() and keep_got[dropped].all():
        vals = got[dropped]
        zeros = bool((vals == 0).all())
        what = "0" if zeros else "finite values"
        return (f"case '{case}': the entries that should be filtered out hold {what}, not -inf "
                f"(after softmax a logit of 0 still has probability e^0/Z > 0)")
    if (got[keep_got] == float("inf")).any():
        return f"case '{case}': the output contains +inf"
    n_want = keep_want.sum(-1)
    n_got = keep_got.sum(-1)
    if not torch.equal(n_got, n_want):
        idx = (n_got != n_want).nonzero()[0].tolist()
        row = f" in row {idx}" if idx else ""
        return (f"case '{case}': {int(n_got[tuple(idx)])} entries survive{row}, "
                f"expected {int(n_want[tuple(idx)])}")
    if not torch.equal(keep_got, keep_want):
        return f"case '{case}': the right number of entries survive, but not the right ones (keep the LARGEST logits)"
    if not torch.allclose(got[keep_got], want[keep_want], atol=1e-6, rtol=1e-5):
        return (f"case '{case}': the surviving logits were changed; keep their values as they are "
                f"(the softmax that follows renormalises)")
    return None


def _check_filter(name: str, learner_fn: Callable, reference_fn: Callable, cases: list[Case],
                  hint: str, mistakes: list[Mistake]) -> CheckResult:
    hint = matching_mistake(learner_fn, cases, mistakes, atol=1e-6, rtol=1e-5) or hint

    def condition():
        for case in cases:
            logits, arg = case.args
            before = logits.clone()
            got = learner_fn(logits, arg)
            want = reference_fn(before.clone(), arg)
            problem = _filter_problem(got, want, logits, before, case.name)
            if problem:
                return problem
        return True

    return check_true(name, condition, hint=hint)


# --- exercise: top-k filtering ---------------------------------------------------------


def _top_k_cases() -> list[Case]:
    rows = _logit_cases(seed=80)
    ks = [(rows[0], 1), (rows[0], 3), (rows[1], 5), (rows[1], 65), (rows[2], 10)]
    return [Case(f"logits of shape {tuple(x.shape)}, k={k}", (x, k)) for x, k in ks]


def _kth_largest(logits, k):
    return torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)


_TOP_K_MISTAKES = [
    (lambda logits, k: logits.masked_fill(logits < _kth_largest(logits, k), 0.0),
     "Hint: a logit of 0 is not filtered out (softmax gives it e^0/Z > 0): masked_fill the dropped entries "
     "with float('-inf')."),
    (lambda logits, k: logits.masked_fill(logits <= _kth_largest(logits, k), float("-inf")),
     "Hint: `<=` drops the k-th largest logit too, leaving k-1 survivors: drop only the entries strictly "
     "below it (`logits < kth`)."),
    (lambda logits, k: logits.masked_fill(logits < torch.topk(logits.flatten(), k).values[-1], float("-inf")),
     "Hint: that is the top k of the whole tensor, flattened: each row needs its own top k, so call "
     "torch.topk(logits, k, dim=-1) and keep the row's k-th value with [..., -1:]."),
    (lambda logits, k: logits.masked_fill(logits > -torch.topk(-logits, k, dim=-1).values[..., -1:], float("-inf")),
     "Hint: those are the k SMALLEST logits: top-k keeps the largest (torch.topk's default, largest=True)."),
]


def check_top_k_filter(learner_fn: Callable) -> CheckResult:
    """Notebook 08: ``top_k_filter(logits, k)`` keeps the ``k`` largest logits along the last
    dimension and sets every other entry to ``-inf``; same shape as ``logits``."""
    from labkit.generate import top_k_filter

    return _check_filter(
        "top_k_filter",
        learner_fn,
        top_k_filter,
        _top_k_cases(),
        hint=(
            "Hint: torch.topk(logits, k, dim=-1) gives the k largest values of each row; the k-th largest is "
            "values[..., -1:]. Keep the entries >= it (not >, which keeps k-1) and fill the rest with "
            "float('-inf') (masked_fill). Work along the LAST dimension "
            "so that a batch of rows is filtered row by row."
        ),
        mistakes=_TOP_K_MISTAKES,
    )


# --- exercise: nucleus (top-p) filtering ------------------------------------------------


def _top_p_cases() -> list[Case]:
    rows = _logit_cases(seed=81)
    ps = [(rows[0], 0.5), (rows[0], 0.01), (rows[1], 0.9), (rows[1], 0.95), (rows[2], 0.75)]
    return [Case(f"logits of shape {tuple(x.shape)}, p={p}", (x, p)) for x, p in ps]


def _top_p_variant(logits, p, crossing_kept=True, unsort=True):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = F.softmax(sorted_logits, dim=-1)
    drop_sorted = (probs.cumsum(-1) - probs >= p) if crossing_kept else (probs.cumsum(-1) > p)
    if unsort:
        drop_sorted = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop_sorted, float("-inf"))


_TOP_P_MISTAKES = [
    (lambda logits, p: _top_p_variant(logits, p, crossing_kept=False),
     "Hint: you dropped the token whose probability carries the total past p; the nucleus includes it: "
     "decide on the mass BEFORE each token (cumsum - probs), not the cumulative sum that includes it."),
    (lambda logits, p: _top_p_variant(logits, p, unsort=False),
     "Hint: the keep/drop decisions are in SORTED order; map them back to the vocabulary order with the sort "
     "indices (drop_sorted.scatter(-1, sorted_idx, drop_sorted)) before masking the logits."),
    (lambda logits, p: _top_p_variant(logits, p, crossing_kept=False, unsort=False),
     "Hint: two slips: the decisions stay in sorted order (scatter them back with the sort indices), and the "
     "token that crosses p must be kept (compare cumsum - probs with p)."),
]


def check_top_p_filter(learner_fn: Callable) -> CheckResult:
    """Notebook 08: ``top_p_filter(logits, p)`` keeps the smallest set of most likely tokens whose
    probabilities sum to at least ``p`` (always at least the top token) and sets the rest to ``-inf``."""
    from labkit.generate import top_p_filter

    return _check_filter(
        "top_p_filter",
        learner_fn,
        top_p_filter,
        _top_p_cases(),
        hint=(
            "Hint: sort the logits in descending order, take softmax and a cumulative sum. A token belongs to "
            "the nucleus when the probability of the tokens BEFORE it (cumsum - prob) is still < p, so the "
            "token that crosses p is kept and the top token always is. Map the decision back to the original "
            "order (scatter with the sort indices) and fill the others with float('-inf')."
        ),
        mistakes=_TOP_P_MISTAKES,
    )


# --- exercise: perplexity from logits ----------------------------------------------------


def _perplexity_reference(logits: torch.Tensor, targets: torch.Tensor) -> float:
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).double(), targets.reshape(-1))
    return math.exp(loss.item())


def _perplexity_cases() -> list[Case]:
    g = torch.Generator().manual_seed(82)
    cases = []
    for B, T, V, scale in [(1, 8, 10, 1.0), (4, 16, 65, 2.0), (2, 5, 50, 4.0)]:
        logits = scale * torch.randn(B, T, V, generator=g)
        targets = torch.randint(0, V, (B, T), generator=g)
        cases.append(Case(f"logits (B={B}, T={T}, V={V}), targets (B={B}, T={T})", (logits, targets)))
    zeros = torch.zeros(2, 4, 65)
    cases.append(Case("uniform logits (all zero) over 65 characters", (zeros, torch.arange(8).view(2, 4))))
    return cases


def check_perplexity(learner_fn: Callable) -> CheckResult:
    """Notebook 08: ``perplexity(logits, targets)`` = exp(mean next-token cross-entropy in nats)
    for logits (B, T, V) and targets (B, T), as a Python float or a 0-dim tensor."""
    def flat_ce(logits, targets, **kw):
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), **kw)

    mistakes = [
        (lambda lg, t: torch.exp(flat_ce(lg, t, reduction="sum")),
         "Hint: exp of the SUMMED loss grows with the number of tokens: average the losses (F.cross_entropy's "
         "default reduction='mean') and exponentiate that."),
        (lambda lg, t: 2 ** flat_ce(lg, t),
         "Hint: F.cross_entropy measures in nats (natural log), so its perplexity is e**loss (torch.exp); "
         "2**loss mixes a base-2 power with a base-e loss."),
        (lambda lg, t: torch.exp(-lg.gather(-1, t.unsqueeze(-1)).mean()),
         "Hint: a raw logit is not a log-probability: take log_softmax over the vocabulary first (F.cross_entropy "
         "does it for you), then the target's -log p."),
    ]
    return check_close(
        "perplexity",
        learner_fn,
        _perplexity_reference,
        _perplexity_cases(),
        mistakes=mistakes,
        hint=(
            "Hint: flatten to (B*T, V) and (B*T,), take F.cross_entropy (it applies log-softmax and averages "
            "over all B*T predictions), then exp of that MEAN, not of the sum; use the natural exp/log "
            "(base 2 gives 2**H, a different number), and remember that uniform logits over V characters "
            "must give exactly V."
        ),
        atol=1e-4,
        rtol=1e-4,
    )
