"""Notebook 02's checkers: the reference solutions pass; typical mistakes fail with the specific hint."""

import pytest
import torch

from labkit import checks
from labkit.layers import rotate_half

pytestmark = pytest.mark.usefixtures("isolated_cache")  # checkers record progress: keep it out of the checkout


def _todo(*args, **kwargs):
    raise NotImplementedError


# --- sinusoidal_table ------------------------------------------------------------------


def sinusoidal_table(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (d_model/2,)
    angle = pos / 10000 ** (two_i / d_model)  # (max_len, d_model/2)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe


def test_sinusoidal_table_passes_solution(capsys):
    assert checks.check_sinusoidal_table(sinusoidal_table)
    assert "✅ sinusoidal_table: all 4 cases pass" in capsys.readouterr().out


def test_sinusoidal_table_mistakes(capsys):
    def swapped(max_len, d_model):  # cosines in the even columns
        pe = sinusoidal_table(max_len, d_model)
        return torch.stack((pe[:, 1::2], pe[:, 0::2]), dim=-1).reshape(max_len, d_model)

    assert not checks.check_sinusoidal_table(swapped)
    out = capsys.readouterr().out
    assert "values differ" in out and "sines and cosines are swapped" in out
    assert "the exponent uses the even index 2i" not in out  # the targeted hint, not the general one

    def column_index(max_len, d_model):  # exponent j/d_model with the column index j, for every column
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        angle = pos / 10000 ** (torch.arange(d_model, dtype=torch.float32) / d_model)
        pe = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle[:, 1::2])
        return pe

    assert not checks.check_sinusoidal_table(column_index)
    assert "a sine and its cosine share one frequency" in capsys.readouterr().out

    assert not checks.check_sinusoidal_table(lambda n, d: sinusoidal_table(n + 1, d)[1:])  # positions from 1
    assert "positions start at 0" in capsys.readouterr().out

    assert not checks.check_sinusoidal_table(lambda n, d: sinusoidal_table(n, d)[:, : d // 2])
    assert "expected shape" in capsys.readouterr().out
    assert not checks.check_sinusoidal_table(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet: write the body of `_todo`" in out and "Hint" not in out


# --- rope_rotate ----------------------------------------------------------------------


def rope_rotate(x, pos, base=10000.0):
    d = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    angle = (pos * inv_freq).repeat(2)  # (d,): pair i and i + d/2 share an angle
    return x * angle.cos() + rotate_half(x) * angle.sin()


def test_rope_rotate_passes_solution(capsys):
    assert checks.check_rope_rotate(rope_rotate)
    assert "✅ rope_rotate: all 6 cases pass" in capsys.readouterr().out


def test_rope_rotate_mistakes(capsys):
    def interleaved(x, pos, base=10000.0):  # GPT-J / the paper's layout: neighbours x[2i], x[2i+1]
        d = x.shape[-1]
        theta = pos * base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        x1, x2 = x[0::2], x[1::2]
        out = torch.empty_like(x)
        out[0::2] = x1 * theta.cos() - x2 * theta.sin()
        out[1::2] = x1 * theta.sin() + x2 * theta.cos()
        return out

    assert not checks.check_rope_rotate(interleaved)
    out = capsys.readouterr().out
    assert "❌ rope_rotate" in out and "that is the interleaved layout" in out

    def clockwise(x, pos, base=10000.0):
        return rope_rotate(x, -pos, base)

    assert not checks.check_rope_rotate(clockwise)
    out = capsys.readouterr().out
    assert "quarter-turn" in out and "you rotated clockwise" in out

    def ignores_base(x, pos, base=10000.0):
        return rope_rotate(x, pos)

    assert not checks.check_rope_rotate(ignores_base)
    out = capsys.readouterr().out
    assert "base=100" in out and "use the base you are given" in out
    assert not checks.check_rope_rotate(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out
