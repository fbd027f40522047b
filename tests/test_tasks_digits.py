"""labkit.tasks.digits: the held-out digits stay out of training and the split is fixed; the judge reads real digits."""

import pytest
import torch

from labkit.data import load_digits
from labkit.tasks.digits import digits_data, train_digit_classifier


def test_the_split_holds_every_digit_once_and_is_fixed():
    data = digits_data()
    assert data.train_x.shape == (1497, 1, 8, 8) and data.val_x.shape == (300, 1, 8, 8)
    assert data.train_x.min() == -1 and data.train_x.max() == 1
    every = torch.cat([data.train_x, data.val_x]).flatten(1)
    assert len(torch.unique(every, dim=0)) == len(torch.unique(load_digits()[0].flatten(1), dim=0))
    assert set(data.val_y.tolist()) == set(range(10))
    again = digits_data.__wrapped__()
    assert torch.equal(again.val_x, data.val_x)


def test_the_judge_reads_held_out_digits():
    clf, acc = train_digit_classifier(steps=150)
    assert acc > 0.9
    assert clf.features(digits_data().val_x[:5]).shape == (5, 128)
    with pytest.raises(ValueError, match="8, 8"):
        clf(torch.zeros(2, 1, 28, 28))
