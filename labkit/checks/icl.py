"""Checkers for notebook 11 (in-context learning: the few-shot prompt, the prefix-matching score);
see labkit.checks._core."""

from __future__ import annotations

from typing import Callable

import torch

from ._core import Case, CheckResult, check_close

__all__ = ["check_few_shot_prompt", "check_prefix_matching"]


# --- exercise: the few-shot prompt --------------------------------------------------------------


def _prompt_reference(examples, query, n_symbols):
    from labkit.tasks.icl import few_shot_prompt

    return few_shot_prompt(examples, query, n_symbols)


def _prompt_cases() -> list[Case]:
    return [Case("no example (zero-shot)", ([], 3, 8)),
            Case("one example", ([(2, 5)], 2, 8)),
            Case("four examples, the query among them", ([(0, 7), (1, 6), (4, 0), (1, 6)], 4, 8)),
            Case("three examples of another task size", ([(0, 2), (3, 1), (2, 0)], 1, 4))]


_PROMPT_MISTAKES = [
    (lambda ex, q, n: [t for x, y in ex for t in (x, y)] + [q],
     "Hint: outputs are their own tokens, n_symbols + y: written as y they would read as inputs."),
    (lambda ex, q, n: [t for x, y in ex for t in (x, n + y)] + [q, n],
     "Hint: the prompt ends with the query's input; the model writes the output itself."),
    (lambda ex, q, n: [t for x, y in ex for t in (n + y, x)] + [q],
     "Hint: each example is input first, then its output: x, n_symbols + y."),
]


def check_few_shot_prompt(learner_fn: Callable) -> CheckResult:
    """Notebook 11: ``few_shot_prompt(examples, query, n_symbols)`` -> token ids ``[x1, n+y1, ..., xk, n+yk, query]``
    for ``examples`` a list of (input, output) symbol pairs."""
    return check_close(
        "few_shot_prompt", learner_fn, _prompt_reference, _prompt_cases(),
        hint="Hint: for each (x, y) append x, then n_symbols + y; finish with the query's input alone.",
        mistakes=_PROMPT_MISTAKES,
    )


# --- exercise: the prefix-matching score ------------------------------------------------------------


def _prefix_reference(attn, tokens):
    from labkit.attention import prefix_matching_score

    return float(prefix_matching_score(attn.view(1, 1, *attn.shape), tokens.view(1, -1))[0])


def _prefix_cases() -> list[Case]:
    g = torch.Generator().manual_seed(110)

    def causal_random(T, sharp):
        scores = torch.randn(T, T, generator=g) * sharp
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        return scores.softmax(-1)

    half = torch.randperm(12, generator=g)[:6]
    repeated = torch.cat([half, half])  # every token of the second half appeared once before
    with_triple = torch.tensor([3, 1, 3, 2, 3, 1, 0, 2])  # a token seen twice before: two matching keys
    uniform = torch.ones(12, 12).tril() / torch.arange(1, 13).unsqueeze(1)
    return [Case("uniform causal attention, a sequence repeated twice", (uniform, repeated)),
            Case("random attention, a sequence repeated twice", (causal_random(12, 2.0), repeated)),
            Case("a token that occurred twice before (two matching keys)", (causal_random(8, 3.0), with_triple))]


_PREFIX_MISTAKES = [
    (lambda a, t: float(sum(a[i, p] for i in range(len(t)) for p in range(i) if t[p] == t[i]) /
                        max(1, sum(any(t[p] == t[i] for p in range(i)) for i in range(len(t))))),
     "Hint: the matching key is the position right *after* the earlier occurrence (p + 1), not the occurrence "
     "itself: an induction head looks at what followed the token last time."),
    (lambda a, t: float(sum(a[i, p + 1] for i in range(len(t)) for p in range(i) if t[p] == t[i]) / len(t)),
     "Hint: average over the queries that have an earlier occurrence only; the others have no matching key."),
]


def check_prefix_matching(learner_fn: Callable) -> CheckResult:
    """Notebook 11: ``prefix_matching(attn, tokens)`` for one head's (T, T) weights and (T,) tokens -> the mean, over
    the queries i whose token occurred before (at p < i), of the attention on the keys p + 1 (``labkit.attention``)."""
    return check_close(
        "prefix_matching", learner_fn, _prefix_reference, _prefix_cases(),
        hint=("Hint: for each query i, sum attn[i, p + 1] over the earlier positions p < i with tokens[p] == tokens[i]; "
              "average those sums over the queries that had at least one such p."),
        mistakes=_PREFIX_MISTAKES, atol=1e-5, rtol=1e-4,
    )
