"""Direct preference optimisation (DPO, Rafailov et al. 2023): tune a policy towards preferred answers
without a reward model, against a frozen reference (notebook 12).

For a prompt x with a preferred answer y_w and a rejected one y_l, DPO minimises

    -log sigmoid( beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ] )

where log pi(y|x) is the **sum** of the answer's token log-probabilities (the prompt's tokens are not
counted). ``beta * (log pi - log ref)`` is the implicit reward of an answer; beta sets how far the policy may
move from the reference (small beta: far).

    logp = sequence_logprobs(model(ids).logits, targets)       # (B,): one number per sequence
    loss = dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta=0.1)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["sequence_logprobs", "dpo_loss", "DPOOutput"]


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Sum over each sequence of log p(target token): logits (B, T, V) predicting targets (B, T) -> (B,).

    Positions whose target is ``ignore_index`` (the prompt, the padding) add nothing, so the sum covers
    the answer's tokens only. Computed in float32 whatever the logits' dtype.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and targets (B, T); got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    keep = targets != ignore_index
    if not keep.any(dim=1).all():
        raise ValueError("a sequence has no scored token (every target is ignore_index): mark its answer's "
                         "tokens as targets")
    logp = logits.float().log_softmax(-1)  # (B, T, V)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T); ignored rows use id 0
    return (picked * keep).sum(dim=1)  # (B,)


class DPOOutput(NamedTuple):
    loss: torch.Tensor  # mean over the pairs (a scalar), or per pair with reduction="none"
    chosen_rewards: torch.Tensor  # (B,) beta * (log pi - log ref) of the preferred answers, detached
    rejected_rewards: torch.Tensor  # (B,) the same for the rejected ones


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    reduction: str = "mean",
) -> DPOOutput:
    """The DPO loss of Rafailov et al. (2023, eq. 7) from four (B,) tensors of sequence log-probabilities
    (``sequence_logprobs``): the policy's and the frozen reference's, for the preferred and the rejected
    answer of each pair. Returns ``DPOOutput(loss, chosen_rewards, rejected_rewards)``."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape (B,), got {sorted(shapes)}")
    chosen = policy_chosen_logps - ref_chosen_logps  # log pi(y_w|x) - log ref(y_w|x)
    rejected = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen - rejected))  # (B,)
    return DPOOutput(losses.mean() if reduction == "mean" else losses,
                     (beta * chosen).detach(), (beta * rejected).detach())
