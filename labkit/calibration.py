"""Calibration: are a model's probabilities honest? Reliability bins, expected calibration error (Guo et al., 2017)
and temperature scaling, which fits one number on held-out logits and changes no prediction."""

from __future__ import annotations

import torch

__all__ = ["calibration_bins", "expected_calibration_error", "fit_temperature"]


def _confidence_and_correct(confidences, correct) -> tuple[torch.Tensor, torch.Tensor]:
    conf = torch.as_tensor(confidences, dtype=torch.float64).flatten()
    hit = torch.as_tensor(correct).flatten().to(torch.float64)
    if conf.shape != hit.shape:
        raise ValueError(f"confidences ({conf.numel()}) and correct ({hit.numel()}) must have one entry per prediction")
    if conf.numel() == 0:
        raise ValueError("no predictions to calibrate")
    if conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidences must be probabilities in [0, 1] (the probability of the predicted class)")
    return conf, hit


def calibration_bins(confidences, correct, n_bins: int = 15) -> dict:
    """The reliability diagram's numbers: predictions put in ``n_bins`` equal-width bins of confidence (bin m
    holds (m-1)/M < confidence <= m/M; a confidence of 0 goes in the first), and per bin the mean confidence,
    the accuracy and the count (empty bins: nan, nan, 0)."""
    conf, hit = _confidence_and_correct(confidences, correct)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    which = (torch.bucketize(conf, edges[1:-1], right=False)).clamp(0, n_bins - 1)  # (lo, hi] bins
    count = torch.bincount(which, minlength=n_bins).to(torch.float64)
    mean_conf = torch.bincount(which, conf, minlength=n_bins) / count
    acc = torch.bincount(which, hit, minlength=n_bins) / count
    return {"edges": edges, "confidence": mean_conf, "accuracy": acc, "count": count.long()}


def expected_calibration_error(confidences, correct, n_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): sum over the bins of (bin's share of the predictions) x |accuracy - mean confidence|.
    0 for a predictor whose confidence is its accuracy in every bin."""
    b = calibration_bins(confidences, correct, n_bins)
    n, keep = b["count"].sum().item(), b["count"] > 0
    gap = (b["accuracy"][keep] - b["confidence"][keep]).abs()
    return float((b["count"][keep] / n * gap).sum())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """The temperature T > 0 that minimises the cross-entropy of softmax(logits / T) on held-out (validation)
    ``labels``: temperature scaling, the one-parameter fix for over- or under-confidence."""
    logits, labels = logits.detach().double(), torch.as_tensor(labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())
