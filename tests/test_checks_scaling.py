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


# --- check_average_gradients: run in forked gloo processes -----------------------------------------------------


def _average(model):
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _stub(model):
    raise NotImplementedError


def _skip_frozen_missing(model):
    import torch.distributed as dist

    for p in model.parameters():  # the frozen bias has no gradient
        dist.all_reduce(p.grad)


def test_average_gradients_checker(capsys):
    from labkit.checks import check_average_gradients
    from labkit.checks.scaling import _divide_by_two, _sum_only

    assert check_average_gradients(_average)
    assert "all 2 cases pass" in capsys.readouterr().out
    assert not check_average_gradients(_sum_only)
    assert "divide by dist.get_world_size()" in capsys.readouterr().out
    assert not check_average_gradients(_divide_by_two)
    assert "not by 2" in capsys.readouterr().out
    assert not check_average_gradients(_stub)
    assert "write the body of `_stub`" in capsys.readouterr().out
    assert not check_average_gradients(_skip_frozen_missing)
    assert "rank 0 of 2" in capsys.readouterr().out


def test_run_in_processes_reports_mismatched_collectives_instead_of_hanging():
    import torch.distributed as dist

    from labkit.checks import run_in_processes

    def only_rank_zero_reduces(model):
        if dist.get_rank() == 0:
            dist.all_reduce(next(model.parameters()).grad)

    # rank 0 waits in an all-reduce that rank 1 never joins: gloo reports the closed connection, or the timeout does
    with pytest.raises(RuntimeError, match="rank"):
        run_in_processes(only_rank_zero_reduces, 2, timeout=20)
