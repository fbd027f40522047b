"""Checkers of notebooks 05 and 06 pass the reference solutions and fail typical mistakes with a specific hint."""

import pytest
import torch
from torch import nn

from labkit import checks
from labkit.layers import EncoderBlock

pytestmark = pytest.mark.usefixtures("isolated_cache")  # checkers record progress: keep it out of the checkout


def todo(*args, **kwargs):
    raise NotImplementedError


# --- 05: RMSNorm -------------------------------------------------------------


def rms_norm(x, gain, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * gain


def test_rms_norm_passes_solution_and_matches_torch(capsys):
    assert checks.check_rms_norm(rms_norm)
    assert "✅ rms_norm" in capsys.readouterr().out
    x, g = torch.randn(3, 8), torch.rand(8)
    torch.testing.assert_close(rms_norm(x, g), nn.functional.rms_norm(x, (8,), g, 1e-6))


GENERAL_RMS = "average x**2 over the LAST dim only"  # the general hint: it must not replace a targeted one


def test_rms_norm_hints(capsys):
    def layer_norm_instead(x, gain, eps=1e-6):  # subtracts the mean
        x = x - x.mean(dim=-1, keepdim=True)
        return rms_norm(x, gain, eps)

    assert not checks.check_rms_norm(layer_norm_instead)
    out = capsys.readouterr().out
    assert "❌ rms_norm" in out and "values differ" in out and "LayerNorm's centring" in out
    assert GENERAL_RMS not in out

    def eps_outside(x, gain, eps=1e-6):
        return x / (torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True)) + eps) * gain

    assert not checks.check_rms_norm(eps_outside)
    out = capsys.readouterr().out
    assert "tiny x" in out and "not to the root afterwards" in out

    def no_keepdim(x, gain, eps=1e-6):
        return x / torch.sqrt(x.pow(2).mean() + eps) * gain  # over all elements

    assert not checks.check_rms_norm(no_keepdim)
    assert "root mean square of the WHOLE tensor" in capsys.readouterr().out

    def no_gain(x, gain, eps=1e-6):
        return rms_norm(x, torch.ones_like(gain), eps)

    assert not checks.check_rms_norm(no_gain)
    assert "multiply by the learned gain" in capsys.readouterr().out


def test_rms_norm_rejects_an_implementation_that_ignores_eps(capsys):
    def without_eps(x, gain, eps=1e-6):
        return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True)) * gain

    assert not checks.check_rms_norm(without_eps)
    assert "eps is missing" in capsys.readouterr().out

    def fixed_eps(x, gain, eps=1e-6):  # the default hard-coded: right whenever eps is 1e-6
        return rms_norm(x, gain, 1e-6)

    assert not checks.check_rms_norm(fixed_eps)
    out = capsys.readouterr().out
    assert "case 'x of about 0.1 with eps=0.01'" in out and "use the eps passed in" in out


def test_rms_norm_stub_says_what_to_write_without_the_hint(capsys):
    def rms_norm(x, gain, eps=1e-6):
        raise NotImplementedError

    assert not checks.check_rms_norm(rms_norm)
    out = capsys.readouterr().out
    assert "❌ rms_norm: not implemented yet: write the body of `rms_norm`" in out
    assert "Hint" not in out and GENERAL_RMS not in out


# --- 05: the residual + norm sublayer ------------------------------------------


def sublayer(x, f, norm, norm_first):
    return x + f(norm(x)) if norm_first else norm(x + f(x))


def test_sublayer_passes_solution(capsys):
    assert checks.check_sublayer(sublayer)
    assert "✅ sublayer: all 4 cases" in capsys.readouterr().out


def test_sublayer_does_not_disturb_the_random_stream():
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    checks.check_sublayer(sublayer)
    assert torch.equal(torch.rand(3), a)


def test_sublayer_hints(capsys):
    def wrong_pre(x, f, norm, norm_first):  # adds the normalised x back
        h = norm(x)
        return h + f(h) if norm_first else norm(x + f(x))

    assert not checks.check_sublayer(wrong_pre)
    out = capsys.readouterr().out
    assert "case 'pre-norm" in out and "the residual carries the input as it came in" in out
    assert "Pre-norm (norm_first=True) normalises only" not in out  # the general hint gave way

    def always_post(x, f, norm, norm_first):
        return norm(x + f(x))

    assert not checks.check_sublayer(always_post)
    out = capsys.readouterr().out
    assert "case 'pre-norm" in out and "post-norm whatever norm_first says" in out

    def always_pre(x, f, norm, norm_first):
        return x + f(norm(x))

    assert not checks.check_sublayer(always_pre)
    assert "pre-norm whatever norm_first says" in capsys.readouterr().out

    def no_residual(x, f, norm, norm_first):
        return f(norm(x)) if norm_first else norm(f(x))

    assert not checks.check_sublayer(no_residual)
    out = capsys.readouterr().out
    assert "case 'post-norm" in out and "the residual connection is missing" in out
    assert not checks.check_sublayer(todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- 05: parameter count -------------------------------------------------------


def encoder_block_params(d_model, d_ff):
    attention = 4 * (d_model * d_model + d_model)
    ffn = d_model * d_ff + d_ff + d_ff * d_model + d_model
    norms = 2 * 2 * d_model
    return attention + ffn + norms


def test_encoder_block_params_passes_solution(capsys):
    assert checks.check_encoder_block_params(encoder_block_params)
    assert "✅ encoder_block_params" in capsys.readouterr().out
    # and the formula is what PyTorch's own layer has
    layer = nn.TransformerEncoderLayer(64, 4, 256, batch_first=True)
    assert sum(p.numel() for p in layer.parameters()) == encoder_block_params(64, 256)
    assert sum(p.numel() for p in EncoderBlock(64, 8, 256).parameters()) == encoder_block_params(64, 256)


def test_encoder_block_params_hints(capsys):
    assert not checks.check_encoder_block_params(lambda d, f: 4 * d * d + 2 * d * f)  # no biases, no norms
    out = capsys.readouterr().out
    assert "❌ encoder_block_params" in out and "expected 172, got 128" in out
    assert "you counted the weight matrices only" in out
    assert not checks.check_encoder_block_params(lambda d, f: encoder_block_params(d, f) - 4 * d)  # no norms
    assert "4 * d_model in all" in capsys.readouterr().out
    assert not checks.check_encoder_block_params(lambda d, f: 4 * d * d + 2 * d * f + 4 * d)  # no Linear biases
    assert "the Linear layers' biases are missing" in capsys.readouterr().out
    assert not checks.check_encoder_block_params(todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- 06: the causal mask in nn.MultiheadAttention's convention ------------------------


def subsequent_mask(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)


def test_subsequent_mask_passes_solution_and_pytorch(capsys):
    assert checks.check_subsequent_mask(subsequent_mask)
    assert checks.check_subsequent_mask(nn.Transformer.generate_square_subsequent_mask)  # float -inf above
    assert "✅ subsequent_mask" in capsys.readouterr().out


def test_subsequent_mask_hints(capsys):
    assert not checks.check_subsequent_mask(lambda T: torch.ones(T, T, dtype=torch.bool).tril())
    out = capsys.readouterr().out
    assert "❌ subsequent_mask" in out and "values differ" in out and "True where a query MAY attend" in out
    assert not checks.check_subsequent_mask(lambda T: torch.ones(T, T, dtype=torch.bool).triu())
    assert "every token is blocked from itself" in capsys.readouterr().out
    assert not checks.check_subsequent_mask(lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1))
    assert "that blocks the past" in capsys.readouterr().out
    assert not checks.check_subsequent_mask(todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- 06: the teacher-forcing shift ---------------------------------------------------


def teacher_forcing(targets, bos_id, eos_id, pad_id):
    L = max(len(t) for t in targets) + 1
    dec_in = torch.full((len(targets), L), pad_id)
    labels = torch.full((len(targets), L), -100)
    for i, t in enumerate(targets):
        dec_in[i, : len(t) + 1] = torch.tensor([bos_id] + t)
        labels[i, : len(t) + 1] = torch.tensor(t + [eos_id])
    return dec_in, labels


def test_teacher_forcing_passes_solution(capsys):
    assert checks.check_teacher_forcing(teacher_forcing)
    assert "✅ teacher_forcing: all 3 cases" in capsys.readouterr().out
    dec_in, labels = teacher_forcing([[5, 6], [7]], 1, 2, 0)
    assert dec_in.tolist() == [[1, 5, 6], [1, 7, 0]] and labels.tolist() == [[5, 6, 2], [7, 2, -100]]


def test_teacher_forcing_hints(capsys):
    def pad_labels_with_pad(targets, bos_id, eos_id, pad_id):
        dec_in, labels = teacher_forcing(targets, bos_id, eos_id, pad_id)
        return dec_in, labels.masked_fill(labels == -100, pad_id)

    assert not checks.check_teacher_forcing(pad_labels_with_pad)
    out = capsys.readouterr().out
    assert "case 'targets of lengths 4, 1, 2" in out and "item 1" in out and "the ignore_index of F.cross_entropy" in out

    def unshifted(targets, bos_id, eos_id, pad_id):
        dec_in, _ = teacher_forcing(targets, bos_id, eos_id, pad_id)
        return dec_in, dec_in

    assert not checks.check_teacher_forcing(unshifted)
    out = capsys.readouterr().out
    assert "case 'one target [5, 6, 7]': item 1" in out and "each position would predict the token it already sees" in out

    def no_bos(targets, bos_id, eos_id, pad_id):
        L = max(len(t) for t in targets)
        return (torch.tensor([t + [pad_id] * (L - len(t)) for t in targets]),) * 2

    assert not checks.check_teacher_forcing(no_bos)
    assert "expected shape (1, 4), got (1, 3)" in capsys.readouterr().out
    assert not checks.check_teacher_forcing(todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out
