"""Notebook 08's checkers: the reference solutions pass; typical mistakes fail with the specific hint."""

import math

import torch
import torch.nn.functional as F

from labkit.checks import sampling as checks  # labkit.checks re-exports these once registered in __init__


def _todo(*args, **kwargs):
    raise NotImplementedError


# --- top_k_filter ---------------------------------------------------------------------


def top_k_solution(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1): the k-th largest of each row
    return logits.masked_fill(logits < kth, float("-inf"))


def test_top_k_passes_solution(capsys):
    assert checks.check_top_k_filter(top_k_solution)
    assert "✅ top_k_filter" in capsys.readouterr().out


def test_top_k_passes_library_version(capsys):
    from labkit.generate import top_k_filter

    assert checks.check_top_k_filter(top_k_filter)


def test_top_k_zero_instead_of_minus_inf_fails(capsys):
    def zeros(logits, k):
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, 0.0)

    assert not checks.check_top_k_filter(zeros)
    out = capsys.readouterr().out
    assert "❌ top_k_filter" in out and "hold 0, not -inf" in out and "float('-inf')" in out


def test_top_k_strict_comparison_keeps_one_too_few(capsys):
    def strict(logits, k):
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits <= kth, float("-inf"))

    assert not checks.check_top_k_filter(strict)
    out = capsys.readouterr().out
    assert "0 entries survive, expected 1" in out and "not >, which keeps k-1" in out


def test_top_k_whole_tensor_instead_of_rows_fails(capsys):
    def global_topk(logits, k):  # the k largest of the whole batch, not of each row
        kth = torch.topk(logits.flatten(), k).values[-1]
        return logits.masked_fill(logits < kth, float("-inf"))

    assert not checks.check_top_k_filter(global_topk)
    out = capsys.readouterr().out
    assert "entries survive in row" in out and "LAST dimension" in out


def test_top_k_in_place_fails(capsys):
    def in_place(logits, k):
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits[logits < kth] = float("-inf")
        return logits

    assert not checks.check_top_k_filter(in_place)
    assert "changed in place" in capsys.readouterr().out


def test_top_k_stub(capsys):
    assert not checks.check_top_k_filter(_todo)
    assert "not implemented yet" in capsys.readouterr().out


# --- top_p_filter -----------------------------------------------------------------------


def top_p_solution(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = F.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(-1) - probs
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def test_top_p_passes_solution(capsys):
    assert checks.check_top_p_filter(top_p_solution)
    assert "✅ top_p_filter" in capsys.readouterr().out


def test_top_p_passes_library_version(capsys):
    from labkit.generate import top_p_filter

    assert checks.check_top_p_filter(top_p_filter)


def test_top_p_dropping_the_crossing_token_fails(capsys):
    def without_crossing(logits, p):  # keeps only tokens whose cumulative mass stays <= p
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        drop_sorted = F.softmax(sorted_logits, dim=-1).cumsum(-1) > p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))

    assert not checks.check_top_p_filter(without_crossing)
    out = capsys.readouterr().out
    assert "❌ top_p_filter" in out and "entries survive" in out and "the token that crosses p is kept" in out


def test_top_p_forgetting_to_unsort_fails(capsys):
    def sorted_mask(logits, p):  # the mask is applied in sorted order, not mapped back
        sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        drop = (probs.cumsum(-1) - probs) >= p
        return logits.masked_fill(drop, float("-inf"))

    assert not checks.check_top_p_filter(sorted_mask)
    out = capsys.readouterr().out
    assert "not the right ones" in out and "scatter" in out


def test_top_p_stub(capsys):
    assert not checks.check_top_p_filter(_todo)
    assert "not implemented yet" in capsys.readouterr().out


# --- perplexity -----------------------------------------------------------------------------


def perplexity_solution(logits, targets):
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    return torch.exp(loss)


def test_perplexity_passes_solution(capsys):
    assert checks.check_perplexity(perplexity_solution)
    assert "✅ perplexity" in capsys.readouterr().out


def test_perplexity_float_result_passes(capsys):
    assert checks.check_perplexity(lambda l, t: math.exp(F.cross_entropy(l.flatten(0, 1), t.flatten()).item()))


def test_perplexity_base_two_fails(capsys):
    def base2(logits, targets):
        logp = F.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)) / math.log(2)  # bits
        return 2 ** (-logp.mean())

    # 2 ** (H / ln 2) == e^H: the same number, so base 2 done consistently is right
    assert checks.check_perplexity(base2)
    capsys.readouterr()

    def mixed(logits, targets):  # entropy in nats, exponentiated in base 2
        return 2 ** F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    assert not checks.check_perplexity(mixed)
    out = capsys.readouterr().out
    assert "❌ perplexity" in out and "base 2" in out


def test_perplexity_exp_of_sum_fails(capsys):
    def exp_sum(logits, targets):
        return torch.exp(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))

    assert not checks.check_perplexity(exp_sum)
    out = capsys.readouterr().out
    assert "❌ perplexity" in out and "MEAN, not of the sum" in out


def test_perplexity_without_softmax_fails(capsys):
    def raw_logits(logits, targets):  # -mean(logit of the target), no log-softmax
        return torch.exp(-logits.gather(-1, targets.unsqueeze(-1)).mean())

    assert not checks.check_perplexity(raw_logits)
    assert "exactly V" in capsys.readouterr().out


def test_perplexity_stub(capsys):
    assert not checks.check_perplexity(_todo)
    assert "not implemented yet" in capsys.readouterr().out
