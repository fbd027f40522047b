"""Statistics for evaluations: bootstrap error bars, whether a difference between two models is real (paired
bootstrap), and the Word Embedding Association Test (Caliskan et al., 2017) with its permutation p-value."""

from __future__ import annotations

import torch

__all__ = ["bootstrap_ci", "paired_bootstrap", "weat"]


def bootstrap_ci(metric, predictions, targets, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
    """``(value, low, high)``: ``metric(predictions, targets)`` and its percentile bootstrap interval (the test
    set resampled with replacement ``n_resamples`` times): how much the figure owes to which examples were drawn."""
    p, t = torch.as_tensor(predictions), torch.as_tensor(targets)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(t), (n_resamples, len(t)), generator=g)
    values = torch.tensor([metric(p[i], t[i]) for i in idx])
    a = (1 - level) / 2
    return float(metric(p, t)), float(values.quantile(a)), float(values.quantile(1 - a))


def paired_bootstrap(metric, predictions_a, predictions_b, targets, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Is model A better than model B on this test set? The difference ``metric(A) - metric(B)`` on the same
    bootstrap resamples: its value, 95% interval, and the share of resamples where A is not better (a one-sided
    p-value)."""
    a, b, t = torch.as_tensor(predictions_a), torch.as_tensor(predictions_b), torch.as_tensor(targets)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(t), (n_resamples, len(t)), generator=g)
    diffs = torch.tensor([metric(a[i], t[i]) - metric(b[i], t[i]) for i in idx])
    return {"difference": float(metric(a, t) - metric(b, t)), "low": float(diffs.quantile(0.025)),
            "high": float(diffs.quantile(0.975)), "p_not_better": float((diffs <= 0).double().mean())}


def weat(X: torch.Tensor, Y: torch.Tensor, A: torch.Tensor, B: torch.Tensor, n_permutations: int = 10_000,
         seed: int = 0) -> dict:
    """The Word Embedding Association Test (Caliskan et al., 2017) on embeddings (rows): target sets X, Y and
    attribute sets A, B. s(w) = mean cos(w, A) - mean cos(w, B); the effect size is
    (mean s over X - mean s over Y) / std of s over X and Y; the p-value is the share of random equal-size
    re-splits of X and Y whose statistic sum s(X) - sum s(Y) is at least the observed one."""
    def unit(m):
        return torch.nn.functional.normalize(torch.as_tensor(m, dtype=torch.float64), dim=-1)

    X, Y, A, B = map(unit, (X, Y, A, B))
    if min(len(X), len(Y), len(A), len(B)) < 2:
        raise ValueError("each of the four word sets needs at least 2 embeddings")
    targets = torch.cat([X, Y])
    s = (targets @ A.T).mean(1) - (targets @ B.T).mean(1)
    sx, sy = s[: len(X)], s[len(X):]
    stat = sx.sum() - sy.sum()
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(len(s), generator=g) for _ in range(n_permutations)])
    in_x = perms[:, : len(X)]
    perm_stat = 2 * s[in_x].sum(1) - s.sum()  # sum over the new X minus sum over the new Y
    return {"effect_size": float((sx.mean() - sy.mean()) / s.std()), "statistic": float(stat),
            "p_value": float((perm_stat >= stat - 1e-12).double().mean()), "s": s}
