"""Notebook 16's checker for the online-softmax update: a learner's solution passes, typical mistakes get their
own hint, the stub says what to write."""

import pytest
import torch

from labkit import checks
from labkit.checks.scaling import _no_rescale, _no_shift

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _todo(*args, **kwargs):
    raise NotImplementedError


def update(m, l, acc, scores, v):  # a learner's version
    m_new = torch.maximum(m, scores.max(dim=-1).values)
    shift = torch.where(m_new == float("-inf"), 0.0, m_new)
    p = (scores - shift[..., None]).exp()
    c = (m - shift).exp()
    return m_new, c * l + p.sum(-1), c[..., None] * acc + p @ v


def test_solution_passes(capsys):
    assert checks.check_online_softmax_update(update)
    assert "✅ online_softmax_update: all 4 cases pass" in capsys.readouterr().out


def _unpack(flat_fn):
    # the mistakes return the flattened state; a learner returns (m, l, acc)
    def fn(m, l, acc, scores, v):
        flat = flat_fn(m, l, acc, scores, v)
        n = m.numel()
        return flat[:n].view_as(m), flat[n:2 * n].view_as(l), flat[2 * n:].view_as(acc)
    return fn


@pytest.mark.parametrize("wrong, words", [(_no_rescale, "exp(m - m')"), (_no_shift, "subtract the running max")])
def test_typical_mistakes_get_their_own_hint(capsys, wrong, words):
    assert not checks.check_online_softmax_update(_unpack(wrong))
    assert words in capsys.readouterr().out


def test_stub_says_what_to_write(capsys):
    assert not checks.check_online_softmax_update(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out
