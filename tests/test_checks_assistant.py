"""Notebook 12's checkers (the prompt-masked SFT loss, the DPO loss): solutions a learner writes pass, typical
mistakes get their own hint, stubs say what to write."""

import pytest
import torch
import torch.nn.functional as F

from labkit import checks

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _todo(*args, **kwargs):
    raise NotImplementedError


def sft_loss(logits, ids, assistant_mask):  # a learner's version: flatten, then select
    V = logits.size(-1)
    pred, target, keep = logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), assistant_mask[:, 1:].reshape(-1)
    return F.cross_entropy(pred[keep], target[keep])


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):  # from the paper's equation 7
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -torch.log(torch.sigmoid(beta * margin)).mean()


def test_solutions_pass(capsys):
    assert checks.check_sft_loss(sft_loss)
    assert checks.check_dpo_loss(dpo_loss)
    out = capsys.readouterr().out
    assert "✅ sft_loss: all 3 cases pass" in out and "✅ dpo_loss: all 3 cases pass" in out


@pytest.mark.parametrize("wrong, hint", [
    (lambda lg, ids, m: F.cross_entropy(lg[m], ids[m]), "predicts token t + 1"),
    (lambda lg, ids, m: F.cross_entropy(lg[:, :-1].reshape(-1, lg.size(-1)), ids[:, 1:].reshape(-1)),
     "only the assistant's tokens"),
    (lambda lg, ids, m: F.cross_entropy(lg[:, :-1][m[:, :-1]], ids[:, 1:][m[:, :-1]]), "shift the mask"),
    (lambda lg, ids, m: F.cross_entropy(lg[:, :-1][m[:, 1:]], ids[:, 1:][m[:, 1:]], reduction="sum"), "not the sum"),
])
def test_sft_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_sft_loss(wrong)
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(), "against the reference"),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pr - rr) - (pc - rc))).mean(), "margin comes first"),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid((pc - rc) - (pr - rr)).mean(), "by beta"),
    (lambda pc, pr, rc, rr, b: -torch.sigmoid(b * ((pc - rc) - (pr - rr))).mean(), "logsigmoid"),
])
def test_dpo_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_dpo_loss(wrong)
    assert hint in capsys.readouterr().out


def test_stubs_say_what_to_write(capsys):
    assert not checks.check_sft_loss(_todo)
    assert not checks.check_dpo_loss(_todo)
    out = capsys.readouterr().out
    assert out.count("not implemented yet") == 2 and "Hint" not in out


# --- cached_attention ---------------------------------------------------------------------------


def cached_attention_sdpa(q, k, v, cache_k, cache_v):
    """PyTorch's own attention over the grown cache: the new token is last, so nothing needs masking."""
    keys, values = torch.cat([cache_k, k], dim=-2), torch.cat([cache_v, v], dim=-2)
    return F.scaled_dot_product_attention(q, keys, values), keys, values


def test_cached_attention_solution_passes(capsys):
    assert checks.check_cached_attention(cached_attention_sdpa)
    assert "✅ cached_attention: all 3 cases pass" in capsys.readouterr().out


def test_one_cached_step_is_the_last_row_of_full_causal_attention():
    # what the KV cache promises: the new token's output equals full causal attention's last row over the sequence
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out, keys, values = cached_attention_sdpa(q[:, :, -1:], k[:, :, -1:], v[:, :, -1:], k[:, :, :-1], v[:, :, :-1])
    torch.testing.assert_close(out, full[:, :, -1:])
    assert torch.equal(keys, k) and torch.equal(values, v)


@pytest.mark.parametrize("k, hint", [(0, "AND to itself"), (1, "1 / sqrt(head size)"), (2, "no mask is needed")])
def test_cached_attention_mistakes_get_their_hint(k, hint, capsys):
    from labkit.checks.assistant import _CACHED_MISTAKES

    assert not checks.check_cached_attention(_CACHED_MISTAKES[k][0])
    assert hint in capsys.readouterr().out


def test_cached_attention_stub_says_what_to_write(capsys):
    assert not checks.check_cached_attention(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out
