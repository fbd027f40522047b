"""The GPT's KV cache: reading a text in pieces through the cache gives the logits of reading it whole, and
generation with the cache gives exactly the tokens of generation without it (greedy and seeded sampling, learned
and rotary positions, fused and explicit attention, past the context window)."""

import pytest
import torch
from torch.testing import assert_close

from labkit.models.gpt import GPT, GPTConfig, KVCache

CONFIGS = {
    "learned": dict(),
    "rope-relu2": dict(pos_emb="rope", mlp="relu2", tie_weights=False, bias=False),
    "rope-attention-only": dict(pos_emb="rope", mlp="none"),
    "explicit-attention": dict(fused_attention=False),
}


def model_for(name: str) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(**CONFIGS[name]))
    for p in model.parameters():  # larger weights than the init: the logits vary, so a wrong cache shows
        p.data.mul_(3.0)
    return model.eval()


def ids(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(64, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CONFIGS)
def test_reading_in_pieces_through_the_cache_gives_the_whole_texts_logits(name):
    model = model_for(name)
    x = ids(2, 20)
    whole = model(x).logits
    cache = model.new_cache()
    pieces = [model(x[:, a:b], cache=cache).logits for a, b in ((0, 7), (7, 8), (8, 13), (13, 20))]
    assert cache.length == 20
    assert_close(torch.cat(pieces, 1), whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
def test_generation_with_the_cache_gives_the_same_tokens(name):
    model = model_for(name)
    x = ids(3, 5)
    # greedy (top_k=1), 40 new tokens: past context_length (32), where the window starts to slide
    assert torch.equal(model.generate(x, 40, top_k=1, use_cache=True), model.generate(x, 40, top_k=1, use_cache=False))
    for seed in (0, 1):  # seeded sampling: the same draws, so the same tokens
        cached = model.generate(x, 40, temperature=1.0, generator=torch.Generator().manual_seed(seed))
        plain = model.generate(x, 40, temperature=1.0, generator=torch.Generator().manual_seed(seed), use_cache=False)
        assert torch.equal(cached, plain)


def test_the_cache_is_what_makes_a_difference():
    # a cache holding another text's keys changes the logits: the new tokens really attend over the cache
    model = model_for("learned")
    x, other = ids(1, 10), ids(1, 10, seed=2)
    cache = model.new_cache()
    model(other[:, :9], cache=cache)
    assert not torch.allclose(model(x[:, 9:], cache=cache).logits, model(x).logits[:, 9:], atol=1e-3)


def test_the_cache_refuses_to_grow_past_the_context():
    model = model_for("learned")
    cache = model.new_cache()
    model(ids(1, 30), cache=cache)
    with pytest.raises(ValueError, match="context_length"):
        model(ids(1, 3), cache=cache)
    with pytest.raises(ValueError, match="holds 4 positions"):
        KVCache(1, 4).update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2), 0)
