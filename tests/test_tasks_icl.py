"""labkit.tasks.icl: the in-context-learning task generator (held-out permutations never drawn for training),
its batches, the few-shot prompt, and the accuracy by number of examples."""

import pytest
import torch

from labkit.recipes.gpt_icl import ICL
from labkit.tasks import icl


def test_held_out_tasks_are_never_training_tasks():
    train = set(icl.task_ranks(8, 10, held_out=False).tolist())
    held = set(icl.task_ranks(8, 10, held_out=True).tolist())
    assert not train & held and len(train) + len(held) == 40320 and len(held) == 4032
    perms = icl.all_permutations(8)
    assert len({tuple(p) for p in perms.tolist()}) == 40320  # each rank is a distinct permutation
    g = torch.Generator().manual_seed(0)
    held_perms = {tuple(perms[r].tolist()) for r in held}
    for _ in range(20):  # the sampler draws training mappings only
        seqs, drawn = icl.sample_sequences(ICL, 256, g)
        assert not {tuple(p) for p in drawn.tolist()} & held_perms
    _, drawn = icl.sample_sequences(ICL, 256, g, held_out=True)
    assert {tuple(p) for p in drawn.tolist()} <= held_perms


def test_sequences_follow_their_task_and_only_outputs_are_scored():
    g = torch.Generator().manual_seed(1)
    seqs, perms = icl.sample_sequences(ICL, 64, g)
    n = ICL.n_symbols
    assert seqs.shape == (64, 2 * ICL.n_pairs)
    x, y = seqs[:, 0::2], seqs[:, 1::2]
    assert (x < n).all() and (y >= n).all()
    assert torch.equal(y - n, perms.gather(1, x))  # every output is the task's image of its input
    idx, targets = icl.icl_batch(seqs, n)
    assert idx.shape[1] == ICL.context_length
    assert (targets[:, 0::2] == y).all() and (targets[:, 1::2] == -100).all()


def test_icl_accuracy_of_an_oracle_and_of_a_context_blind_model():
    g = torch.Generator().manual_seed(2)
    seqs, perms = icl.sample_sequences(ICL, 128, g, held_out=True)
    n = ICL.n_symbols

    class Copier(torch.nn.Module):  # answers from the context when it can, else the first unused output
        def forward(self, idx):
            B, T = idx.shape
            logits = torch.zeros(B, T, 2 * n)
            for b in range(B):
                for t in range(0, T, 2):
                    known = {int(idx[b, s]): int(idx[b, s + 1]) for s in range(0, t, 2)}
                    q = int(idx[b, t])
                    out = known.get(q, min(set(range(n, 2 * n)) - set(known.values()), default=n))
                    logits[b, t, out] = 1.0
            return type("Out", (), {"logits": logits})

    acc = icl.icl_accuracy(Copier(), seqs, ICL)
    assert acc["seen_overall"] == 1.0  # copying is always right
    assert acc["by_shot"][0] < 0.3 and acc["unseen_overall"] < 0.5  # guessing by elimination mostly is not
    assert all(a > 0.99 for a, c in zip(acc["seen"], acc["n_seen"]) if c)
    assert acc["n_seen"][0] == 0 and acc["n_seen"][-1] > 100  # late queries are mostly repeats
    assert acc["unseen_ceiling"][0] == pytest.approx(1 / n)

    class Blind(torch.nn.Module):  # always the same output: 1/n on average over tasks
        def forward(self, idx):
            logits = torch.zeros(*idx.shape, 2 * n)
            logits[..., n] = 1.0
            return type("Out", (), {"logits": logits})

    seqs, _ = icl.sample_sequences(ICL, 2048, g, held_out=True)
    blind = icl.icl_accuracy(Blind(), seqs, ICL)
    assert abs(sum(blind["by_shot"]) / len(blind["by_shot"]) - 1 / n) < 0.02


def test_few_shot_prompt_format_and_errors():
    assert icl.few_shot_prompt([], 3, 8) == [3]
    assert icl.few_shot_prompt([(0, 7), (1, 6)], 1, 8) == [0, 15, 1, 14, 1]
    # the prompt is exactly what the model trains on: a training sequence cut before an output
    seqs, perms = icl.sample_sequences(ICL, 4, torch.Generator().manual_seed(0))
    s = seqs[0].tolist()
    pairs = [(s[2 * k], s[2 * k + 1] - 8) for k in range(5)]
    assert icl.few_shot_prompt(pairs, s[10], 8) == s[:11]
    with pytest.raises(ValueError, match="0..7"):
        icl.few_shot_prompt([(0, 8)], 1, 8)
    with pytest.raises(ValueError, match="query"):
        icl.few_shot_prompt([(0, 1)], -1, 8)
