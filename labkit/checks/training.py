"""Checkers for the training loop's exercise (notebook 00): the mean squared error."""

from __future__ import annotations

from typing import Callable

import torch

from ._core import CheckResult, check_close, random_cases

__all__ = ["check_warmup_mse"]


def check_warmup_mse(learner_fn: Callable) -> CheckResult:
    """Notebook 00 warm-up: mean squared error ``mse(pred, target)`` as a 0-dim tensor."""
    mistakes = [
        (lambda p, t: ((p - t) ** 2).sum(),
         "Hint: .sum() adds the squared errors up; the MEAN squared error divides by how many there are."),
        (lambda p, t: (p - t).abs().mean(),
         "Hint: that is the mean ABSOLUTE error: square each difference ((pred - target) ** 2) instead of .abs()."),
        (lambda p, t: ((p - t).mean()) ** 2,
         "Hint: that squares the mean difference, where errors of opposite sign cancel: square each difference "
         "first, then average."),
    ]
    return check_close(
        "mse",
        learner_fn,
        lambda p, t: torch.nn.functional.mse_loss(p, t),
        random_cases([(5,), (3, 4), (2, 3, 4)]),
        hint="Hint: square the difference, then take the mean over *all* elements (.mean()), giving a 0-dim tensor.",
        mistakes=mistakes,
    )
