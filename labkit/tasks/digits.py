"""The 8x8 digits as a task (notebooks 13 and 14): scikit-learn's 1,797 digits in [-1, 1], a fixed held-out set,
and the judge that reads generated digits (``train_digit_classifier``: ``labkit.models.classify.DigitClassifier``
trained on them; its penultimate layer gives the features of the Fréchet distance)::

    data = digits_data()                   # data.train_x (N, 1, 8, 8) in [-1, 1], data.train_y, data.val_x, data.val_y
    judge, accuracy = train_digit_classifier(data)
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..data import load_digits
from ..models.classify import DigitClassifier

__all__ = ["DigitsData", "digits_data", "to_pixels", "train_digit_classifier"]


class DigitsData(NamedTuple):
    train_x: torch.Tensor  # (N, 1, 8, 8) in [-1, 1]
    train_y: torch.Tensor  # (N,) 0..9
    val_x: torch.Tensor
    val_y: torch.Tensor


@lru_cache(maxsize=4)
def digits_data(n_val: int = 300, seed: int = 0) -> DigitsData:
    """The digits in [-1, 1] as (N, 1, 8, 8), ``n_val`` of them held out by a seeded permutation.
    Cached: treat the tensors as read-only."""
    images, labels = load_digits()
    if not 0 < n_val < len(images):
        raise ValueError(f"n_val must be between 1 and {len(images) - 1}, got {n_val}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    x = images[order, None] * 2 - 1
    y = labels[order]
    return DigitsData(x[n_val:], y[n_val:], x[:n_val], y[:n_val])


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] back to pixel intensities [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


def train_digit_classifier(data: DigitsData | None = None, steps: int = 400, batch_size: int = 128,
                           lr: float = 2e-3, seed: int = 0) -> tuple[DigitClassifier, float]:
    """Train the judge on ``data``'s training digits (8x8 by default; any square size works), each batch shifted
    by up to one pixel so that it reads digits that sit a little off-centre; returns it (eval mode) and its
    accuracy on ``data``'s held-out digits."""
    data = data or digits_data()
    torch.manual_seed(seed)
    clf = DigitClassifier(size=data.train_x.shape[-1])
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(data.train_x), (batch_size,), generator=g)
        dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
        x = torch.roll(F.pad(data.train_x[idx], (1, 1, 1, 1), value=-1.0), (dy, dx), dims=(2, 3))[:, :, 1:-1, 1:-1]
        loss = F.cross_entropy(clf(x), data.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    clf.eval()
    accuracy = (clf.predict(data.val_x) == data.val_y).float().mean().item()
    return clf, accuracy
