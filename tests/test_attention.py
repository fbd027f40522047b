"""labkit.attention against PyTorch (F.scaled_dot_product_attention, nn.MultiheadAttention), capture_attention, and
the induction-head tools: the prefix-matching score and head ablation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch_compare import assert_grads_equal

from labkit.attention import (
    MultiHeadAttention,
    ablate_heads,
    capture_attention,
    causal_mask,
    prefix_matching_score,
    scaled_dot_product_attention,
)
from labkit.models.gpt import GPT, GPTConfig

B, H, T_Q, T_K, D_K, D_V = 2, 3, 5, 7, 8, 6


def _qkv(T_q=T_Q, T_k=T_K, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T_q, D_K, generator=g, requires_grad=True)
    k = torch.randn(B, H, T_k, D_K, generator=g, requires_grad=True)
    v = torch.randn(B, H, T_k, D_V, generator=g, requires_grad=True)
    return q, k, v


def _masks(T_q, T_k):
    g = torch.Generator().manual_seed(1)
    bool_bcast = torch.rand(T_q, T_k, generator=g) > 0.4  # (T_q, T_k), broadcast over B and H
    bool_bcast[:, 0] = True  # every query may attend to something
    bool_full = torch.rand(B, H, T_q, T_k, generator=g) > 0.4
    bool_full[..., 0] = True
    bool_per_batch = torch.rand(B, 1, 1, T_k, generator=g) > 0.3  # like key padding
    bool_per_batch[..., 0] = True
    return {
        "none": None,
        "bool_bcast": bool_bcast,
        "bool_full": bool_full,
        "bool_per_batch": bool_per_batch,
        "float": torch.randn(B, H, T_q, T_k, generator=g),
        "float_neginf": torch.zeros(T_q, T_k).masked_fill(~bool_bcast, float("-inf")),
    }


def _grads(*tensors):
    return [t.grad.clone() for t in tensors]


# ---------------------------------------------------------------- scaled_dot_product_attention


@pytest.mark.parametrize("T_q,T_k", [(T_Q, T_K), (6, 6), (7, 4)])
@pytest.mark.parametrize("mask_name", ["none", "bool_bcast", "bool_full", "bool_per_batch", "float", "float_neginf"])
def test_sdpa_matches_pytorch_with_masks(T_q, T_k, mask_name):
    mask = _masks(T_q, T_k)[mask_name]
    q, k, v = _qkv(T_q, T_k)
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert out.shape == (B, H, T_q, D_V) and weights.shape == (B, H, T_q, T_k)
    assert_close(out, expected)


@pytest.mark.parametrize("T_q,T_k", [(T_Q, T_K), (6, 6), (7, 4)])
@pytest.mark.parametrize("mask_name", ["none", "bool_full", "float", "float_neginf"])
def test_sdpa_gradients_match_pytorch(T_q, T_k, mask_name):
    mask = _masks(T_q, T_k)[mask_name]
    q, k, v = _qkv(T_q, T_k)
    grad_out = torch.randn(B, H, T_q, D_V)
    out, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    out.backward(grad_out)
    ours = _grads(q, k, v)
    q.grad = k.grad = v.grad = None
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask).backward(grad_out)
    for got, want in zip(ours, _grads(q, k, v)):
        assert_close(got, want)


@pytest.mark.parametrize("T_q,T_k", [(T_Q, T_K), (6, 6), (7, 4)])
def test_sdpa_causal_matches_pytorch(T_q, T_k):
    q, k, v = _qkv(T_q, T_k)
    grad_out = torch.randn(B, H, T_q, D_V)
    out, weights = scaled_dot_product_attention(q, k, v, is_causal=True)
    out.backward(grad_out)
    ours = _grads(q, k, v)
    q.grad = k.grad = v.grad = None
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    expected.backward(grad_out)
    assert_close(out, expected)
    for got, want in zip(ours, _grads(q, k, v)):
        assert_close(got, want)
    # key j > query i gets no weight (top-left alignment, like PyTorch)
    above = ~torch.ones(T_q, T_k, dtype=torch.bool).tril()
    assert (weights[..., above] == 0).all()


def test_sdpa_weights_are_a_masked_softmax_of_the_scores():
    q, k, v = _qkv()
    mask = _masks(T_Q, T_K)["bool_full"]
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    assert_close(weights.sum(-1), torch.ones(B, H, T_Q))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    assert_close(out, weights @ v)
    # unmasked: weights are softmax(q k^T / sqrt(d_k)), written out once more by hand
    _, w = scaled_dot_product_attention(q, k, v)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / D_K**0.5
    assert_close(w, scores.exp() / scores.exp().sum(-1, keepdim=True))


def test_sdpa_without_batch_dims_and_with_scale():
    q, k, v = (t[0, 0].detach() for t in _qkv())  # (T, d)
    out, weights = scaled_dot_product_attention(q, k, v, scale=0.3)
    assert out.shape == (T_Q, D_V) and weights.shape == (T_Q, T_K)
    assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3))


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_rows_give_zeros_like_pytorch(kind):
    q, k, v = _qkv()
    allowed = torch.ones(T_Q, T_K, dtype=torch.bool)
    allowed[2] = False  # query 2 may attend to nothing
    mask = allowed if kind == "bool" else torch.zeros(T_Q, T_K).masked_fill(~allowed, float("-inf"))
    grad_out = torch.randn(B, H, T_Q, D_V)
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    out.backward(grad_out)
    ours = _grads(q, k, v)
    q.grad = k.grad = v.grad = None
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expected.backward(grad_out)
    assert (out[:, :, 2] == 0).all() and (weights[:, :, 2] == 0).all()
    assert (weights[:, :, [0, 1, 3, 4]].sum(-1) - 1).abs().max() < 1e-5
    assert_close(out, expected)
    for got, want in zip(ours, _grads(q, k, v)):
        assert not got.isnan().any()
        assert_close(got, want)


def test_sdpa_dropout_drops_weights_in_the_output_and_returns_them_before_dropout():
    q, k, v = (t.detach() for t in _qkv())
    _, clean = scaled_dot_product_attention(q, k, v)
    torch.manual_seed(0)
    out, weights = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert torch.equal(weights, clean)  # the probabilities, as capture_attention and every model hand them out
    torch.manual_seed(0)
    dropped = torch.nn.functional.dropout(clean, p=0.5)  # the same draw
    kept = dropped != 0
    assert 0 < kept.float().mean() < 1
    assert_close(dropped[kept], 2 * clean[kept])
    assert_close(out, dropped @ v)


def test_causal_mask():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert causal_mask(2, 3).tolist() == [[True, False, False], [True, True, False]]


def test_sdpa_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="either mask or is_causal"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(T_Q, T_K, dtype=torch.bool), is_causal=True)
    with pytest.raises(ValueError, match=r"k must have shape \(\.\.\., T_k, d_k\) with d_k=8.*got \(2, 3, 7, 4\)"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., T_k, d_v\) with T_k=7.*got \(2, 3, 6, 6\)"):
        scaled_dot_product_attention(q, k, v[..., :6, :])
    with pytest.raises(ValueError, match=r"q must have shape \(\.\.\., T, d\).*got \(8,\)"):
        scaled_dot_product_attention(torch.randn(8), k, v)


# ---------------------------------------------------------------- MultiHeadAttention

D_MODEL, N_HEADS = 16, 4


def _torch_mha(bias=True, seed=0):
    torch.manual_seed(seed)
    m = nn.MultiheadAttention(D_MODEL, N_HEADS, batch_first=True, bias=bias)
    with torch.no_grad():  # PyTorch initialises biases to zero; make them count
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def _mha_case(case, T_q, T_k):
    """(kwargs for ours, kwargs for nn.MultiheadAttention) for one mask case. labkit's boolean masks are True
    where attention is allowed, PyTorch's True where it is blocked: the same mask goes in inverted."""
    ours, theirs = _mha_case_torch(case, T_q, T_k)
    flip = {k: ~v if isinstance(v, torch.Tensor) and v.dtype == torch.bool else v for k, v in ours.items()}
    return {("key_mask" if k == "key_padding_mask" else k): v for k, v in flip.items()}, theirs


def _mha_case_torch(case, T_q, T_k):
    """Both kwargs in PyTorch's convention (True = blocked)."""
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([T_k, T_k - 2])
    padding = torch.arange(T_k)[None, :] >= lengths[:, None]  # (B, T_k) True = pad
    blocked = torch.rand(T_q, T_k, generator=g) > 0.6  # True = NOT allowed (nn.MultiheadAttention convention)
    blocked[:, 0] = False
    blocked3 = torch.rand(B * N_HEADS, T_q, T_k, generator=g) > 0.6
    blocked3[..., 0] = False
    causal_blocked = torch.ones(T_q, T_k, dtype=torch.bool).triu(1)  # by hand: key j > query i is blocked
    if case == "none":
        return {}, {}
    if case == "attn_mask_bool":
        return dict(attn_mask=blocked), dict(attn_mask=blocked)
    if case == "attn_mask_bool_per_head":
        return dict(attn_mask=blocked3), dict(attn_mask=blocked3)
    if case == "attn_mask_float":
        m = torch.randn(T_q, T_k, generator=g)
        return dict(attn_mask=m), dict(attn_mask=m)
    if case == "key_padding":
        return dict(key_padding_mask=padding), dict(key_padding_mask=padding)
    if case == "key_padding_and_attn_mask":
        return dict(attn_mask=blocked, key_padding_mask=padding), dict(attn_mask=blocked, key_padding_mask=padding)
    if case == "float_key_padding_and_float_mask":
        m = torch.randn(T_q, T_k, generator=g)
        pad = torch.zeros(B, T_k).masked_fill(padding, float("-inf"))
        return dict(attn_mask=m, key_padding_mask=pad), dict(attn_mask=m, key_padding_mask=pad)
    if case == "causal":  # PyTorch needs the mask itself; is_causal is only a hint there
        return dict(is_causal=True), dict(attn_mask=causal_blocked, is_causal=True)
    if case == "causal_and_key_padding":
        return (dict(is_causal=True, key_padding_mask=padding),
                dict(attn_mask=causal_blocked, is_causal=True, key_padding_mask=padding))
    raise AssertionError(case)


MHA_CASES = [
    "none", "attn_mask_bool", "attn_mask_bool_per_head", "attn_mask_float",
    "key_padding", "key_padding_and_attn_mask", "float_key_padding_and_float_mask", "causal", "causal_and_key_padding",
]


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
@pytest.mark.parametrize("case", MHA_CASES)
def test_mha_from_torch_matches_pytorch(case, cross, need_weights):
    T_q, T_k = (5, 7) if cross else (6, 6)
    ours_kw, torch_kw = _mha_case(case, T_q, T_k)
    ref = _torch_mha()
    mha = MultiHeadAttention.from_torch(ref)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, T_q, D_MODEL, generator=g)
    mem = torch.randn(B, T_k, D_MODEL, generator=g)
    grad_out = torch.randn(B, T_q, D_MODEL, generator=g)

    def run(module, **kw):
        xq = x.clone().requires_grad_()
        xk = mem.clone().requires_grad_() if cross else xq
        out, w = module(xq, xk, xk, need_weights=need_weights, **kw)
        out.backward(grad_out)
        return out, w, xq.grad, xk.grad

    out, w, gq, gk = run(mha, **ours_kw)
    ref_out, ref_w, ref_gq, ref_gk = run(ref, average_attn_weights=False, **torch_kw)
    assert_close(out, ref_out)
    assert_close(gq, ref_gq)
    assert_close(gk, ref_gk)
    assert_grads_equal(mha, ref)
    if need_weights:
        assert w.shape == (B, N_HEADS, T_q, T_k)
        assert_close(w, ref_w)
    else:
        assert w is None


@pytest.mark.parametrize("case", MHA_CASES)
def test_mha_fast_and_explicit_paths_agree(case):
    ours_kw, _ = _mha_case(case, 6, 6)
    mha = MultiHeadAttention(D_MODEL, N_HEADS).eval()
    x = torch.randn(B, 6, D_MODEL)
    fast, none = mha(x, x, x, need_weights=False, **ours_kw)
    slow, w = mha(x, x, x, need_weights=True, **ours_kw)
    assert none is None
    assert_close(fast, slow)
    assert_close(w.sum(-1), torch.ones(B, N_HEADS, 6))


def test_mha_heads_are_independent_slices():
    """Head h only sees columns h*hs:(h+1)*hs of the projected q, k, v."""
    mha = MultiHeadAttention(D_MODEL, N_HEADS).eval()
    x = torch.randn(B, 5, D_MODEL)
    _, w = mha(x, x, x, need_weights=True)
    hs = D_MODEL // N_HEADS
    q, k = mha.q_proj(x)[..., hs : 2 * hs], mha.k_proj(x)[..., hs : 2 * hs]  # head 1
    assert_close(w[:, 1], (q @ k.transpose(1, 2) / hs**0.5).softmax(-1))


def test_mha_fully_padded_sequence_gives_bias_not_nan():
    ref = _torch_mha()
    mha = MultiHeadAttention.from_torch(ref)
    x, mem = torch.randn(B, 4, D_MODEL), torch.randn(B, 6, D_MODEL)
    padding = torch.zeros(B, 6, dtype=torch.bool)
    padding[1] = True  # second sequence is all padding
    fast, _ = mha(x, mem, mem, key_mask=~padding)
    slow, w = mha(x, mem, mem, key_mask=~padding, need_weights=True)
    assert (w[1] == 0).all()
    assert_close(fast[1], mha.out_proj.bias.expand(4, D_MODEL))  # attention output 0, then out_proj
    assert_close(fast, slow)
    assert_close(fast, ref(x, mem, mem, key_padding_mask=padding, need_weights=False)[0])


def test_mha_without_bias_and_dropout_is_copied():
    ref = nn.MultiheadAttention(D_MODEL, N_HEADS, dropout=0.25, bias=False, batch_first=True)
    mha = MultiHeadAttention.from_torch(ref)
    assert mha.q_proj.bias is None and mha.out_proj.bias is None and mha.dropout == 0.25
    assert mha.training
    x = torch.randn(B, 5, D_MODEL)
    mha.eval(), ref.eval()
    assert_close(mha(x, x, x)[0], ref(x, x, x)[0])


def test_mha_dropout_only_in_training():
    mha = MultiHeadAttention(D_MODEL, N_HEADS, dropout=0.5)
    x = torch.randn(B, 5, D_MODEL)
    torch.manual_seed(0)
    train_out, w = mha(x, x, x, need_weights=True)
    assert (w == 0).any()
    mha.eval()
    assert_close(mha(x, x, x)[0], mha(x, x, x, need_weights=True)[0])
    assert not torch.allclose(train_out, mha(x, x, x)[0])


def test_mha_errors():
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by n_heads \(4\)"):
        MultiHeadAttention(10, 4)
    mha = MultiHeadAttention(D_MODEL, N_HEADS)
    x = torch.randn(B, 5, D_MODEL)
    with pytest.raises(ValueError, match=r"query must have shape \(B, T, d_model=16\).*got \(5, 16\)"):
        mha(x[0], x, x)
    with pytest.raises(ValueError, match=r"key must have shape \(B, T, d_model=16\).*got \(2, 5, 8\)"):
        mha(x, x[..., :8], x)
    with pytest.raises(ValueError, match="key and value must have shape"):
        mha(x, x, x[:, :3])
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(T_q, T_k\)=\(5, 5\)"):
        mha(x, x, x, attn_mask=torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, T_k\)=\(2, 5\), got \(5, 2\)"):
        mha(x, x, x, key_mask=torch.ones(5, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch_first=True"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(D_MODEL, N_HEADS))
    with pytest.raises(ValueError, match="kdim == vdim == embed_dim=16, got kdim=8, vdim=16"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(D_MODEL, N_HEADS, kdim=8, batch_first=True))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(D_MODEL, N_HEADS, add_bias_kv=True, batch_first=True))


# ---------------------------------------------------------------- capture_attention


def test_capture_gives_the_explicit_weights_of_the_fused_path():
    torch.manual_seed(0)
    mha = _perturb_mha(MultiHeadAttention(D_MODEL, N_HEADS)).eval()
    x, mem = torch.randn(B, 6, D_MODEL), torch.randn(B, 7, D_MODEL)
    real = torch.arange(7)[None, :] < torch.tensor([7, 4])[:, None]  # (B, 7) True = real token
    fused, none = mha(x, mem, mem, key_mask=real)
    with capture_attention(mha) as attn:
        out, still_none = mha(x, mem, mem, key_mask=real)  # need_weights=False: no weights returned
    assert none is None and still_none is None
    assert list(attn) == [""] and len(attn.calls) == 1
    _, explicit = mha(x, mem, mem, key_mask=real, need_weights=True)
    assert_close(out, fused)
    assert torch.equal(attn[""], explicit)
    assert_close(attn[""].sum(-1), torch.ones(B, N_HEADS, 6))
    assert (attn[""][1, :, :, 4:] == 0).all()  # padded keys
    assert not mha.__dict__.get("_attention_sinks")  # nothing left behind


def test_capture_weights_are_taken_before_dropout():
    mha = MultiHeadAttention(D_MODEL, N_HEADS, dropout=0.5).train()
    x = torch.randn(B, 6, D_MODEL)
    torch.manual_seed(0)
    with capture_attention(mha, detach=True) as attn:
        _, dropped = mha(x, x, x, need_weights=True)  # need_weights returns the weights after dropout
    assert not attn[""].requires_grad
    assert_close(attn[""].sum(-1), torch.ones(B, N_HEADS, 6))
    kept = dropped != 0
    assert 0 < kept.float().mean() < 1
    assert_close(dropped[kept], 2 * attn[""][kept])


def _perturb_mha(m):
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


# ---------------------------------------------------------------- induction heads: prefix matching and ablation


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
