"""Notebook 08's checkers: the reference solutions pass; typical mistakes fail with the specific hint."""

import math

import pytest
import torch
import torch.nn.functional as F

from labkit.checks import sampling as checks  # labkit.checks re-exports these once registered in __init__

pytestmark = pytest.mark.usefixtures("isolated_cache")  # checkers record progress: keep it out of the checkout


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
    assert "❌ top_k_filter" in out and "hold 0, not -inf" in out and "a logit of 0 is not filtered out" in out


def test_top_k_strict_comparison_keeps_one_too_few(capsys):
    def strict(logits, k):
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits <= kth, float("-inf"))

    assert not checks.check_top_k_filter(strict)
    out = capsys.readouterr().out
    assert "0 entries survive, expected 1" in out and "drops the k-th largest logit too" in out


def test_top_k_whole_tensor_instead_of_rows_fails(capsys):
    def global_topk(logits, k):  # the k largest of the whole batch, not of each row
        kth = torch.topk(logits.flatten(), k).values[-1]
        return logits.masked_fill(logits < kth, float("-inf"))

    assert not checks.check_top_k_filter(global_topk)
    out = capsys.readouterr().out
    assert "entries survive in row" in out and "the top k of the whole tensor, flattened" in out


def test_top_k_in_place_fails(capsys):
    def in_place(logits, k):
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits[logits < kth] = float("-inf")
        return logits

    assert not checks.check_top_k_filter(in_place)
    assert "changed in place" in capsys.readouterr().out


def test_top_k_smallest_instead_of_largest_fails(capsys):
    assert not checks.check_top_k_filter(
        lambda logits, k: logits.masked_fill(logits > torch.topk(logits, k, dim=-1, largest=False).values[..., -1:],
                                             float("-inf")))
    out = capsys.readouterr().out
    assert "not the right ones" in out and "those are the k SMALLEST logits" in out


def test_top_k_stub(capsys):
    assert not checks.check_top_k_filter(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


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
    assert "❌ top_p_filter" in out and "entries survive" in out and "you dropped the token whose probability" in out


def test_top_p_forgetting_to_unsort_fails(capsys):
    def sorted_mask(logits, p):  # the mask is applied in sorted order, not mapped back
        sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        drop = (probs.cumsum(-1) - probs) >= p
        return logits.masked_fill(drop, float("-inf"))

    assert not checks.check_top_p_filter(sorted_mask)
    out = capsys.readouterr().out
    assert "not the right ones" in out and "the keep/drop decisions are in SORTED order" in out


def test_top_p_stub(capsys):
    assert not checks.check_top_p_filter(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


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
    assert "❌ perplexity" in out and "2**loss mixes a base-2 power with a base-e loss" in out


def test_perplexity_exp_of_sum_fails(capsys):
    def exp_sum(logits, targets):
        return torch.exp(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))

    assert not checks.check_perplexity(exp_sum)
    out = capsys.readouterr().out
    assert "❌ perplexity" in out and "exp of the SUMMED loss grows with the number of tokens" in out


def test_perplexity_without_softmax_fails(capsys):
    def raw_logits(logits, targets):  # -mean(logit of the target), no log-softmax
        return torch.exp(-logits.gather(-1, targets.unsqueeze(-1)).mean())

    assert not checks.check_perplexity(raw_logits)
    assert "a raw logit is not a log-probability" in capsys.readouterr().out


def test_perplexity_stub(capsys):
    assert not checks.check_perplexity(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- the checkers' references against hand-computed answers -----------------------------------

INF = float("inf")


def test_top_k_reference_against_hand_computed_answers():
    """The checker compares with labkit.generate.top_k_filter; here that reference meets answers worked out
    by hand, so a wrong labkit version cannot make the checker reject right answers (or accept wrong ones)."""
    from labkit.checks.sampling import _top_k_cases
    from labkit.generate import top_k_filter

    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0, 2.5], [0.5, -1.0, 4.0, 4.5, -2.0]])
    assert top_k_filter(logits, 2).tolist() == [[-INF, 3.0, -INF, -INF, 2.5], [-INF, -INF, 4.0, 4.5, -INF]]
    assert top_k_filter(logits, 1).tolist() == [[-INF, 3.0, -INF, -INF, -INF], [-INF, -INF, -INF, 4.5, -INF]]
    assert top_k_filter(logits, 5).tolist() == logits.tolist()
    for case in _top_k_cases():  # and on every case the checker uses, a pure-Python reading of "the k largest"
        x, k = case.args
        rows = x.reshape(-1, x.size(-1)).tolist()
        expected = [[v if v >= sorted(row, reverse=True)[k - 1] else -INF for v in row] for row in rows]
        assert top_k_filter(x, k).reshape(len(rows), -1).tolist() == expected, case.name


def test_top_p_reference_against_hand_computed_answers():
    from labkit.checks.sampling import _top_p_cases
    from labkit.generate import top_p_filter

    # probabilities 0.5, 0.3, 0.15, 0.05 (in a shuffled order): the nucleus for p is the shortest prefix
    # of the sorted list whose sum reaches p
    logits = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()
    assert top_p_filter(logits, 0.4).isfinite().tolist() == [False, True, False, False]  # 0.5 >= 0.4
    assert top_p_filter(logits, 0.6).isfinite().tolist() == [False, True, False, True]  # 0.5 + 0.3
    assert top_p_filter(logits, 0.9).isfinite().tolist() == [True, True, False, True]  # 0.5 + 0.3 + 0.15
    assert top_p_filter(logits, 0.01).isfinite().tolist() == [False, True, False, False]  # the top token always
    kept = top_p_filter(logits, 0.6)
    assert torch.equal(kept[kept.isfinite()], logits[[1, 3]])  # survivors keep their values
    for case in _top_p_cases():
        x, p = case.args
        got = top_p_filter(x, p).reshape(-1, x.size(-1))
        for row, out in zip(x.reshape(-1, x.size(-1)).double().softmax(-1).tolist(), got):
            order = sorted(range(len(row)), key=lambda i: -row[i])
            keep, mass = set(), 0.0
            for i in order:  # most likely first, until the mass so far reaches p
                if mass >= p:
                    break
                keep.add(i)
                mass += row[i]
            assert {i for i, v in enumerate(out.tolist()) if v != -INF} == keep, case.name
