"""labkit.generate: the sampling filters, greedy decoding, beam search, and the KV cache (reading a text in pieces
through it gives the logits of reading it whole; generating with it gives the tokens of generating without it)."""

import itertools
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from labkit.generate import KVCache, apply_temperature, beam_search, greedy, sample_next, top_k_filter, top_p_filter
from labkit.models.gpt import GPT, GPTConfig

V = 50


def logits_batch(B=4, seed=0):
    return 2.0 * torch.randn(B, V, generator=torch.Generator().manual_seed(seed))


def draws(logits, n=2000, seed=0, **kw):
    """n independent samples per row -> (n, B) token ids (one call on n stacked copies)."""
    g = torch.Generator().manual_seed(seed)
    B = logits.size(0)
    return sample_next(logits.repeat(n, 1), generator=g, **kw).view(n, B)  # (n*B, 1) -> (n, B)


def test_top_k_samples_only_the_k_highest():
    logits = logits_batch()
    k = 5
    allowed = logits.topk(k).indices  # (B, k)
    samples = draws(logits, top_k=k)  # (n, B)
    for b in range(logits.size(0)):
        seen = set(samples[:, b].tolist())
        assert seen <= set(allowed[b].tolist())
        assert len(seen) == k  # and all of them do occur


def test_top_k_filter_keeps_exactly_k_and_their_values():
    logits = logits_batch()
    out = top_k_filter(logits, 7)
    kept = torch.isfinite(out)
    assert torch.all(kept.sum(-1) == 7)
    assert torch.equal(out[kept], logits[kept])
    assert torch.all(out[~kept] == float("-inf"))
    assert torch.equal(top_k_filter(logits, 10 * V), logits)  # k >= V keeps everything


def nucleus(row, p):
    """Reference nucleus by a plain loop: most likely first until the mass reaches p."""
    probs = F.softmax(row.double(), -1)
    order = probs.argsort(descending=True).tolist()
    keep, mass = [], 0.0
    for i in order:
        keep.append(i)
        mass += probs[i].item()
        if mass >= p:
            break
    return set(keep)


@pytest.mark.parametrize("p", [0.3, 0.75, 0.95])
def test_top_p_samples_only_the_nucleus(p):
    logits = logits_batch()
    samples = draws(logits, top_p=p)
    for b in range(logits.size(0)):
        ref = nucleus(logits[b], p)
        assert set(torch.isfinite(top_p_filter(logits, p)[b]).nonzero().flatten().tolist()) == ref
        assert set(samples[:, b].tolist()) <= ref


def test_top_p_always_keeps_the_top_token():
    logits = torch.tensor([[5.0, 1.0, 0.0, -1.0]])  # top token alone has p ~0.97
    out = top_p_filter(logits, 1e-6)
    assert torch.isfinite(out).tolist() == [[True, False, False, False]]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_p_after_top_k_renormalises_within_the_k():
    logits = logits_batch(B=1)
    samples = draws(logits, n=500, top_k=3, top_p=0.999)
    assert set(samples.flatten().tolist()) <= set(logits.topk(3).indices.flatten().tolist())


def test_sampling_frequencies_follow_softmax():
    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0]])
    samples = draws(logits, n=4000).flatten()
    freq = torch.bincount(samples, minlength=4).double() / 4000
    assert_close(freq, F.softmax(logits.double(), -1)[0], atol=0.03, rtol=0)


def test_low_temperature_approaches_argmax_and_high_flattens():
    logits = logits_batch()
    samples = draws(logits, n=300, temperature=1e-4)
    assert torch.all(samples == logits.argmax(-1))
    p_hot = F.softmax(apply_temperature(logits, 100.0), -1)
    assert_close(p_hot, torch.full_like(p_hot, 1 / V), atol=0.01, rtol=0)


def test_sample_next_shapes():
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits_batch(), generator=g).shape == (4, 1)
    assert sample_next(torch.randn(V), generator=g).shape == (1,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": -3}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.2}, "top_p"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(logits_batch(), **kwargs)


# ---------------------------------------------------------------------------- greedy, beam search


class Bigram(torch.nn.Module):
    """A toy LM: next-token logits depend only on the last token (a fixed table)."""

    def __init__(self, table):
        super().__init__()
        self.table = table  # (V, V) log-probs

    def forward(self, idx):
        return self.table[idx], None  # (B, T, V), like GPT's (logits, loss)


def bigram_table(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(3.0 * torch.randn(vocab, vocab, generator=g), -1)


def test_greedy_follows_argmax_chain():
    table = bigram_table(6)
    out = greedy(Bigram(table), torch.tensor([[2], [5]]), max_new_tokens=7)
    assert out.shape == (2, 8)
    for row in out:
        for a, b in zip(row[:-1], row[1:]):
            assert b == table[a].argmax()


def exhaustive_best(table, start, max_len, eos, length_penalty):
    """Score every possible continuation (ending at EOS or at max_len) and return the best."""
    vocab = table.size(0)
    best = (None, -math.inf)
    for L in range(1, max_len + 1):
        for seq in itertools.product(range(vocab), repeat=L):
            if eos in seq[:-1] or (L < max_len and seq[-1] != eos):
                continue  # EOS only at the end; shorter than max_len only if it ended
            prev, logp = start, 0.0
            for t in seq:
                logp += table[prev, t].item()
                prev = t
            score = logp / L**length_penalty
            if score > best[1]:
                best = (list(seq), score)
    return best


def search_one(step_fn, start, beam_size, max_len, eos_id=None, length_penalty=1.0):
    """labkit's beam search for one sequence, with a step function of the prefixes alone."""
    return beam_search(lambda prefixes, rows: step_fn(prefixes), [start.tolist()], beam_size, max_len, eos_id,
                       length_penalty)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_search_equals_exhaustive_search(seed):
    vocab, eos, max_len = 4, 0, 4
    table = bigram_table(vocab, seed)
    step_fn = lambda prefix: table[prefix[:, -1]]  # (beams, T) -> (beams, V)
    hyps = search_one(step_fn, torch.tensor([1]), beam_size=vocab**max_len, max_len=max_len,
                       eos_id=eos, length_penalty=0.0)  # fmt: skip
    ref_seq, ref_score = exhaustive_best(table, 1, max_len, eos, 0.0)
    assert hyps[0][0] == ref_seq
    assert hyps[0][1] == pytest.approx(ref_score)
    scores = [s for _, s in hyps]
    assert scores == sorted(scores, reverse=True)


def test_beam_of_one_is_greedy():
    table = bigram_table(8, seed=3)
    step_fn = lambda prefix: table[prefix[:, -1]]
    hyps = search_one(step_fn, torch.tensor([2]), beam_size=1, max_len=6, eos_id=None)
    ref = greedy(Bigram(table), torch.tensor([[2]]), max_new_tokens=6)[0, 1:]
    assert len(hyps) == 1 and hyps[0][0] == ref.tolist()


def test_beam_search_beats_greedy_on_a_garden_path():
    # from start 0: token 1 looks best (0.6) but then everything is flat; token 2 (0.4) leads
    # to a certain EOS. Greedy takes 1; a beam of 2 finds 2 -> EOS with higher probability.
    eos = 3
    probs = torch.tensor([
        [0.0, 0.6, 0.4, 0.0],
        [0.0, 1 / 3, 1 / 3, 1 / 3],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 1.0],
    ])  # fmt: skip
    table = probs.clamp_min(1e-12).log()
    step_fn = lambda prefix: table[prefix[:, -1]]
    best, score = search_one(step_fn, torch.tensor([0]), beam_size=2, max_len=2, eos_id=eos, length_penalty=0.0)[0]
    assert best == [2, 3]
    assert score == pytest.approx(math.log(0.4))
    greedy_first = greedy(Bigram(table), torch.tensor([[0]]), max_new_tokens=1)[0, 1].item()
    assert greedy_first == 1


def test_beam_search_length_penalty_prefers_longer_hypotheses():
    # tokens: 0 = EOS, 1 = start, 2. From 1: EOS or 2 (0.5 each); from 2: EOS 0.8, 2 0.2.
    # Raw log-prob prefers stopping at once ([0]: log .5); per-token (length_penalty=1) prefers
    # [2, 0]: (log .5 + log .8) / 2.
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.8, 0.0, 0.2]])
    table = probs.clamp_min(1e-12).log()
    step_fn = lambda prefix: table[prefix[:, -1]]
    for lp, expected in [(0.0, [0]), (1.0, [2, 0])]:
        best, score = search_one(step_fn, torch.tensor([1]), beam_size=2, max_len=4, eos_id=0, length_penalty=lp)[0]
        ref_seq, ref_score = exhaustive_best(table, 1, 4, 0, lp)
        assert best == expected == ref_seq
        assert score == pytest.approx(ref_score)


def test_beam_search_invalid_arguments():
    step_fn = lambda prefix: torch.zeros(prefix.size(0), 3)
    with pytest.raises(ValueError, match="beam_size"):
        search_one(step_fn, torch.tensor([0]), beam_size=0, max_len=3, eos_id=None)
    with pytest.raises(ValueError, match="max_new_tokens"):
        search_one(step_fn, torch.tensor([0]), beam_size=2, max_len=0, eos_id=None)


class WindowSum(torch.nn.Module):
    """Its next token is the sum of the tokens it sees, mod V; it refuses more than ``limit`` tokens (as GPT)."""

    def __init__(self, limit, vocab=7, with_config=True):
        super().__init__()
        self.limit, self.vocab = limit, vocab
        if with_config:
            self.config = type("Config", (), {"context_length": limit})()

    def forward(self, idx):
        if idx.size(1) > self.limit:
            raise ValueError(f"sequence length {idx.size(1)} exceeds context_length {self.limit}")
        nxt = idx.cumsum(1) % self.vocab  # (B, T): the answer after each prefix
        return torch.nn.functional.one_hot(nxt, self.vocab).float()  # (B, T, V) logits


@pytest.mark.parametrize("with_config", [True, False], ids=["model.config.context_length", "context_length="])
def test_greedy_crops_the_context_to_the_models_limit(with_config):
    model = WindowSum(limit=4, with_config=with_config)
    start = torch.tensor([[1, 2, 3], [4, 4, 4]])
    out = greedy(model, start, max_new_tokens=6, context_length=None if with_config else 4)
    expected = start.tolist()
    for row in expected:  # by hand: each new token is the sum of the last 4 tokens, mod 7
        for _ in range(6):
            row.append(sum(row[-4:]) % 7)
    assert out.tolist() == expected


class _LossFirst(NamedTuple):  # an output whose logits are not its first item
    loss: torch.Tensor | None
    logits: torch.Tensor


def test_greedy_reads_the_logits_by_name():
    table = bigram_table(6)
    model = Bigram(table)
    by_name = lambda idx: _LossFirst(None, model(idx)[0])  # noqa: E731
    assert torch.equal(greedy(by_name, torch.tensor([[2]]), 5), greedy(model, torch.tensor([[2]]), 5))


def test_beam_search_compares_live_beams_before_stopping():
    """After step 2 two hypotheses have ended (EOS at -1.0, "2 EOS" at -1.2), as many as the beam, but
    the live beam "1 1" (-0.11) still scores better: stopping there would miss "1 1 EOS" (-0.12)."""
    eos, V = 0, 4
    logp = {(3,): {eos: -1.0, 1: -0.1, 2: -1.1}, (3, 1): {eos: -2.0, 1: -0.01}, (3, 2): {eos: -0.1},
            (3, 1, 1): {eos: -0.01}}

    def step_fn(prefixes):
        out = torch.full((prefixes.size(0), V), -5.0)
        for row, prefix in enumerate(prefixes.tolist()):
            for tok, value in logp.get(tuple(prefix), {}).items():
                out[row, tok] = value
        return out

    hyps = search_one(step_fn, torch.tensor([3]), beam_size=2, max_len=4, eos_id=eos, length_penalty=0.0)
    (best, score), (second, score2) = hyps
    assert best == [1, 1, eos] and score == pytest.approx(-0.12)
    assert second == [eos] and score2 == pytest.approx(-1.0)


# ---------------------------------------------------------------- the KV cache
# The GPT's KV cache: reading a text in pieces through the cache gives the logits of reading it whole, and
# generation with the cache gives exactly the tokens of generation without it (greedy and seeded sampling, learned
# and rotary positions, fused and explicit attention, past the context window).


CACHE_CONFIGS = {
    "learned": dict(),
    "rope-relu2": dict(pos_emb="rope", mlp="relu2", tie_weights=False, bias=False),
    "rope-attention-only": dict(pos_emb="rope", mlp="none"),
    "explicit-attention": dict(fused_attention=False),
}


def cache_model(name: str) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(**CACHE_CONFIGS[name]))
    for p in model.parameters():  # larger weights than the init: the logits vary, so a wrong cache shows
        p.data.mul_(3.0)
    return model.eval()


def cache_ids(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(64, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CACHE_CONFIGS)
def test_reading_in_pieces_through_the_cache_gives_the_whole_texts_logits(name):
    model = cache_model(name)
    x = cache_ids(2, 20)
    whole = model(x).logits
    cache = model.new_cache()
    pieces = [model(x[:, a:b], cache=cache).logits for a, b in ((0, 7), (7, 8), (8, 13), (13, 20))]
    assert cache.length == 20
    assert_close(torch.cat(pieces, 1), whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CACHE_CONFIGS)
def test_generation_with_the_cache_gives_the_same_tokens(name):
    model = cache_model(name)
    x = cache_ids(3, 5)
    # greedy (top_k=1), 40 new tokens: past context_length (32), where the window starts to slide
    assert torch.equal(model.generate(x, 40, top_k=1, use_cache=True), model.generate(x, 40, top_k=1, use_cache=False))
    for seed in (0, 1):  # seeded sampling: the same draws, so the same tokens
        cached = model.generate(x, 40, temperature=1.0, generator=torch.Generator().manual_seed(seed))
        plain = model.generate(x, 40, temperature=1.0, generator=torch.Generator().manual_seed(seed), use_cache=False)
        assert torch.equal(cached, plain)


def test_the_cache_is_what_makes_a_difference():
    # a cache holding another text's keys changes the logits: the new tokens really attend over the cache
    model = cache_model("learned")
    x, other = cache_ids(1, 10), cache_ids(1, 10, seed=2)
    cache = model.new_cache()
    model(other[:, :9], cache=cache)
    assert not torch.allclose(model(x[:, 9:], cache=cache).logits, model(x).logits[:, 9:], atol=1e-3)


def test_the_cache_refuses_to_grow_past_the_context():
    model = cache_model("learned")
    cache = model.new_cache()
    model(cache_ids(1, 30), cache=cache)
    with pytest.raises(ValueError, match="context_length"):
        model(cache_ids(1, 3), cache=cache)
    with pytest.raises(ValueError, match="holds 4 positions"):
        KVCache(1, 4).update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2), 0)
