"""Checkers must pass the reference solution and fail, with a specific hint, on wrong answers."""

import torch

from labkit import checks


def test_warmup_mse_passes_solution(capsys):
    assert checks.check_warmup_mse(lambda p, t: ((p - t) ** 2).mean())
    assert "✅ mse" in capsys.readouterr().out


def test_warmup_mse_hints(capsys):
    assert not checks.check_warmup_mse(lambda p, t: ((p - t) ** 2).sum())
    out = capsys.readouterr().out
    assert "❌ mse" in out and "values differ" in out and "Hint" in out
    assert not checks.check_warmup_mse(lambda p, t: ((p - t) ** 2).mean(dim=-1))
    assert "expected shape ()" in capsys.readouterr().out

    def todo(p, t):
        raise NotImplementedError

    assert not checks.check_warmup_mse(todo)
    assert "not implemented yet" in capsys.readouterr().out
    assert not checks.check_warmup_mse(lambda p, t: p.foo)
    assert "raised AttributeError" in capsys.readouterr().out


def test_check_close_compares_structures(capsys):
    cases = [checks.Case("c", (torch.arange(4),))]
    assert checks.check_close("pair", lambda x: (x, x * 2), lambda x: (x, x * 2), cases)
    assert not checks.check_close("pair", lambda x: (x, x * 3), lambda x: (x, x * 2), cases)
    assert "item 1" in capsys.readouterr().out


def test_check_true(capsys):
    assert checks.check_true("prop", lambda: True)
    assert not checks.check_true("prop", lambda: "rows must sum to 1", hint="Hint: softmax over the last dim")
    out = capsys.readouterr().out
    assert "rows must sum to 1" in out and "softmax" in out


def test_nan_output_is_reported_not_crashed(capsys):
    assert not checks.check_warmup_mse(lambda p, t: ((p - t) ** 2).mean() * float("nan"))
    assert "values differ" in capsys.readouterr().out
