"""In-context learning tasks (notebook 11): random permutations of a few symbols, shown as input→output examples.

Every sequence is one **task**, a random permutation π of ``n_symbols`` symbols, shown as ``n_pairs`` examples
side by side::

    x1 π(x1) x2 π(x2) ... x16 π(x16)        inputs are tokens 0..n-1, outputs n..2n-1

The inputs are drawn at random (with repeats), so π is never written down: to predict π(x_k) a model must read it
off the examples before it. Over all tasks every output is equally likely, so a model that ignores its context
scores 1/n. A query whose input already appeared can be answered by **copying** (an induction head); one whose input
did not can only be **inferred** (by elimination: a permutation never repeats an output). Tasks are split by
permutation: every ``held_out_every``-th permutation in lexicographic order is held out, never drawn for training.

The functions take the task family as any object with ``n_symbols``, ``n_pairs`` and ``held_out_every`` (the
zoo's ``labkit.recipes.gpt_icl.ICL`` tasks, for one)::

    seqs, perms = sample_sequences(ICL, 512, torch.Generator().manual_seed(0), held_out=True)
    icl_accuracy(model, seqs, ICL)["by_shot"]        # accuracy after 0, 1, 2, ... examples
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import capture_attention, prefix_matching_score
from ..device import module_device, to_device

__all__ = ["all_permutations", "task_ranks", "sample_sequences", "few_shot_prompt", "icl_batch", "icl_accuracy",
           "icl_loss", "induction_scores"]


@lru_cache(maxsize=4)
def all_permutations(n: int) -> torch.Tensor:
    """Every permutation of range(n), in lexicographic order: (n!, n); row r is the permutation of rank r."""
    if not 2 <= n <= 9:
        raise ValueError(f"n_symbols must be between 2 and 9 (n! tasks are listed in memory), got {n}")
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)


@lru_cache(maxsize=8)
def task_ranks(n: int, held_out_every: int, held_out: bool) -> torch.Tensor:
    """The ranks of the training tasks (``held_out=False``) or of the held-out ones; the two never overlap."""
    if held_out_every < 2:
        raise ValueError(f"held_out_every must be at least 2 (1 would hold out every task), got {held_out_every}")
    ranks = torch.arange(math.factorial(n))
    chosen = (ranks % held_out_every == 0) if held_out else (ranks % held_out_every != 0)
    return ranks[chosen]


def sample_sequences(tasks, batch_size: int, generator: torch.Generator, held_out: bool = False,
                     n_pairs: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` sequences ``x1 π(x1) x2 π(x2) ...``, one task each -> (seqs (B, 2 n_pairs), perms (B, n)).

    Training tasks unless ``held_out``; inputs drawn uniformly with repeats; outputs are token ``n + π(x)``."""
    n, P = tasks.n_symbols, n_pairs or tasks.n_pairs
    ranks = task_ranks(n, tasks.held_out_every, held_out)
    perms = all_permutations(n)[ranks[torch.randint(len(ranks), (batch_size,), generator=generator)]]  # (B, n)
    x = torch.randint(n, (batch_size, P), generator=generator)  # (B, P) inputs
    y = perms.gather(1, x) + n  # (B, P) outputs, as tokens n..2n-1
    return torch.stack([x, y], dim=2).view(batch_size, 2 * P), perms


def few_shot_prompt(examples, query: int, n_symbols: int) -> list[int]:
    """The token ids of a few-shot prompt: each ``(x, y)`` example as ``x, n_symbols + y``, then the query's
    input ``query`` alone (the model writes its output). Symbols are ``0..n_symbols-1`` on both sides."""
    for x, y in examples:
        if not (0 <= x < n_symbols and 0 <= y < n_symbols):
            raise ValueError(f"example ({x}, {y}): inputs and outputs must be symbols 0..{n_symbols - 1}")
    if not 0 <= query < n_symbols:
        raise ValueError(f"query {query}: must be an input symbol 0..{n_symbols - 1}")
    ids = []
    for x, y in examples:
        ids += [int(x), n_symbols + int(y)]
    return ids + [int(query)]


def icl_batch(seqs: torch.Tensor, n_symbols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx, targets) for next-token training: every token but the last in, the next one out, and only
    the outputs scored (an input is random: there is nothing to learn in predicting it)."""
    idx, targets = seqs[:, :-1], seqs[:, 1:].clone()
    targets[targets < n_symbols] = -100  # the next token is an input: not scored
    return idx, targets




@torch.no_grad()
def icl_accuracy(model: nn.Module, seqs: torch.Tensor, tasks, batch_size: int = 512) -> dict:
    """How often the model's most likely *output* symbol is right, by the number of examples before the query.

    ``by_shot[k]``: accuracy on the query that follows k examples; ``seen[k]`` / ``unseen[k]``: the same over
    queries whose input did / did not appear among those k (copying vs inference), with their counts
    ``n_seen[k]`` / ``n_unseen[k]``; ``unseen_ceiling[k]``: the best an ideal reasoner can do on the unseen
    ones, 1 / (symbols whose output has not appeared yet)."""
    was_training = model.training
    model.eval()
    n, device = tasks.n_symbols, module_device(model)
    correct = []
    for i in range(0, len(seqs), batch_size):
        s = seqs[i:i + batch_size].to(device)
        logits = model(s[:, :-1]).logits[:, 0::2, n:2 * n]  # (B, P, n): at each input, scores of the outputs
        correct.append((logits.argmax(-1) == s[:, 1::2] - n).cpu())
    model.train(was_training)
    correct = torch.cat(correct).float()  # (N, P)
    x, y = seqs[:, 0::2], seqs[:, 1::2]  # (N, P)
    P = x.size(1)
    earlier = torch.ones(P, P, dtype=torch.bool).tril(-1)  # [k, j]: example j comes before query k
    seen = ((x.unsqueeze(2) == x.unsqueeze(1)) & earlier).any(-1)  # (N, P)
    distinct_out = torch.stack([torch.tensor([len(set(row[:k].tolist())) for k in range(P)]) for row in y])
    ceiling = 1.0 / (n - distinct_out).clamp(min=1).float()  # (N, P)

    def mean_where(mask):
        count = mask.sum(0)
        return ((correct * mask).sum(0) / count.clamp(min=1)).tolist(), count.tolist()

    seen_acc, n_seen = mean_where(seen.float())
    unseen_acc, n_unseen = mean_where((~seen).float())
    unseen_ceiling = (((~seen).float() * ceiling).sum(0) / (~seen).float().sum(0).clamp(min=1)).tolist()
    return {"by_shot": correct.mean(0).tolist(), "seen": seen_acc, "unseen": unseen_acc, "n_seen": n_seen,
            "n_unseen": n_unseen, "unseen_ceiling": unseen_ceiling, "chance": 1.0 / n,
            "seen_overall": float((correct * seen).sum() / seen.sum().clamp(min=1)),
            "unseen_overall": float((correct * ~seen).sum() / (~seen).sum().clamp(min=1))}


@torch.no_grad()
def icl_loss(model: nn.Module, seqs: torch.Tensor, tasks) -> float:
    """Mean cross-entropy on the outputs of ``seqs`` (what training minimises)."""
    idx, targets = to_device(icl_batch(seqs, tasks.n_symbols), module_device(model))
    logits = model(idx).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100).item()


@torch.no_grad()
def induction_scores(model: nn.Module, seqs: torch.Tensor, tasks) -> torch.Tensor:
    """(n_layers, n_heads) prefix-matching scores on ``seqs``: at each input that appeared before, the attention
    on the output that followed its earlier occurrence (``labkit.attention.prefix_matching_score``)."""
    idx = seqs[:, :-1].to(module_device(model))
    with capture_attention(model, detach=True) as attn:
        model(idx)
    inputs = idx < tasks.n_symbols  # score the queries at inputs only (the ones that predict an output)
    return torch.stack([prefix_matching_score(a, idx, inputs) for a in attn.layers()]).cpu()
