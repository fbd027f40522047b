"""The attention checkers (notebooks 03, 04): the solutions pass, typical mistakes fail with their own hint."""

import math

import pytest
import torch

from labkit import checks

pytestmark = pytest.mark.usefixtures("isolated_cache")  # checkers record progress: keep it out of the checkout


def _todo(*args, **kwargs):
    raise NotImplementedError


# -- softmax ------------------------------------------------------------------


def softmax(x):
    e = (x - x.max(dim=-1, keepdim=True).values).exp()
    return e / e.sum(dim=-1, keepdim=True)


def test_softmax_solution_passes(capsys):
    assert checks.check_softmax(softmax)
    assert "✅ softmax: all 4 cases pass." in capsys.readouterr().out


def test_softmax_stub(capsys):
    def softmax(x):
        raise NotImplementedError

    assert not checks.check_softmax(softmax)
    out = capsys.readouterr().out
    assert out.strip() == ("❌ softmax: not implemented yet: write the body of `softmax` (it still raises "
                           "NotImplementedError), then run this check again.")


def test_softmax_in_place_edit_is_harmless(capsys):
    def in_place(x):
        x -= x.max(dim=-1, keepdim=True).values  # edits the caller's tensor
        return x.exp() / x.exp().sum(dim=-1, keepdim=True)

    assert checks.check_softmax(in_place)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda x: x.exp() / x.exp().sum(dim=-1, keepdim=True), "exp overflows for large scores"),
        (lambda x: (x - x.max()).exp() / (x - x.max()).exp().sum(dim=-1, keepdim=True), "each row's own maximum"),
        (lambda x: (x - x.max(-1, keepdim=True).values).exp() / (x - x.max(-1, keepdim=True).values).exp().sum(),
         "not the sum of the whole tensor"),
        (lambda x: torch.softmax(x, dim=0), "normalise over the last dimension (dim=-1)"),
    ],
    ids=["no-max-subtraction", "global-max", "whole-tensor-sum", "dim0"],
)
def test_softmax_typical_mistakes(capsys, wrong, hint):
    assert not checks.check_softmax(wrong)
    out = capsys.readouterr().out
    assert "❌ softmax" in out and hint in out


def test_softmax_other_nan_gets_the_overflow_hint(capsys):
    assert not checks.check_softmax(lambda x: torch.where(x.abs() > 500, float("nan"), softmax(x)))
    out = capsys.readouterr().out
    assert "nan or inf" in out and "exp overflows" in out


def test_softmax_wrong_shape_and_errors(capsys):
    assert not checks.check_softmax(lambda x: softmax(x).sum(dim=-1))
    assert "expected shape" in capsys.readouterr().out
    assert not checks.check_softmax(lambda x: x.nope())
    assert "raised AttributeError" in capsys.readouterr().out


# -- scaled dot-product attention -----------------------------------------------


def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def test_sdpa_solution_passes(capsys):
    assert checks.check_scaled_dot_product_attention(attention)
    assert "✅ scaled_dot_product_attention: all 4 cases pass." in capsys.readouterr().out


def test_sdpa_stub(capsys):
    def attention(q, k, v, mask=None):
        # YOUR CODE HERE
        raise NotImplementedError

    assert not checks.check_scaled_dot_product_attention(attention)
    out = capsys.readouterr().out
    assert "not implemented yet: write the body of `attention`" in out and "Hint" not in out


def _variant(scale=None, invert=False, fill=float("-inf"), after=False, dim=-1):
    def fn(q, k, v, mask=None):
        s = 1 / math.sqrt(q.size(-1)) if scale is None else scale(q)
        scores = q @ k.transpose(-2, -1) * s
        allowed = None if mask is None else (~mask if invert else mask)
        if mask is not None and not after:
            scores = scores.masked_fill(~allowed, fill)
        w = torch.softmax(scores, dim=dim)
        if mask is not None and after:
            w = w * allowed
        return w @ v, w

    return fn


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (_variant(scale=lambda q: 1.0), "the scores are not scaled"),
        (_variant(scale=lambda q: 1.0 / q.size(-1)), "not by d_k"),
        (_variant(invert=True), "the mask is read the wrong way round"),
        (_variant(fill=0.0), "must become -inf, not 0"),
        (_variant(after=True), "BEFORE the softmax"),
        (_variant(dim=-2), "softmax over the keys"),
    ],
    ids=["unscaled", "scaled-by-d_k", "inverted-mask", "fill-zero", "mask-after-softmax", "wrong-dim"],
)
def test_sdpa_typical_mistakes(capsys, wrong, hint):
    assert not checks.check_scaled_dot_product_attention(wrong)
    out = capsys.readouterr().out
    assert "❌ scaled_dot_product_attention" in out and hint in out


def test_sdpa_returning_only_out(capsys):
    assert not checks.check_scaled_dot_product_attention(lambda q, k, v, mask=None: attention(q, k, v, mask)[0])
    out = capsys.readouterr().out
    assert "expected a tuple of 2 items" in out and "return (weights @ v, weights)" in out


# -- split / merge heads --------------------------------------------------------


def split_heads(x, n_heads):
    B, T, d_model = x.shape
    return x.view(B, T, n_heads, d_model // n_heads).transpose(1, 2)


def merge_heads(x):
    B, n_heads, T, d_k = x.shape
    return x.transpose(1, 2).reshape(B, T, n_heads * d_k)


def test_split_merge_solutions_pass(capsys):
    assert checks.check_split_heads(split_heads)
    assert checks.check_merge_heads(merge_heads)
    out = capsys.readouterr().out
    assert "✅ split_heads: all 4 cases pass." in out and "✅ merge_heads: all 4 cases pass." in out
    x = torch.randn(2, 5, 12)
    assert torch.equal(merge_heads(split_heads(x, 3)), x)  # they are inverses


def test_split_merge_stubs(capsys):
    assert not checks.check_split_heads(_todo)
    assert not checks.check_merge_heads(_todo)
    out = capsys.readouterr().out
    assert "❌ split_heads: not implemented yet" in out and "❌ merge_heads: not implemented yet" in out
    assert "Hint" not in out


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda x, h: x.view(x.size(0), x.size(1), h, -1), "you still need .transpose(1, 2)"),
        (lambda x, h: x.view(x.size(0), h, x.size(1), -1), "mixes tokens into heads"),
        (lambda x, h: x.view(x.size(0), x.size(1), -1, h).permute(0, 3, 1, 2), "not (d_k, n_heads)"),
    ],
    ids=["no-transpose", "direct-view", "d_k-first"],
)
def test_split_heads_typical_mistakes(capsys, wrong, hint):
    assert not checks.check_split_heads(wrong)
    out = capsys.readouterr().out
    assert "❌ split_heads" in out and hint in out


def test_merge_heads_typical_mistakes(capsys):
    assert not checks.check_merge_heads(lambda x: x.reshape(x.size(0), x.size(2), -1))
    assert "interleaves tokens and heads" in capsys.readouterr().out
    assert not checks.check_merge_heads(lambda x: x.transpose(1, 2).view(x.size(0), x.size(2), -1))
    out = capsys.readouterr().out
    assert "raised RuntimeError" in out and "not contiguous" in out  # the error's general hint: no mistake matches
