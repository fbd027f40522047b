"""Exercise checkers for pretraining (notebook 09: BERT's masking and its accuracy).

See labkit.checks._core for the pattern.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._core import Case, CheckResult, check_close, check_true

__all__ = ["check_mask_tokens", "check_masked_accuracy"]


# --- 09: the 80/10/10 masking -----------------------------------------------------------

_MASK_HINT = ("Hint: choose each non-special position with probability mlm_probability; of the chosen, "
              "80% become [MASK], 10% a random token, 10% stay as they are; labels hold the original id "
              "at chosen positions and -100 everywhere else.")


def _masking_problems(learner_fn: Callable, p: float, seed: int) -> str | None:
    """None if ``learner_fn`` masks a large batch as BERT does, else what is wrong."""
    mask_id, vocab = 4, 1000
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (400, 250), generator=g)  # (B, T) ordinary tokens
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    ids[::4, -60:] = 0  # every fourth row ends in padding
    special = ids < 5
    original = ids.clone()
    torch.manual_seed(seed)
    out = learner_fn(ids, mask_id, vocab, special, mlm_probability=p)
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        return "return a tuple (masked_input_ids, labels) of two tensors"
    masked, labels = out
    if masked.shape != ids.shape or labels.shape != ids.shape:
        return (f"both outputs must have the input's shape {tuple(ids.shape)}, got "
                f"{tuple(masked.shape)} and {tuple(labels.shape)}")
    if not torch.equal(ids, original):
        return "the input_ids were changed in place: work on a copy (input_ids.clone() or masked_fill)"
    chosen = labels != -100
    if not chosen.any():
        return "no position has a label: labels should hold the original id at the chosen positions"
    if chosen.all():
        return ("every position has a label: set labels to -100 where a position was not chosen, "
                "so that the loss ignores it")
    if not torch.equal(labels[chosen], ids[chosen]):
        return "labels must hold the ORIGINAL token id at chosen positions (not the masked or random one)"
    if (chosen & special).any():
        return "special tokens ([CLS], [SEP], [PAD]) were chosen: leave out positions where special_tokens_mask is True"
    if not torch.equal(masked[~chosen], ids[~chosen]):
        return "positions that were not chosen changed: only chosen positions may become [MASK] or a random token"
    rate = chosen.sum().item() / (~special).sum().item()
    if abs(rate - p) > 0.01:
        return f"with mlm_probability={p} you chose {rate:.1%} of the ordinary tokens, expected about {p:.0%}"
    to_mask = (masked == mask_id) & chosen
    same = (masked == ids) & chosen
    n = chosen.sum().item()
    f_mask, f_same = to_mask.sum().item() / n, same.sum().item() / n
    f_random = 1.0 - f_mask - f_same
    if f_mask > 0.97:
        return ("every chosen token became [MASK]: BERT replaces only 80% with [MASK], 10% with a random "
                "token and leaves 10% unchanged, so that the model cannot rely on seeing [MASK]")
    if abs(f_mask - 0.8) > 0.03:
        return f"{f_mask:.1%} of the chosen tokens became [MASK], expected about 80%"
    if f_random < 0.06:
        return (f"only {f_random:.1%} of the chosen tokens became a random token, expected about 10%: of the "
                "20% NOT masked, half (probability 0.5, not 0.1) become random")
    if abs(f_random - 0.1) > 0.025 or abs(f_same - 0.1) > 0.025:
        return (f"of the chosen tokens {f_random:.1%} became random and {f_same:.1%} stayed the same, "
                "expected about 10% each")
    replaced = masked[chosen & (masked != mask_id) & (masked != ids)]
    if replaced.min() < 0 or replaced.max() >= vocab:
        return f"random tokens must be ids in 0..vocab_size-1 ({vocab - 1}), got {replaced.min()}..{replaced.max()}"
    if replaced.unique().numel() < 100:
        return "the random tokens are not spread over the vocabulary: draw them with torch.randint(vocab_size, ...)"
    return None


def check_mask_tokens(learner_fn: Callable) -> CheckResult:
    """Notebook 09: ``mask_tokens(input_ids, mask_token_id, vocab_size, special_tokens_mask,
    mlm_probability=0.15) -> (masked_input_ids, labels)``, BERT's 80/10/10 masking, checked on
    100,000 tokens (the proportions must be right within a few percent) at two probabilities."""

    def condition():
        for p, seed in ((0.15, 0), (0.3, 1)):
            problem = _masking_problems(learner_fn, p, seed)
            if problem:
                return problem
        return True

    return check_true("mask_tokens", condition, hint=_MASK_HINT)


# --- 09: accuracy on the masked positions only ---------------------------------------------

def _masked_accuracy_ref(logits: torch.Tensor, labels: torch.Tensor) -> float:
    chosen = labels != -100
    return (logits.argmax(-1)[chosen] == labels[chosen]).float().mean().item()


def _accuracy_cases(seed: int = 0) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    cases = []
    for B, T, V in ((2, 8, 11), (4, 16, 50), (8, 32, 100)):
        labels = torch.randint(V, (B, T), generator=g)
        logits = torch.randn(B, T, V, generator=g)
        right = torch.rand(B, T, generator=g) < 0.6  # the model is right at about 60% of positions
        logits.scatter_add_(-1, labels.unsqueeze(-1), 10.0 * right.float().unsqueeze(-1))
        keep = torch.rand(B, T, generator=g) < 0.3
        keep[0, 0] = True  # at least one labelled position
        cases.append(Case(f"logits {(B, T, V)}", (logits, labels.masked_fill(~keep, -100))))
    return cases


def check_masked_accuracy(learner_fn: Callable) -> CheckResult:
    """Notebook 09: ``masked_accuracy(logits (B, T, V), labels (B, T)) -> float``, the fraction of
    positions with a label (not -100) where the arg-max of the logits is the label."""
    hint = ("Hint: keep only the positions where labels != -100 (a boolean mask), compare logits.argmax(-1) "
            "with the labels there, and take the mean of the matches as a float.")
    mistakes = [
        (lambda logits, labels: (logits.argmax(-1) == labels).float().mean().item(),
         "Hint: you averaged over ALL positions; positions whose label is -100 were not masked and must not "
         "count: select labels != -100 first, then average the matches there."),
        (lambda logits, labels: (logits.argmax(-1) == labels)[labels != -100].float().sum().item(),
         "Hint: that is the NUMBER of correct predictions; divide by the number of labelled positions (.mean())."),
    ]
    return check_close("masked_accuracy", learner_fn, _masked_accuracy_ref, _accuracy_cases(), hint=hint,
                       atol=1e-6, mistakes=mistakes)
