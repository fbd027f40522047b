"""Checkers for notebook 12 (from a language model to an assistant: the prompt-masked SFT loss, the DPO loss, one
decoding step with the KV cache); see labkit.checks._core."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._core import Case, CheckResult, check_close

__all__ = ["check_sft_loss", "check_dpo_loss", "check_cached_attention"]


# --- exercise: the prompt-masked SFT loss -------------------------------------------------------------


def _sft_reference(logits, ids, assistant_mask):
    # position t predicts token t + 1; score it only where token t + 1 is the assistant's
    logits, targets, keep = logits[:, :-1], ids[:, 1:], assistant_mask[:, 1:]
    return F.cross_entropy(logits[keep], targets[keep])


def _sft_cases() -> list[Case]:
    g = torch.Generator().manual_seed(120)

    def case(B, T, V, answer_from):
        logits = torch.randn(B, T, V, generator=g) * 2
        ids = torch.randint(V, (B, T), generator=g)
        mask = torch.zeros(B, T, dtype=torch.bool)
        for b, start in enumerate(answer_from):
            mask[b, start:] = True
        return logits, ids, mask

    return [Case("one conversation, the answer is the last 3 tokens", case(1, 8, 11, [5])),
            Case("two conversations, answers of different lengths", case(2, 10, 7, [3, 8])),
            Case("a prompt much longer than its answer", case(3, 16, 5, [14, 12, 15]))]


_SFT_MISTAKES = [
    (lambda lg, ids, m: F.cross_entropy(lg[m], ids[m]),
     "Hint: position t predicts token t + 1: compare logits[:, :-1] with ids[:, 1:] (and the mask shifted with them)."),
    (lambda lg, ids, m: F.cross_entropy(lg[:, :-1].reshape(-1, lg.size(-1)), ids[:, 1:].reshape(-1)),
     "Hint: only the assistant's tokens carry loss: keep the positions whose next token is marked in assistant_mask."),
    (lambda lg, ids, m: F.cross_entropy(lg[:, :-1][m[:, :-1]], ids[:, 1:][m[:, :-1]]),
     "Hint: shift the mask with the targets: the loss at position t is on token t + 1, so use assistant_mask[:, 1:]."),
    (lambda lg, ids, m: F.cross_entropy(lg[:, :-1][m[:, 1:]], ids[:, 1:][m[:, 1:]], reduction="sum"),
     "Hint: the mean over the scored tokens, not the sum (so the loss does not grow with the answer's length)."),
]


def check_sft_loss(learner_fn: Callable) -> CheckResult:
    """Notebook 12: ``sft_loss(logits, ids, assistant_mask)`` for logits (B, T, V), ids (B, T) and a boolean mask
    (B, T) of the assistant's tokens -> the mean cross-entropy of predicting each assistant token from the
    position before it, every other position ignored."""
    return check_close(
        "sft_loss", learner_fn, _sft_reference, _sft_cases(),
        hint=("Hint: shift by one (logits[:, :-1] predict ids[:, 1:]), keep the positions where assistant_mask[:, 1:] "
              "is True, and take F.cross_entropy over those."),
        mistakes=_SFT_MISTAKES, atol=1e-5, rtol=1e-4,
    )


# --- exercise: the DPO loss ------------------------------------------------------------------------------


def _dpo_reference(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    from labkit.dpo import dpo_loss

    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta).loss


def _dpo_cases() -> list[Case]:
    g = torch.Generator().manual_seed(121)

    def logps(B):
        return tuple(-torch.rand(B, generator=g) * 30 for _ in range(4))

    same = -torch.rand(3, generator=g) * 20
    return [Case("four pairs, beta 0.1", (*logps(4), 0.1)),
            Case("two pairs, beta 0.5", (*logps(2), 0.5)),
            Case("the policy equal to the reference (log 2 per pair)", (same, same - 1, same, same - 1, 1.0))]


_DPO_MISTAKES = [
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(),
     "Hint: each log-probability is measured against the reference: use (pc - rc) - (pr - rr), not pc - pr."),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pr - rr) - (pc - rc))).mean(),
     "Hint: the preferred answer's margin comes first: beta * ((pc - rc) - (pr - rr))."),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid((pc - rc) - (pr - rr)).mean(),
     "Hint: multiply the margin by beta before the log-sigmoid."),
    (lambda pc, pr, rc, rr, b: -torch.sigmoid(b * ((pc - rc) - (pr - rr))).mean(),
     "Hint: the loss is -log(sigmoid(...)): use F.logsigmoid, which is also stable for large margins."),
]


def check_dpo_loss(learner_fn: Callable) -> CheckResult:
    """Notebook 12: ``dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)`` for four (B,)
    tensors of sequence log-probabilities -> the mean over pairs of
    -log sigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))) (``labkit.dpo``)."""
    return check_close(
        "dpo_loss", learner_fn, _dpo_reference, _dpo_cases(),
        hint=("Hint: margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected); "
              "loss = -F.logsigmoid(beta * margin).mean()."),
        mistakes=_DPO_MISTAKES, atol=1e-5, rtol=1e-4,
    )


# --- exercise: one decoding step with the KV cache ------------------------------------------------------


def _cached_reference(q, k, v, cache_k, cache_v):
    keys, values = torch.cat([cache_k, k], dim=2), torch.cat([cache_v, v], dim=2)  # (B, H, n + 1, hs)
    weights = torch.softmax(q @ keys.transpose(-2, -1) / q.size(-1) ** 0.5, dim=-1)  # (B, H, 1, n + 1)
    return weights @ values, keys, values


def _cached_cases() -> list[Case]:
    g = torch.Generator().manual_seed(121)

    def case(B, H, n, hs):
        new = [torch.randn(B, H, 1, hs, generator=g, dtype=torch.float64) for _ in range(3)]
        return (*new, torch.randn(B, H, n, hs, generator=g, dtype=torch.float64),
                torch.randn(B, H, n, hs, generator=g, dtype=torch.float64))

    return [Case("the first token: an empty cache (n = 0), so it attends to itself alone", case(1, 2, 0, 4)),
            Case("5 tokens cached, 2 sequences, 3 heads", case(2, 3, 5, 8)),
            Case("a longer cache: 11 tokens, head size 16", case(1, 4, 11, 16))]


def _without_own(q, k, v, ck, cv):
    w = torch.softmax(q @ ck.transpose(-2, -1) / q.size(-1) ** 0.5, dim=-1)
    return w @ cv, torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)


def _unscaled(q, k, v, ck, cv):
    keys, values = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)
    return torch.softmax(q @ keys.transpose(-2, -1), dim=-1) @ values, keys, values


def _masked_last(q, k, v, ck, cv):
    keys, values = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)
    s = q @ keys.transpose(-2, -1) / q.size(-1) ** 0.5
    s[..., -1] = float("-inf")
    return torch.softmax(s, dim=-1) @ values, keys, values


_CACHED_MISTAKES = [
    (_without_own,
     "Hint: the new token attends to every earlier token AND to itself: append its k and v to the cache first, then "
     "attend over the n + 1 keys."),
    (_unscaled, "Hint: scale the scores by 1 / sqrt(head size), as in every attention layer."),
    (_masked_last,
     "Hint: no mask is needed: the new token is the last one, so everything in the cache (and itself) is in its past."),
]


def check_cached_attention(learner_fn: Callable) -> CheckResult:
    """Notebook 12: ``cached_attention(q, k, v, cache_k, cache_v)`` -> ``(out, keys, values)``: the new token's
    query, key and value (B, H, 1, hs), the cached keys and values of the n earlier tokens (B, H, n, hs); the new
    token's attention output (B, H, 1, hs) over all n + 1, and the grown cache (B, H, n + 1, hs) each."""
    return check_close(
        "cached_attention", learner_fn, _cached_reference, _cached_cases(),
        hint=("Hint: keys = torch.cat([cache_k, k], dim=2) (the positions axis), the same for the values; then "
              "softmax(q @ keys.transpose(-2, -1) / sqrt(hs)) @ values."),
        mistakes=_CACHED_MISTAKES, atol=1e-9, rtol=1e-9,
    )
