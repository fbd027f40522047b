"""Checkers for notebook 15 (evaluation: bits per byte from a loss, expected calibration error); see
labkit.checks._core."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._core import Case, CheckResult, check_close

__all__ = ["check_bits_per_byte", "check_ece"]


# --- exercise: bits per byte from a mean loss ------------------------------------------------------------------


def _bpb_reference(loss, n_tokens, n_bytes):
    from labkit.metrics import bits_per_byte

    return torch.tensor(bits_per_byte(loss, n_tokens, n_bytes), dtype=torch.float64)


def _bpb_cases() -> list[Case]:
    return [Case("a character model on ASCII text (1 byte per token), loss 1.5 nats", (1.5, 1000, 1000)),
            Case("a BPE model: 250 tokens spell 1,000 bytes, loss 3.2 nats", (3.2, 250, 1000)),
            Case("a loss of ln 2 per byte-token is 1 bit per byte", (math.log(2), 64, 64)),
            Case("accented text: 120 tokens, 180 bytes, loss 2.0", (2.0, 120, 180))]


def _bpb_per_token(loss, n_tokens, n_bytes):
    return torch.tensor(loss / math.log(2), dtype=torch.float64)


def _bpb_nats(loss, n_tokens, n_bytes):
    return torch.tensor(loss * n_tokens / n_bytes, dtype=torch.float64)


def _bpb_log10(loss, n_tokens, n_bytes):
    return torch.tensor(loss * n_tokens / (math.log(10) * n_bytes), dtype=torch.float64)


def check_bits_per_byte(learner_fn: Callable) -> CheckResult:
    """Notebook 15: ``bits_per_byte(loss, n_tokens, n_bytes)``: a mean loss of ``loss`` nats per token over
    ``n_tokens`` tokens that spell ``n_bytes`` bytes, in bits per byte."""
    return check_close(
        "bits_per_byte", lambda *a: torch.as_tensor(learner_fn(*a), dtype=torch.float64), _bpb_reference,
        _bpb_cases(),
        hint="Hint: the total is loss * n_tokens nats; a bit is ln 2 nats; divide by the bytes: "
             "loss * n_tokens / (math.log(2) * n_bytes).",
        mistakes=[(_bpb_per_token, "Hint: that is bits per token. Multiply by the tokens and divide by the bytes: a "
                                   "BPE token spells several bytes."),
                  (_bpb_nats, "Hint: that is nats per byte: divide by math.log(2) (one bit is ln 2 nats)."),
                  (_bpb_log10, "Hint: a bit is ln 2 nats, not ln 10: divide by math.log(2).")],
        atol=1e-9, rtol=1e-9,
    )


# --- exercise: expected calibration error ----------------------------------------------------------------------


def _ece_reference(confidences, correct, n_bins):
    from labkit.calibration import expected_calibration_error

    return torch.tensor(expected_calibration_error(confidences, correct, n_bins), dtype=torch.float64)


def _ece_cases() -> list[Case]:
    g = torch.Generator().manual_seed(150)
    conf = 0.5 + 0.5 * torch.rand(400, generator=g)
    over = conf, torch.rand(400, generator=g) < conf - 0.2  # right less often than it says
    fair = conf, torch.rand(400, generator=g) < conf
    edges = torch.tensor([0.1, 0.25, 0.25, 0.4, 0.9, 1.0, 1.0, 0.5]), torch.tensor([0, 1, 0, 0, 1, 1, 0, 1])
    return [Case("8 predictions, confidences on the bin edges (0.25, 0.5, 1.0), 4 bins", (*edges, 4)),
            Case("an over-confident predictor, 400 predictions, 10 bins", (*over, 10)),
            Case("a calibrated one, 400 predictions, 15 bins", (*fair, 15)),
            Case("the same, one bin (|accuracy - mean confidence|)", (*fair, 1))]


def _ece_unweighted(confidences, correct, n_bins):
    from labkit.calibration import calibration_bins

    b = calibration_bins(confidences, correct, n_bins)
    keep = b["count"] > 0
    return (b["accuracy"][keep] - b["confidence"][keep]).abs().mean()


def _ece_signed(confidences, correct, n_bins):
    from labkit.calibration import calibration_bins

    b = calibration_bins(confidences, correct, n_bins)
    keep = b["count"] > 0
    return (b["count"][keep] / b["count"].sum() * (b["accuracy"][keep] - b["confidence"][keep])).sum().abs()


def check_ece(learner_fn: Callable) -> CheckResult:
    """Notebook 15: ``ece(confidences, correct, n_bins)``: equal-width bins (m-1)/M < confidence <= m/M (0 in
    the first), and the sum over non-empty bins of (share of predictions) x |accuracy - mean confidence|."""
    return check_close(
        "ece", lambda *a: torch.as_tensor(learner_fn(*a), dtype=torch.float64), _ece_reference, _ece_cases(),
        hint="Hint: bin = ceil(confidence * n_bins) - 1, clamped to 0..n_bins-1; for each non-empty bin add "
             "(count / N) * |mean(correct) - mean(confidence)|.",
        mistakes=[(_ece_unweighted, "Hint: weight each bin's gap by its share of the predictions (count / N); a bin "
                                    "of 3 predictions counts less than a bin of 300."),
                  (_ece_signed, "Hint: take each bin's gap as an absolute value before adding: over-confidence in one "
                                "bin must not cancel under-confidence in another.")],
        atol=1e-6, rtol=1e-6,
    )
