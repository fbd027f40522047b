"""Checkers for notebook 07 (a translation transformer: token masks, beam search and BLEU's clipped precision); see
labkit.checks._core."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch

from ..metrics import clipped_ngram_matches
from ._core import Case, CheckResult, _compare, check_close, check_true, matching_mistake

__all__ = ["check_token_mask", "check_beam_step", "check_clipped_precision"]


# --- exercise: the token mask -------------------------------------------------------------


def _padding_cases() -> list[Case]:
    return [
        Case("one sentence, no padding", (torch.tensor([[5, 9, 4, 2]]), 0)),
        Case("a batch padded with id 0", (torch.tensor([[5, 9, 4, 2], [7, 2, 0, 0], [3, 2, 0, 0]]), 0)),
        Case("a batch padded with id 3 (pad_id is not always 0)",
             (torch.tensor([[8, 0, 2, 3, 3], [6, 1, 5, 9, 2]]), 3)),
    ]


def _token_reference(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    return ids.ne(pad_id)


_TOKEN_MISTAKES = [
    (lambda ids, pad_id: ids.eq(pad_id),
     "Hint: that mask is True at the padding. labkit's masks (like F.scaled_dot_product_attention's and Hugging "
     "Face's attention_mask) are True where attention is allowed, i.e. at the real tokens."),
    (lambda ids, pad_id: ids.ne(0),
     "Hint: that compares with 0 whatever pad_id is: compare with the pad_id argument."),
    (lambda ids, pad_id: ids.ne(pad_id).long(),
     "Hint: the values are right but the dtype is not: return a bool tensor (ids != pad_id), since a float "
     "or integer mask would be ADDED to the attention scores instead of blocking them."),
]


def check_token_mask(learner_fn: Callable) -> CheckResult:
    """Notebook 07: ``token_mask(ids, pad_id)`` -> a (B, T) bool tensor, True where ``ids`` is a real token and
    False at the padding (labkit's convention: True = may be attended to).

    The dtype is checked too: labkit's attention (like PyTorch's) ADDS a float mask to the scores, so a
    float or integer mask of 0s and 1s would not block the padding at all."""
    cases = _padding_cases()
    hint = matching_mistake(learner_fn, cases, _TOKEN_MISTAKES) or (
        "Hint: one comparison does it: ids != pad_id, a bool tensor of the same shape as ids.")

    def condition():
        for case in cases:
            ids, pad_id = case.args
            got = learner_fn(ids.clone(), pad_id)
            problem = _compare(got, _token_reference(ids, pad_id), 0, 0)
            if problem:
                return f"case '{case.name}': {problem}"
            if got.dtype != torch.bool:
                return f"case '{case.name}': the mask has dtype {got.dtype}; it must be torch.bool"
        return True

    return check_true("token_mask", condition, hint=hint)


# --- exercise: one step of beam search ----------------------------------------------------


def _beam_cases() -> list[Case]:
    g = torch.Generator().manual_seed(70)

    def case(name, k, V, beam_size):
        beam_logp = -torch.rand(k, generator=g, dtype=torch.float64).mul(3).sort(descending=True).values
        if k == 1:
            beam_logp = torch.zeros(1, dtype=torch.float64)  # the first step: one beam, the start token
        next_logp = torch.log_softmax(2 * torch.randn(k, V, generator=g, dtype=torch.float64), dim=-1)
        return Case(f"{name}: {k} beam(s), vocabulary {V}, beam_size={beam_size}", (beam_logp, next_logp, beam_size))

    return [case("the first step", 1, 8, 3), case("a middle step", 3, 10, 3), case("a wider beam", 4, 50, 4),
            case("keeping fewer than the live beams", 5, 12, 2)]


def _beam_reference(beam_logp: torch.Tensor, next_logp: torch.Tensor, beam_size: int):
    V = next_logp.size(-1)
    cand = (beam_logp.unsqueeze(1) + next_logp).flatten()  # (k * V,): every beam extended by every token
    top = torch.topk(cand, beam_size)
    return top.values, top.indices // V, top.indices % V


def _per_beam_best(beam_logp, next_logp, beam_size):
    best = (beam_logp.unsqueeze(1) + next_logp).max(-1)
    order = best.values.argsort(descending=True)[:beam_size]
    return best.values[order], order, best.indices[order]


def _swapped(beam_logp, next_logp, beam_size):
    V = next_logp.size(-1)
    top = torch.topk((beam_logp.unsqueeze(1) + next_logp).flatten(), beam_size)
    return top.values, top.indices % V, top.indices // V


_BEAM_MISTAKES = [
    (lambda b, n, k: (lambda top: (top.values, top.indices // n.size(-1), top.indices % n.size(-1)))(
        torch.topk(n.flatten(), k)),
     "Hint: those are the most likely NEXT tokens, ignoring how likely each beam already was: a candidate's "
     "score is its beam's log-probability PLUS the token's (beam_logp[:, None] + next_logp)."),
    (lambda b, n, k: (lambda top: (top.values, top.indices // n.size(-1), top.indices % n.size(-1)))(
        torch.topk((b.unsqueeze(1) * n).flatten(), k)),
     "Hint: log-probabilities ADD (log(p*q) = log p + log q); multiplying them is not the probability of "
     "the longer sequence."),
    (_per_beam_best,
     "Hint: that keeps each beam's single best token, so two good extensions of the same beam can never both "
     "survive: compare ALL beams x tokens candidates at once (flatten the (k, V) scores, then one topk)."),
    (_swapped,
     "Hint: beam and token are swapped: in the flattened (k * V) scores, index i is beam i // V and token i % V."),
]


def check_beam_step(learner_fn: Callable) -> CheckResult:
    """Notebook 07: ``beam_step(beam_logp, next_logp, beam_size)`` -> (scores, beam_index, token), each
    (beam_size,), best first: the ``beam_size`` best one-token extensions of the live beams, where
    ``beam_logp`` (k,) are the beams' log-probabilities and ``next_logp`` (k, V) their next-token log-probs."""
    return check_close(
        "beam_step", learner_fn, _beam_reference, _beam_cases(),
        hint=("Hint: scores = beam_logp[:, None] + next_logp is (k, V); flatten it, take torch.topk(..., "
              "beam_size) and turn each flat index i back into (beam i // V, token i % V)."),
        mistakes=_BEAM_MISTAKES, atol=1e-9, rtol=1e-9,
    )


# --- exercise: BLEU's clipped n-gram precision ------------------------------------------------


def _precision_cases() -> list[Case]:
    return [
        Case("Papineni et al.'s example: 'the the the the' against 'the cat', unigrams",
             ("the the the the".split(), ["the cat".split()], 1)),
        Case("two references: each n-gram clipped by the reference that has it most, unigrams",
             ("the cat the cat".split(), ["the cat".split(), "the cat sat on the mat".split()], 1)),
        Case("the same, bigrams",
             ("the cat the cat".split(), ["the cat".split(), "the cat sat on the mat".split()], 2)),
        Case("a translation, trigrams",
             ("je ne trouve pas mes clés .".split(),
              ["je ne trouve pas mes clés .".split(), "je n' arrive pas à trouver mes clés .".split()], 3)),
        Case("a hypothesis shorter than n: no n-grams at all", (["merci"], ["merci beaucoup".split()], 2)),
    ]


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _unclipped(hyp, refs, n):
    grams = _ngrams(hyp, n)
    seen = set().union(*(_ngrams(r, n) for r in refs))
    return sum(c for g, c in grams.items() if g in seen), sum(grams.values())


def _clipped_by_sum(hyp, refs, n):
    total_ref = sum((_ngrams(r, n) for r in refs), Counter())
    grams = _ngrams(hyp, n)
    return sum(min(c, total_ref[g]) for g, c in grams.items()), sum(grams.values())


def _distinct_only(hyp, refs, n):
    grams = _ngrams(hyp, n)
    seen = set().union(*(_ngrams(r, n) for r in refs))
    return len(set(grams) & seen), len(grams)


def _one_window_short(hyp, refs, n):
    grams = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n))
    most = Counter()
    for r in refs:
        for g, c in Counter(tuple(r[i:i + n]) for i in range(len(r) - n)).items():
            most[g] = max(most[g], c)
    return sum(min(c, most[g]) for g, c in grams.items()), sum(grams.values())


_PRECISION_MISTAKES = [
    (_unclipped,
     "Hint: that counts every n-gram of the hypothesis that appears in a reference, however often: 'the the the the' "
     "would score 4/4. Clip each n-gram's count at the number of times it occurs in a reference."),
    (_clipped_by_sum,
     "Hint: that clips at the n-gram's count summed over all the references; BLEU clips at its largest count in any "
     "ONE reference (max over the references, not their sum)."),
    (_distinct_only,
     "Hint: that counts each distinct n-gram once; the hypothesis's repeated n-grams count as often as they occur "
     "(up to the clip), and the total is every n-gram position, repeats included."),
    (_one_window_short,
     "Hint: a sequence of length L has L - n + 1 n-grams (range(len(tokens) - n + 1)): the last one is missing."),
]


def check_clipped_precision(learner_fn: Callable) -> CheckResult:
    """Notebook 07: ``clipped_precision(hypothesis, references, n)`` -> ``(matches, total)`` for one tokenised
    sentence: ``total`` its n-grams, ``matches`` those found in the references, each distinct n-gram counted at
    most as often as it occurs in the one reference that has it most (``labkit.metrics.clipped_ngram_matches``)."""
    return check_close(
        "clipped_precision", learner_fn, clipped_ngram_matches, _precision_cases(),
        hint=("Hint: count the hypothesis's n-grams (collections.Counter of tuples), and for each take min(its count, "
              "its largest count in any single reference); total = len(hypothesis) - n + 1 (or 0)."),
        mistakes=_PRECISION_MISTAKES,
    )
