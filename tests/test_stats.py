"""labkit.stats: bootstrap error bars and the paired bootstrap, and WEAT with its permutation test."""

import pytest
import torch

from labkit import metrics, stats



def test_bootstrap_intervals_cover_the_value_and_a_paired_difference_of_a_model_with_itself_is_zero():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(2, (500,), generator=g)
    good = torch.where(torch.rand(500, generator=g) < 0.9, target, 1 - target)
    bad = torch.where(torch.rand(500, generator=g) < 0.6, target, 1 - target)
    value, low, high = stats.bootstrap_ci(metrics.accuracy, good, target, 300)
    assert low < value < high and high - low < 0.1
    same = stats.paired_bootstrap(metrics.accuracy, good, good, target, 200)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    better = stats.paired_bootstrap(metrics.accuracy, good, bad, target, 200)
    assert better["low"] > 0.2 and better["p_not_better"] == 0.0


def test_weat_finds_a_planted_association_and_not_a_missing_one():
    g = torch.Generator().manual_seed(3)
    a_dir, b_dir = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def around(v, n, spread=1.0):
        return v + spread * torch.randn(n, 16, generator=g)

    A, B = around(a_dir, 6), around(b_dir, 6)
    X, Y = around(a_dir, 8, 1.5), around(b_dir, 8, 1.5)  # X leans towards A, Y towards B
    planted = stats.weat(X, Y, A, B, 2000)
    assert planted["effect_size"] > 1.0 and planted["p_value"] < 0.01
    noise = torch.randn(16, 16, generator=g)
    none = stats.weat(noise[:8], noise[8:], A, B, 2000)
    assert none["p_value"] > 0.01 and abs(none["effect_size"]) < 1.5
    swapped = stats.weat(Y, X, A, B, 2000)
    assert swapped["effect_size"] == pytest.approx(-planted["effect_size"]) and swapped["p_value"] > 0.99
