"""labkit.calibration: reliability bins, expected calibration error and temperature scaling."""

import pytest
import torch
import torch.nn.functional as F

from labkit import calibration



def test_ece_is_zero_for_a_calibrated_predictor_and_matches_the_hand_computation():
    # in every bin the confidence is exactly the share of right answers
    conf = torch.tensor([0.55] * 20 + [0.85] * 20 + [1.0] * 5)
    correct = torch.tensor([1] * 11 + [0] * 9 + [1] * 17 + [0] * 3 + [1] * 5)
    assert calibration.expected_calibration_error(conf, correct, 10) == pytest.approx(0.0, abs=1e-7)  # float32 0.55
    # by hand, 2 bins split at 0.5: {0.3} accuracy 0, gap 0.3, share 1/4; {0.9, 0.9, 0.6} accuracy 2/3,
    # mean confidence 0.8, gap 2/15, share 3/4: ECE = 0.075 + 0.1 = 0.175
    ece = calibration.expected_calibration_error([0.9, 0.9, 0.6, 0.3], [1, 0, 1, 0], 2)
    assert ece == pytest.approx(0.175)
    b = calibration.calibration_bins([0.9, 0.9, 0.6, 0.3], [1, 0, 1, 0], 2)
    assert b["count"].tolist() == [1, 3] and b["accuracy"][1].item() == pytest.approx(2 / 3)
    # sampled: calibrated -> near 0; right 20 points less often than claimed -> near 0.2
    g = torch.Generator().manual_seed(0)
    c = 0.4 + 0.6 * torch.rand(100_000, generator=g)
    assert calibration.expected_calibration_error(c, torch.rand(100_000, generator=g) < c) < 0.01
    assert calibration.expected_calibration_error(c, torch.rand(100_000, generator=g) < c - 0.2) == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="probabilities"):
        calibration.expected_calibration_error([1.5], [1])


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(20_000, 5, generator=g)
    labels = torch.multinomial(F.softmax(logits / 2.0, -1), 1, generator=g).squeeze(1)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)
