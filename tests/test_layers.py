"""labkit.layers against PyTorch's transformer layers and Hugging Face's Llama RoPE."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch_compare import assert_grads_equal

from labkit.attention import MultiHeadAttention, capture_attention
from labkit.layers import (
    Decoder,
    DecoderBlock,
    Encoder,
    EncoderBlock,
    FeedForward,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    rotate_half,
)

B, T, S, D_MODEL, N_HEADS, D_FF = 2, 6, 7, 16, 4, 32


@pytest.fixture(autouse=True)
def no_fastpath():
    """PyTorch's eval-mode fast path may return zeros at padded positions; compare the plain math."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(before)


def _perturb(module: nn.Module) -> nn.Module:
    """PyTorch starts biases at 0 and LayerNorm at (1, 0); move every parameter so a mixed-up copy would show."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module.eval()


def _padding(T_k):
    lengths = torch.tensor([T_k, T_k - 2])
    return torch.arange(T_k)[None, :] >= lengths[:, None]  # (B, T_k) True = pad


# ---------------------------------------------------------------- positional encodings


def test_sinusoidal_table_follows_the_paper():
    d, context_length = 6, 20
    pe = SinusoidalPositionalEncoding(d, context_length=context_length).pe
    assert pe.shape == (context_length, d)
    for pos in (0, 1, 7, 19):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-5)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-5)
    assert pe[0].tolist() == [0.0, 1.0] * 3


def test_sinusoidal_forward_adds_the_table_and_odd_d_model_works():
    enc = SinusoidalPositionalEncoding(7, context_length=10)
    x = torch.randn(B, 4, 7)
    assert_close(enc(x), x + enc.pe[:4])
    assert_close(enc.pe[3, 6], torch.tensor(math.sin(3 / 10000 ** (6 / 7))))
    assert enc.pe[:, 1::2].shape == (10, 3)
    assert "pe" not in enc.state_dict()  # recomputed, not saved in checkpoints


def test_learned_positional_embedding():
    emb = LearnedPositionalEmbedding(context_length=10, d_model=8)
    x = torch.randn(B, 4, 8)
    out = emb(x)
    assert_close(out, x + emb.embedding.weight[:4])
    out.sum().backward()
    assert (emb.embedding.weight.grad[:4] == B).all() and (emb.embedding.weight.grad[4:] == 0).all()


@pytest.mark.parametrize(
    "make", [lambda: SinusoidalPositionalEncoding(8, context_length=5), lambda: LearnedPositionalEmbedding(5, 8)]
)
def test_positional_errors(make):
    with pytest.raises(ValueError, match=r"positions 0\.\.5 but context_length=5"):
        make()(torch.randn(B, 6, 8))
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., T, 8\), got \(2, 3, 4\)"):
        make()(torch.randn(B, 3, 4))


def _hf_rope(head_dim, base, position_ids, x):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(
        hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim, max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": base},
    )
    return LlamaRotaryEmbedding(config)(x, position_ids)  # cos, sin: (B, T, head_dim)


@pytest.mark.parametrize("base,offset", [(10000.0, 0), (500.0, 0), (10000.0, 9)])
def test_rope_matches_hugging_face_llama(base, offset):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    head_dim = 8
    q, k = torch.randn(B, N_HEADS, T, head_dim), torch.randn(B, N_HEADS, T, head_dim)
    position_ids = torch.arange(offset, offset + T).expand(B, T)
    cos, sin = _hf_rope(head_dim, base, position_ids, q)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    rope = RotaryEmbedding(head_dim, context_length=64, base=base)
    assert_close(rope(q, offset=offset), q_hf)
    assert_close(rope(k, offset=offset), k_hf)
    assert_close(rope.cos[offset : offset + T], cos[0])
    assert_close(rope.sin[offset : offset + T], sin[0])


def test_rope_dot_product_depends_only_on_relative_position():
    rope = RotaryEmbedding(16, context_length=64)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):  # rotated q at position m . rotated k at position n
        return rope(q.expand(1, 16), offset=m)[0] @ rope(k.expand(1, 16), offset=n)[0]

    for m, n in [(5, 2), (30, 27), (3, 0)]:  # all m - n = 3
        assert_close(score(m, n), score(3, 0), atol=1e-4, rtol=1e-4)
    assert not torch.isclose(score(5, 2), score(5, 3), atol=1e-3)  # a different offset: a different score
    assert_close(score(4, 4), q @ k, atol=1e-4, rtol=1e-4)  # same position: no change at all


def test_rope_preserves_norms_and_rotates_pairs():
    rope = RotaryEmbedding(8, context_length=32)
    x = torch.randn(B, N_HEADS, 20, 8)
    y = rope(x)
    assert_close(y.norm(dim=-1), x.norm(dim=-1))
    assert_close(y[..., 0, :], x[..., 0, :])  # position 0: angle 0
    assert not torch.allclose(y[..., 1:, :], x[..., 1:, :])
    assert_close(rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0]))


def test_rope_errors():
    with pytest.raises(ValueError, match="even dim.*got dim=7"):
        RotaryEmbedding(7)
    rope = RotaryEmbedding(8, context_length=10)
    with pytest.raises(ValueError, match=r"positions 5\.\.10 but context_length=10"):
        rope(torch.randn(6, 8), offset=5)
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., T, 8\)"):
        rope(torch.randn(6, 4))


# ---------------------------------------------------------------- feed-forward


@pytest.mark.parametrize("activation,fn", [("relu", F.relu), ("gelu", F.gelu)])
def test_feed_forward(activation, fn):
    ff = FeedForward(D_MODEL, D_FF, activation=activation)
    x = torch.randn(B, T, D_MODEL)
    expected = fn(x @ ff.linear1.weight.T + ff.linear1.bias) @ ff.linear2.weight.T + ff.linear2.bias
    assert_close(ff(x), expected)


def test_feed_forward_bad_activation():
    with pytest.raises(ValueError, match=r"activation must be one of \['gelu', 'relu'\], got 'tanh'"):
        FeedForward(D_MODEL, D_FF, activation="tanh")


# ---------------------------------------------------------------- encoder block


def _torch_encoder_layer(activation="relu", norm_first=False, **kw):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        D_MODEL, N_HEADS, D_FF, dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True,
        layer_norm_eps=1e-6, **kw,
    )
    return _perturb(layer)


def _compare_forward_backward(ours, theirs, ours_kw, theirs_kw, inputs):
    """Run both on copies of `inputs` with the same upstream gradient; compare outputs and all gradients."""
    grad_out = torch.randn(B, inputs[0].size(1), D_MODEL)
    results = []
    for module, kw in ((ours, ours_kw), (theirs, theirs_kw)):
        xs = [t.clone().requires_grad_() for t in inputs]
        out = module(*xs, **kw)
        out.backward(grad_out)
        results.append((out, [t.grad for t in xs]))
    (out, grads), (ref_out, ref_grads) = results
    assert_close(out, ref_out)
    for g, ref_g in zip(grads, ref_grads):
        assert_close(g, ref_g)
    assert_grads_equal(ours, theirs)
    return out


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_encoder_block_from_torch(activation, norm_first, padded):
    ref = _torch_encoder_layer(activation, norm_first)
    block = EncoderBlock.from_torch(ref)
    assert block.norm1.eps == 1e-6 and block.norm_first == norm_first and not block.training
    pad = _padding(T) if padded else None
    x = torch.randn(B, T, D_MODEL)
    ours = dict(key_mask=None if pad is None else ~pad)  # labkit: True = real token; PyTorch: True = padding
    out = _compare_forward_backward(block, ref, ours, dict(src_key_padding_mask=pad), [x])
    assert out.shape == (B, T, D_MODEL)


def test_encoder_block_causal_and_attn_mask():
    ref = _torch_encoder_layer()
    block = EncoderBlock.from_torch(ref)
    x, pad = torch.randn(B, T, D_MODEL), _padding(T)
    blocked = torch.ones(T, T, dtype=torch.bool).triu(1)  # by hand; nn.MultiheadAttention's True = NOT allowed
    theirs = dict(src_mask=blocked, is_causal=True, src_key_padding_mask=pad)
    _compare_forward_backward(block, ref, dict(is_causal=True, key_mask=~pad), theirs, [x])
    _compare_forward_backward(block, ref, dict(attn_mask=~blocked), dict(src_mask=blocked), [x])


def test_encoder_block_matches_torch_fast_path_on_real_tokens():
    """With PyTorch's eval fast path on (nested tensors), padded positions may differ; real tokens must not."""
    torch.backends.mha.set_fastpath_enabled(True)
    ref = _torch_encoder_layer()
    block = EncoderBlock.from_torch(ref)
    x, pad = torch.randn(B, T, D_MODEL), _padding(T)
    with torch.inference_mode():
        out, ref_out = block(x, key_mask=~pad), ref(x, src_key_padding_mask=pad)
    assert_close(out[~pad], ref_out[~pad])


def test_from_torch_copies_dropout_and_train_mode():
    ref = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, dropout=0.2, batch_first=True, bias=False)
    block = EncoderBlock.from_torch(ref)
    assert block.training and block.self_attn.dropout == 0.2
    assert block.dropout1.p == block.dropout2.p == block.ff.dropout.p == 0.2
    assert block.norm1.bias is None and block.ff.linear1.bias is None
    x = torch.randn(B, T, D_MODEL)
    assert not torch.allclose(block(x), block(x))  # dropout active in training mode
    assert_close(block.eval()(x), ref.eval()(x))


def test_encoder_block_from_torch_errors():
    with pytest.raises(ValueError, match="batch_first=True"):
        EncoderBlock.from_torch(nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF))
    with pytest.raises(ValueError, match="activation 'relu' or 'gelu'"):
        layer = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, activation=torch.tanh, batch_first=True)
        EncoderBlock.from_torch(layer)
    with pytest.raises(TypeError, match="expected an nn.TransformerEncoderLayer, got TransformerDecoderLayer"):
        EncoderBlock.from_torch(nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF, batch_first=True))


# ---------------------------------------------------------------- decoder block


def _torch_decoder_layer(activation="relu", norm_first=False):
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(
        D_MODEL, N_HEADS, D_FF, dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True
    )
    return _perturb(layer)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_block_from_torch(activation, norm_first):
    ref = _torch_decoder_layer(activation, norm_first)
    block = DecoderBlock.from_torch(ref)
    x, memory = torch.randn(B, T, D_MODEL), torch.randn(B, S, D_MODEL)
    mem_pad, tgt_pad = _padding(S), _padding(T)
    ours = dict(memory_mask=~mem_pad, key_mask=~tgt_pad)  # is_causal=True by default
    theirs = dict(
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(T), tgt_is_causal=True, memory_key_padding_mask=mem_pad, tgt_key_padding_mask=tgt_pad
    )
    _compare_forward_backward(block, ref, ours, theirs, [x, memory])


def test_decoder_block_not_causal():
    ref = _torch_decoder_layer()
    block = DecoderBlock.from_torch(ref)
    x, memory = torch.randn(B, T, D_MODEL), torch.randn(B, S, D_MODEL)
    out = _compare_forward_backward(block, ref, dict(is_causal=False), {}, [x, memory])
    assert not torch.allclose(out, block(x, memory))  # is_causal=True (the default) changes the result


def test_decoder_block_is_causal():
    """Changing a later target token leaves earlier outputs unchanged."""
    block = DecoderBlock(D_MODEL, N_HEADS, D_FF).eval()
    x, memory = torch.randn(B, T, D_MODEL), torch.randn(B, S, D_MODEL)
    x2 = x.clone()
    x2[:, 4] += 1.0
    out, out2 = block(x, memory), block(x2, memory)
    assert_close(out[:, :4], out2[:, :4])
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


def test_decoder_block_from_torch_errors():
    with pytest.raises(ValueError, match="nn.TransformerDecoderLayer\\(..., batch_first=True\\)"):
        DecoderBlock.from_torch(nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF))
    with pytest.raises(ValueError, match="activation 'relu' or 'gelu'"):
        DecoderBlock.from_torch(nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF, activation=F.silu, batch_first=True))


# ---------------------------------------------------------------- stacks


def test_encoder_stack_matches_torch_transformer_encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, dropout=0.0, batch_first=True, norm_first=True)
    ref = _perturb(nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(D_MODEL), enable_nested_tensor=False))
    enc = Encoder(2, D_MODEL, N_HEADS, D_FF, norm_first=True).eval()
    assert enc.norm is not None  # pre-norm: a final norm by default
    enc.layers = nn.ModuleList(EncoderBlock.from_torch(l) for l in ref.layers)
    enc.norm.load_state_dict(ref.norm.state_dict())
    x, pad = torch.randn(B, T, D_MODEL), _padding(T)
    assert_close(enc(x, key_mask=~pad), ref(x, src_key_padding_mask=pad))


def test_decoder_stack_matches_torch_transformer_decoder():
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF, dropout=0.0, batch_first=True)
    ref = _perturb(nn.TransformerDecoder(layer, 2))
    dec = Decoder(2, D_MODEL, N_HEADS, D_FF).eval()
    assert dec.norm is None  # post-norm: no final norm by default
    dec.layers = nn.ModuleList(DecoderBlock.from_torch(l) for l in ref.layers)
    x, memory, mem_pad = torch.randn(B, T, D_MODEL), torch.randn(B, S, D_MODEL), _padding(S)
    expected = ref(x, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T), tgt_is_causal=True,
                   memory_key_padding_mask=mem_pad)
    assert_close(dec(x, memory, memory_mask=~mem_pad), expected)


def test_decoder_stack_with_target_padding_matches_torch():
    """Causal self-attention combined with target padding: the mask labkit builds itself (not is_causal's
    fused kernel) against PyTorch's square subsequent mask."""
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF, dropout=0.0, batch_first=True)
    ref = _perturb(nn.TransformerDecoder(layer, 2))
    dec = Decoder(2, D_MODEL, N_HEADS, D_FF).eval()
    dec.layers = nn.ModuleList(DecoderBlock.from_torch(l) for l in ref.layers)
    x, memory, tgt_pad = torch.randn(B, T, D_MODEL), torch.randn(B, S, D_MODEL), _padding(T)
    expected = ref(x, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T), tgt_is_causal=True,
                   tgt_key_padding_mask=tgt_pad)
    got = dec(x, memory, key_mask=~tgt_pad)
    assert_close(got[~tgt_pad], expected[~tgt_pad])


def _weights_by_hooks(module):
    """The notebook-06 way, kept as an independent reference: ask every MultiHeadAttention for its weights
    with a forward pre-hook and keep them with a forward hook."""
    kept, hooks = {}, []
    for name, m in module.named_modules():
        if isinstance(m, MultiHeadAttention):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, kwargs: (args, {**kwargs, "need_weights": True}), with_kwargs=True))
            hooks.append(m.register_forward_hook(lambda mod, args, out, name=name: kept.__setitem__(name, out[1])))
    return kept, hooks


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_capture_attention_in_encoder_and_decoder_stacks(norm_first):
    torch.manual_seed(0)
    enc = Encoder(2, D_MODEL, N_HEADS, D_FF, norm_first=norm_first).eval()
    dec = Decoder(2, D_MODEL, N_HEADS, D_FF, norm_first=norm_first).eval()
    src, tgt = torch.randn(B, S, D_MODEL), torch.randn(B, T, D_MODEL)
    src_pad, tgt_pad = _padding(S), _padding(T)
    with torch.no_grad():
        plain = dec(tgt, enc(src, key_mask=~src_pad), memory_mask=~src_pad, key_mask=~tgt_pad)
        with capture_attention(enc) as enc_attn, capture_attention(dec) as dec_attn:
            memory = enc(src, key_mask=~src_pad)
            out = dec(tgt, memory, memory_mask=~src_pad, key_mask=~tgt_pad)
        kept, hooks = _weights_by_hooks(nn.ModuleDict({"enc": enc, "dec": dec}))
        dec(tgt, enc(src, key_mask=~src_pad), memory_mask=~src_pad, key_mask=~tgt_pad)
        for h in hooks:
            h.remove()
    assert_close(out, plain)  # capturing changes the path, not the result
    assert list(enc_attn) == ["layers.0.self_attn", "layers.1.self_attn"]
    assert list(dec_attn) == ["layers.0.self_attn", "layers.0.cross_attn", "layers.1.self_attn", "layers.1.cross_attn"]
    for name, w in enc_attn.items():
        assert w.shape == (B, N_HEADS, S, S)
        assert_close(w, kept["enc." + name])
        assert (w[1, :, :, S - 2:] == 0).all()  # padded source keys
    for name, w in dec_attn.items():
        assert w.shape == (B, N_HEADS, T, S if "cross" in name else T)
        assert_close(w, kept["dec." + name])
        assert_close(w.sum(-1), torch.ones(B, N_HEADS, T))  # every query's row sums to 1
    self_attn = dec_attn.layers("*self_attn")
    assert len(self_attn) == 2 and (self_attn[0].triu(1) == 0).all()  # causal: nothing from the future
    assert [w.shape[-1] for w in dec_attn.layers("*cross_attn")] == [S, S]
    assert len(dec_attn.layers()) == 4


def test_capture_attention_in_single_blocks_and_every_call():
    block = DecoderBlock(D_MODEL, N_HEADS, D_FF).eval()
    x, memory = torch.randn(B, T, D_MODEL), torch.randn(B, S, D_MODEL)
    with torch.no_grad(), capture_attention(block) as attn:
        block(x[:, :3], memory)  # decoding step by step: one call per prefix
        block(x, memory)
    assert list(attn) == ["self_attn", "cross_attn"]
    assert [name for name, _ in attn.calls] == ["self_attn", "cross_attn"] * 2
    assert attn["self_attn"].shape == (B, N_HEADS, T, T)  # the latest call
    assert attn.calls[0][1].shape == (B, N_HEADS, 3, 3)
    eblock = EncoderBlock(D_MODEL, N_HEADS, D_FF).eval()
    with torch.no_grad(), capture_attention(eblock) as attn:
        eblock(x, is_causal=True)
    assert list(attn) == ["self_attn"] and (attn["self_attn"].triu(1) == 0).all()


def test_blocks_use_labkit_attention():
    block = DecoderBlock(D_MODEL, N_HEADS, D_FF)
    assert isinstance(block.self_attn, MultiHeadAttention) and isinstance(block.cross_attn, MultiHeadAttention)
    assert isinstance(EncoderBlock(D_MODEL, N_HEADS, D_FF).ff, FeedForward)
