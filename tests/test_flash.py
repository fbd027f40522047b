"""labkit.flash: FlashAttention's blockwise algorithm equals PyTorch's scaled_dot_product_attention, forward
and backward, and keeps no (T, T) matrix for the backward pass."""

import math

import pytest
import torch
import torch.nn.functional as F

from labkit.flash import blockwise_attention, online_softmax_update


def qkv(B=2, H=3, T=37, d=16, dtype=torch.float64, seed=0, T_k=None):
    g = torch.Generator().manual_seed(seed)
    T_k = T if T_k is None else T_k
    shapes = [(B, H, T, d), (B, H, T_k, d), (B, H, T_k, d)]
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("blocks", [(8, 16), (64, 64), (5, 3), (37, 1)])
def test_forward_and_backward_equal_sdpa(causal, blocks):
    q, k, v = qkv()
    out = blockwise_attention(q, k, v, causal=causal, block_q=blocks[0], block_k=blocks[1])
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-11, rtol=0)


def test_cross_attention_lengths_and_scale():
    q, k, v = qkv(T=11, T_k=29)
    out = blockwise_attention(q, k, v, scale=0.3, block_q=4, block_k=7)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), atol=1e-12, rtol=0)


def test_gradcheck():
    q, k, v = qkv(B=1, H=1, T=9, d=4)
    assert torch.autograd.gradcheck(lambda a, b, c: blockwise_attention(a, b, c, causal=True, block_q=4, block_k=2),
                                    (q, k, v))


def test_float32_close_to_sdpa():
    q, k, v = qkv(T=130, d=32, dtype=torch.float32)
    out = blockwise_attention(q, k, v, causal=True, block_q=32, block_k=32)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)


def test_online_softmax_over_chunks_equals_softmax():
    g = torch.Generator().manual_seed(1)
    scores, v = torch.randn(4, 50, generator=g, dtype=torch.float64) * 5, torch.randn(50, 3, generator=g, dtype=torch.float64)
    m, l, acc = torch.full((4,), -math.inf, dtype=torch.float64), torch.zeros(4, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64)
    for c in range(0, 50, 7):
        m, l, acc = online_softmax_update(m, l, acc, scores[:, c:c + 7], v[c:c + 7])
    assert torch.allclose(acc / l[:, None], scores.softmax(-1) @ v, atol=1e-12)
    assert torch.allclose(m + l.log(), scores.logsumexp(-1), atol=1e-12)


def test_a_row_with_only_masked_keys_so_far_stays_empty():
    m, l, acc = torch.full((2,), -math.inf), torch.zeros(2), torch.zeros(2, 3)
    s = torch.tensor([[-math.inf, -math.inf], [0.0, 1.0]])
    m, l, acc = online_softmax_update(m, l, acc, s, torch.ones(2, 3))
    assert m[0] == -math.inf and l[0] == 0 and torch.all(acc[0] == 0) and not torch.isnan(acc).any()


def test_saves_no_T_by_T_matrix():
    # bytes autograd keeps for the backward pass: O(T d) here, O(T^2) for explicit attention
    def saved_bytes(fn, T):
        q, k, v = qkv(B=1, H=1, T=T, d=16, dtype=torch.float32)
        total = {}

        def pack(t):
            total[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(q, k, v)
        return sum(total.values())

    def explicit(q, k, v):
        return (q @ k.transpose(-2, -1) / 4).softmax(-1) @ v

    T = 512
    flash = saved_bytes(lambda q, k, v: blockwise_attention(q, k, v, block_q=64, block_k=64), T)
    assert flash <= 5 * T * 16 * 4 + 64  # q, k, v, out (T x d each) and the log-sum-exp (T)
    assert saved_bytes(explicit, T) > T * T * 4  # the probabilities alone


def test_bad_input_is_a_clear_error():
    q, k, v = qkv(T=8, T_k=6)
    with pytest.raises(ValueError, match="causal attention needs as many queries as keys"):
        blockwise_attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="shapes do not fit"):
        blockwise_attention(q, k[..., :-1], v)
    with pytest.raises(ValueError, match="block sizes"):
        blockwise_attention(q, k, v, block_q=0)
