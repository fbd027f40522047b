"""Notebook 15's checkers (bits per byte, ECE): solutions a learner writes pass, typical mistakes get their own
hint, stubs say what to write."""

import math

import pytest
import torch

from labkit import checks
from labkit.checks.evaluation import _bpb_nats, _bpb_per_token, _ece_signed, _ece_unweighted

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _todo(*args, **kwargs):
    raise NotImplementedError


def bits_per_byte(loss, n_tokens, n_bytes):
    return loss * n_tokens / math.log(2) / n_bytes


def ece(confidences, correct, n_bins):  # a learner's version, one bin at a time
    confidences, correct = torch.as_tensor(confidences, dtype=torch.float32), torch.as_tensor(correct).float()
    bins = (torch.ceil(confidences * n_bins) - 1).clamp(0, n_bins - 1).long()
    total = 0.0
    for m in range(n_bins):
        inside = bins == m
        if inside.any():
            total += inside.float().mean() * (correct[inside].mean() - confidences[inside].mean()).abs()
    return total


def test_solutions_pass(capsys):
    assert checks.check_bits_per_byte(bits_per_byte)
    assert checks.check_ece(ece)
    out = capsys.readouterr().out
    assert "✅ bits_per_byte: all 4 cases pass" in out and "✅ ece: all 4 cases pass" in out


@pytest.mark.parametrize("check, wrong, words", [
    (checks.check_bits_per_byte, _bpb_per_token, "bits per token"),
    (checks.check_bits_per_byte, _bpb_nats, "nats per byte"),
    (checks.check_ece, _ece_unweighted, "share of the predictions"),
    (checks.check_ece, _ece_signed, "absolute value"),
])
def test_typical_mistakes_get_their_own_hint(capsys, check, wrong, words):
    assert not check(wrong)
    assert words in capsys.readouterr().out


def test_stubs_say_what_to_write(capsys):
    assert not checks.check_bits_per_byte(_todo)
    assert not checks.check_ece(_todo)
    out = capsys.readouterr().out
    assert out.count("not implemented yet") == 2 and "Hint" not in out
