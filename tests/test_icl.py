"""In-context learning pieces (notebook 11): the task generator, the prefix-matching score, head ablation,
and a tiny gpt-icl run through the zoo."""

from dataclasses import replace

import pytest
import torch

from labkit import zoo
from labkit.attention import ablate_heads, capture_attention, prefix_matching_score
from labkit.models.gpt import GPT, GPTConfig
from labkit.recipes import gpt_icl as ri

# --- the task generator ------------------------------------------------------------------


def test_held_out_tasks_are_never_training_tasks():
    train = set(ri.task_ranks(8, 10, held_out=False).tolist())
    held = set(ri.task_ranks(8, 10, held_out=True).tolist())
    assert not train & held and len(train) + len(held) == 40320 and len(held) == 4032
    perms = ri.all_permutations(8)
    assert len({tuple(p) for p in perms.tolist()}) == 40320  # each rank is a distinct permutation
    g = torch.Generator().manual_seed(0)
    held_perms = {tuple(perms[r].tolist()) for r in held}
    for _ in range(20):  # the sampler draws training mappings only
        seqs, drawn = ri.sample_sequences(ri.ICL, 256, g)
        assert not {tuple(p) for p in drawn.tolist()} & held_perms
    _, drawn = ri.sample_sequences(ri.ICL, 256, g, held_out=True)
    assert {tuple(p) for p in drawn.tolist()} <= held_perms


def test_sequences_follow_their_task_and_only_outputs_are_scored():
    g = torch.Generator().manual_seed(1)
    seqs, perms = ri.sample_sequences(ri.ICL, 64, g)
    n = ri.ICL.n_symbols
    assert seqs.shape == (64, 2 * ri.ICL.n_pairs)
    x, y = seqs[:, 0::2], seqs[:, 1::2]
    assert (x < n).all() and (y >= n).all()
    assert torch.equal(y - n, perms.gather(1, x))  # every output is the task's image of its input
    idx, targets = ri.icl_batch(seqs, n)
    assert idx.shape[1] == ri.ICL.context_length
    assert (targets[:, 0::2] == y).all() and (targets[:, 1::2] == -100).all()


def test_icl_accuracy_of_an_oracle_and_of_a_context_blind_model():
    g = torch.Generator().manual_seed(2)
    seqs, perms = ri.sample_sequences(ri.ICL, 128, g, held_out=True)
    n = ri.ICL.n_symbols

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

    acc = ri.icl_accuracy(Copier(), seqs)
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

    seqs, _ = ri.sample_sequences(ri.ICL, 2048, g, held_out=True)
    blind = ri.icl_accuracy(Blind(), seqs)
    assert abs(sum(blind["by_shot"]) / len(blind["by_shot"]) - 1 / n) < 0.02


# --- the prefix-matching score ----------------------------------------------------------


def _repeated(T_half=20, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    half = torch.randperm(vocab, generator=g)[:T_half]  # no repeats inside a half
    return torch.cat([half, half]).unsqueeze(0)  # (1, 2 T_half)


def test_prefix_matching_is_one_for_a_perfect_induction_head_and_small_for_uniform():
    tokens = _repeated()
    T = tokens.size(1)
    perfect = torch.zeros(1, 1, T, T)
    half = T // 2
    for i in range(T):
        perfect[0, 0, i, i - half + 1 if i >= half else 0] = 1.0  # second half: the token after the earlier copy
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1.0  # a previous-token head: not induction
    attn = torch.stack([perfect[0, 0], uniform, previous]).unsqueeze(0)  # (1, 3, T, T)
    score = prefix_matching_score(attn, tokens)
    assert score[0] == pytest.approx(1.0)
    assert score[1] < 0.05 and score[2] == 0.0
    with pytest.raises(ValueError, match="repeated tokens"):
        prefix_matching_score(attn[:, :, :half, :half], tokens[:, :half])
    with pytest.raises(ValueError, match="tokens must be"):
        prefix_matching_score(attn, tokens[:, :-1])


def test_prefix_matching_with_a_query_mask_scores_only_those_queries():
    tokens = _repeated(10)
    T = tokens.size(1)
    attn = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)
    only_last = torch.zeros(1, T, dtype=torch.bool)
    only_last[0, -1] = True
    # the last query (second copy, position T-1) matches key T//2 (after its earlier occurrence at T//2 - 1)
    got = prefix_matching_score(attn.view(1, 1, T, T), tokens, only_last)
    assert got.item() == pytest.approx(1 / T)


# --- head ablation ---------------------------------------------------------------------


def test_ablating_a_head_zeroes_exactly_its_contribution():
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(n_heads=4, d_model=32)).eval()
    idx = torch.randint(64, (2, 12))
    base = model(idx).logits
    with ablate_heads(model, {"transformer.h.1.attn": [2]}):
        ablated = model(idx).logits
    # the same as removing head 2's columns from layer 1's output projection
    ref = GPT(model.config).eval()
    ref.load_state_dict(model.state_dict())
    hs = 32 // 4
    with torch.no_grad():
        ref.transformer.h[1].attn.c_proj.weight[:, 2 * hs:3 * hs] = 0.0
    assert torch.allclose(ablated, ref(idx).logits, atol=1e-6)
    assert not torch.allclose(ablated, base, atol=1e-4)
    # the hook is gone afterwards, and the attention pattern of the ablated head is unchanged (only its output)
    assert torch.equal(model(idx).logits, base)
    with capture_attention(model, detach=True) as a1:
        model(idx)
    with ablate_heads(model, {"transformer.h.1.attn": [2]}), capture_attention(model, detach=True) as a2:
        model(idx)
    assert torch.equal(a1["transformer.h.0.attn"], a2["transformer.h.0.attn"])
    assert torch.equal(a1["transformer.h.1.attn"], a2["transformer.h.1.attn"])


def test_ablate_heads_says_what_is_wrong():
    model = GPT(GPTConfig.tiny())
    with pytest.raises(KeyError, match="attention modules are"):
        with ablate_heads(model, {"transformer.h.5.attn": [0]}):
            pass
    with pytest.raises(ValueError, match="heads 0..1"):
        with ablate_heads(model, {"transformer.h.0.attn": [2]}):
            pass
    with pytest.raises(TypeError, match="not a multi-head attention"):
        with ablate_heads(model, {"transformer.h.0.mlp": [0]}):
            pass


# --- a tiny run through the zoo -------------------------------------------------------------


# the recipe's model and optimiser (attention only, Muon with weight decay), shrunk: ~6 s; it learns to copy
# on every seed tried (1-3, on both kinds of CPU); at width 32 it did not within 300 steps
TINY = replace(ri.ICL, n_symbols=4, n_pairs=8, held_out_every=4, n_layers=2, n_heads=2, d_model=64, steps=400,
               batch_size=32, warmup_steps=20, eval_every=100, n_eval=64)


def test_tiny_run_through_the_zoo_learns_in_context(isolated_cache):
    zoo.register(zoo.Recipe("test-icl", "tiny", build=ri.build_gpt_icl,
                            train=lambda: ri.train_gpt_icl(TINY, progress=False)), overwrite=True)
    model = zoo.load("test-icl")
    meta = model.zoo_meta
    h = meta["history"]
    assert h["eval_steps"] == [100, 200, 300, 400]
    assert set(h["eval"]) >= {"val_loss", "seen_acc_8plus", "unseen_acc", "induction.0.0", "induction.1.1"}
    final = meta["final"]
    assert final["seen_overall"] > 0.6  # 4 symbols: chance is 0.25; copying from the context is learned
    assert len(meta["induction"]) == 2 and len(meta["induction"][0]) == 2
    torch.load(zoo.path("test-icl"), weights_only=True)  # meta holds plain types only
    again = zoo.load("test-icl")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_few_shot_prompt_format_and_errors():
    assert ri.few_shot_prompt([], 3, 8) == [3]
    assert ri.few_shot_prompt([(0, 7), (1, 6)], 1, 8) == [0, 15, 1, 14, 1]
    # the prompt is exactly what the model trains on: a training sequence cut before an output
    seqs, perms = ri.sample_sequences(ri.ICL, 4, torch.Generator().manual_seed(0))
    s = seqs[0].tolist()
    pairs = [(s[2 * k], s[2 * k + 1] - 8) for k in range(5)]
    assert ri.few_shot_prompt(pairs, s[10], 8) == s[:11]
    with pytest.raises(ValueError, match="0..7"):
        ri.few_shot_prompt([(0, 8)], 1, 8)
    with pytest.raises(ValueError, match="query"):
        ri.few_shot_prompt([(0, 1)], -1, 8)
