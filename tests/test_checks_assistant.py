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
