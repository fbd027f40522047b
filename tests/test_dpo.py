"""labkit.dpo: the DPO loss against the paper's formula on hand-made numbers, and sequence log-probabilities
that count the answer's tokens only."""

import math

import pytest
import torch

from labkit.dpo import dpo_loss, sequence_logprobs


def test_dpo_loss_is_the_papers_formula():
    pc, pr = torch.tensor([-3.0, -10.0]), torch.tensor([-5.0, -4.0])
    rc, rr = torch.tensor([-4.0, -9.0]), torch.tensor([-4.5, -6.0])
    beta = 0.5
    out = dpo_loss(pc, pr, rc, rr, beta=beta)
    # by hand: pair 1: (−3+4) − (−5+4.5) = 1.5; pair 2: (−10+9) − (−4+6) = −3
    expected = [-math.log(1 / (1 + math.exp(-beta * 1.5))), -math.log(1 / (1 + math.exp(-beta * -3.0)))]
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    per_pair = dpo_loss(pc, pr, rc, rr, beta=beta, reduction="none").loss
    assert per_pair.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.5, -0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25, 1.0])
    # the policy equal to the reference: log 2 per pair, whatever beta
    z = torch.tensor([-7.0, -2.0])
    assert dpo_loss(z, z + 1, z, z + 1, beta=3.0).loss.item() == pytest.approx(math.log(2))


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected():
    pc = torch.tensor([-3.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    dpo_loss(pc, pr, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1).loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descent raises log pi(chosen), lowers log pi(rejected)


def test_dpo_loss_refuses_bad_input():
    t = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t, t, t, t, beta=0.0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(t, t, t, torch.zeros(3))


def test_sequence_logprobs_sums_the_scored_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.tensor([[-100, -100, 3, 1, -100], [4, 4, 4, 4, 4]])
    logp = logits.log_softmax(-1)
    expected = [logp[0, 2, 3] + logp[0, 3, 1], sum(logp[1, t, 4] for t in range(5))]
    assert sequence_logprobs(logits, targets).tolist() == pytest.approx([float(e) for e in expected], rel=1e-6)
    # what the prompt's positions predict does not matter
    changed = logits.clone()
    changed[0, :2] += 100.0
    assert sequence_logprobs(changed, targets)[0].item() == pytest.approx(float(expected[0]), rel=1e-6)
    with pytest.raises(ValueError, match="no scored token"):
        sequence_logprobs(logits, torch.full((2, 5), -100))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        sequence_logprobs(logits[0], targets)
