"""Notebook 15's evaluation tools: bits per byte and perplexity, expected calibration error, temperature
scaling, bootstrap error bars, the near-duplicate detector, FLOP counting against 6·N·tokens, and WEAT."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from labkit import evaluate
from labkit.lora import apply_lora
from labkit.models.gpt import GPT, GPTConfig


# --- bits per byte and perplexity ------------------------------------------------------------------------------


def test_bits_per_byte_converts_a_loss_and_agrees_with_perplexity():
    assert evaluate.bits_per_byte(math.log(2), 10, 10) == pytest.approx(1.0)
    assert evaluate.bits_per_byte(math.log(256), 100, 100) == pytest.approx(8.0)  # uniform over bytes: 8 bits
    # the same text cut into 4x fewer tokens: 4x the loss per token is the same number of bits per byte
    assert evaluate.bits_per_byte(4 * 1.2, 25, 100) == pytest.approx(evaluate.bits_per_byte(1.2, 100, 100))
    loss, n_tokens, n_bytes = 2.7, 300, 1000
    bpb = evaluate.bits_per_byte(loss, n_tokens, n_bytes)
    assert evaluate.perplexity(loss) == pytest.approx(2 ** (bpb * n_bytes / n_tokens))  # per-token perplexity
    with pytest.raises(ValueError, match="positive"):
        evaluate.bits_per_byte(1.0, 0, 10)


def test_token_nll_is_lm_loss_token_by_token_and_a_uniform_model_scores_log_v():
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=50, context_length=16))
    data = torch.randint(50, (400,))
    nll, targets = evaluate.token_nll(model, data, 16)
    assert len(nll) == len(targets) == (399 // 16) * 16
    assert nll.mean().item() == pytest.approx(evaluate.lm_loss(model, data, 16), rel=1e-5)
    assert torch.equal(targets[:16], data[1:17])
    with torch.no_grad():  # all-zero output layer: every token has probability 1/V
        model.lm_head.weight.zero_()
    nll, _ = evaluate.token_nll(model, data, 16)
    assert torch.allclose(nll, torch.full_like(nll, math.log(50)), atol=1e-5)
    assert evaluate.bits_per_byte(nll.mean().item(), len(nll), len(nll)) == pytest.approx(math.log2(50), rel=1e-5)


# --- calibration -----------------------------------------------------------------------------------------------


def test_ece_is_zero_for_a_calibrated_predictor_and_matches_the_hand_computation():
    # in every bin the confidence is exactly the share of right answers
    conf = torch.tensor([0.55] * 20 + [0.85] * 20 + [1.0] * 5)
    correct = torch.tensor([1] * 11 + [0] * 9 + [1] * 17 + [0] * 3 + [1] * 5)
    assert evaluate.expected_calibration_error(conf, correct, 10) == pytest.approx(0.0, abs=1e-7)  # float32 0.55
    # by hand, 2 bins split at 0.5: {0.3} accuracy 0, gap 0.3, share 1/4; {0.9, 0.9, 0.6} accuracy 2/3,
    # mean confidence 0.8, gap 2/15, share 3/4: ECE = 0.075 + 0.1 = 0.175
    ece = evaluate.expected_calibration_error([0.9, 0.9, 0.6, 0.3], [1, 0, 1, 0], 2)
    assert ece == pytest.approx(0.175)
    b = evaluate.calibration_bins([0.9, 0.9, 0.6, 0.3], [1, 0, 1, 0], 2)
    assert b["count"].tolist() == [1, 3] and b["accuracy"][1].item() == pytest.approx(2 / 3)
    # sampled: calibrated -> near 0; right 20 points less often than claimed -> near 0.2
    g = torch.Generator().manual_seed(0)
    c = 0.4 + 0.6 * torch.rand(100_000, generator=g)
    assert evaluate.expected_calibration_error(c, torch.rand(100_000, generator=g) < c) < 0.01
    assert evaluate.expected_calibration_error(c, torch.rand(100_000, generator=g) < c - 0.2) == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="probabilities"):
        evaluate.expected_calibration_error([1.5], [1])


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(20_000, 5, generator=g)
    labels = torch.multinomial(F.softmax(logits / 2.0, -1), 1, generator=g).squeeze(1)
    assert evaluate.fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)


def test_bootstrap_intervals_cover_the_value_and_a_paired_difference_of_a_model_with_itself_is_zero():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(2, (500,), generator=g)
    good = torch.where(torch.rand(500, generator=g) < 0.9, target, 1 - target)
    bad = torch.where(torch.rand(500, generator=g) < 0.6, target, 1 - target)
    value, low, high = evaluate.bootstrap_ci(evaluate.accuracy, good, target, 300)
    assert low < value < high and high - low < 0.1
    same = evaluate.paired_bootstrap(evaluate.accuracy, good, good, target, 200)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    better = evaluate.paired_bootstrap(evaluate.accuracy, good, bad, target, 200)
    assert better["low"] > 0.2 and better["p_not_better"] == 0.0


# --- leakage ---------------------------------------------------------------------------------------------------


def _edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def test_near_duplicates_finds_planted_copies_and_nothing_two_words_away():
    words = "tom mary cat dog tea milk runs eats sees likes big red old new very the a".split()
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 8))).capitalize() + "." for _ in range(300)]
    planted = {
        "exact": corpus[10].upper().rstrip(".") + "!",  # case and punctuation do not matter
        "substituted": " ".join(["zebra"] + corpus[20].split()[1:]),
        "inserted": corpus[30].rstrip(".") + " yesterday.",
        "deleted": " ".join(corpus[40].split()[1:]),
        "two away": " ".join(["zebra", "lion"] + corpus[50].split()[2:]),
        "unrelated": "Quantum chromodynamics is hard to teach.",
    }
    found = dict(zip(planted, evaluate.near_duplicates(list(planted.values()), corpus)))
    assert found["exact"] == ("exact", 10)
    assert found["substituted"][0] == found["inserted"][0] == found["deleted"][0] == "near"
    for name in ("substituted", "inserted", "deleted"):  # the copy it names is one word away
        j = found[name][1]
        assert _edit_distance(evaluate.normalise_text(planted[name]), evaluate.normalise_text(corpus[j])) == 1
    assert found["two away"][0] != "exact" and found["unrelated"] == ("none", -1)
    # against brute force on random queries
    queries = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))) for _ in range(200)]
    got = evaluate.near_duplicates(queries, corpus)
    for q, (kind, j) in zip(queries, got):
        dists = [_edit_distance(evaluate.normalise_text(q), evaluate.normalise_text(s)) for s in corpus]
        assert kind == ("exact" if min(dists) == 0 else "near" if min(dists) == 1 else "none")
        assert j == -1 or dists[j] == min(dists)
    assert [k for k, _ in evaluate.near_duplicates(list(planted.values()), corpus, max_edits=0)].count("exact") == 1


# --- FLOPs -----------------------------------------------------------------------------------------------------


def _gpt(fused, T=32, d=128, L=4):
    return GPT(GPTConfig(vocab_size=512, context_length=T, n_layers=L, n_heads=4, d_model=d, pos_emb="rope", bias=False,
                         tie_weights=False, fused_attention=fused))


def _step(model, x):
    model(x, x).loss.backward()


def test_flop_counter_agrees_with_6_n_tokens_for_the_gpt():
    torch.manual_seed(0)
    B, T, d, L = 4, 32, 128, 4
    x = torch.randint(512, (B, T))
    model = _gpt(fused=True, T=T, d=d, L=L)
    N = evaluate.matmul_params(model)
    assert N == L * 12 * d * d + d * 512  # q, k, v, out (4 d^2) + MLP (8 d^2) per block, and the output layer
    counted = evaluate.training_flops(_step, model, x)
    analytic = evaluate.analytic_training_flops(N, B * T)
    assert abs(counted / analytic - 1) < 0.10  # the target: within 10% of 6·N·tokens
    # the explicit attention adds the scores and the weighted values: 12·L·T·d per token (forward 4·T·d per layer)
    unfused = evaluate.training_flops(_step, _gpt(fused=False, T=T, d=d, L=L), x)
    assert unfused == pytest.approx(analytic + 12 * L * T * d * B * T, rel=0.01)
    assert unfused > counted  # the counter does see the attention when it is written out


def test_lora_training_flops_are_4n_plus_2_n_trainable():
    torch.manual_seed(0)
    model = _gpt(fused=True)
    for p in model.parameters():
        p.requires_grad_(False)
    apply_lora(model, rank=4, alpha=8, targets=("attn", "mlp"))
    x = torch.randint(512, (4, 32))
    N, trainable = evaluate.matmul_params(model), evaluate.matmul_params(model, trainable_only=True)
    assert 0 < trainable < 0.1 * N
    counted = evaluate.training_flops(_step, model, x)
    assert counted == pytest.approx(evaluate.analytic_training_flops(N, x.numel(), trainable), rel=0.05)
    assert counted < 0.75 * evaluate.analytic_training_flops(N, x.numel())  # not 6N: no gradient for frozen weights


# --- association test ------------------------------------------------------------------------------------------


def test_weat_finds_a_planted_association_and_not_a_missing_one():
    g = torch.Generator().manual_seed(3)
    a_dir, b_dir = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def around(v, n, spread=1.0):
        return v + spread * torch.randn(n, 16, generator=g)

    A, B = around(a_dir, 6), around(b_dir, 6)
    X, Y = around(a_dir, 8, 1.5), around(b_dir, 8, 1.5)  # X leans towards A, Y towards B
    planted = evaluate.weat(X, Y, A, B, 2000)
    assert planted["effect_size"] > 1.0 and planted["p_value"] < 0.01
    noise = torch.randn(16, 16, generator=g)
    none = evaluate.weat(noise[:8], noise[8:], A, B, 2000)
    assert none["p_value"] > 0.01 and abs(none["effect_size"]) < 1.5
    swapped = evaluate.weat(Y, X, A, B, 2000)
    assert swapped["effect_size"] == pytest.approx(-planted["effect_size"]) and swapped["p_value"] > 0.99


def test_near_duplicates_returns_the_first_match_in_the_corpus():
    # several corpus sentences are one word away: the answer must not depend on set order (Python's hash seed)
    corpus = ["Tom is there.", "I am your brother.", "Tom was here.", "I am not your baby.", "Tom is here now."]
    assert evaluate.near_duplicates(["Tom is here.", "I am not your brother."], corpus) == [("near", 0), ("near", 1)]
