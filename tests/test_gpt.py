"""labkit.models.gpt against Hugging Face GPT-2 (copied weights) and PyTorch's fused attention; its weights in int8
(torchao)."""

import copy
import io
import logging

import pytest
import torch
from torch.testing import assert_close

from labkit.generate import greedy
from labkit.models.gpt import GPT, GPTConfig, Rotary

transformers = pytest.importorskip("transformers")

VOCAB = 97


def random_hf_gpt2(seed: int = 0):
    """A randomly initialised HF GPT-2 with every parameter perturbed (so LayerNorm gains,
    biases and embeddings all matter and a wrong copy cannot pass)."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=64,
        bos_token_id=0, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return hf.eval()


def ids(B=3, T=20, seed=1, vocab=VOCAB):
    return torch.randint(vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
def test_from_hf_logits_match(fused):
    hf = random_hf_gpt2()
    model = GPT.from_hf(hf, fused_attention=fused).eval()
    x = ids()
    with torch.no_grad():
        ref = hf(x).logits
        logits, loss = model(x)
    assert loss is None
    assert logits.shape == (3, 20, VOCAB)
    assert_close(logits, ref)


def test_from_hf_loss_matches_with_ignore_index():
    hf = random_hf_gpt2()
    model = GPT.from_hf(hf).eval()
    x = ids()
    # HF shifts labels inside; ours takes aligned targets, -100 = no loss at that position
    targets = torch.cat([x[:, 1:], torch.full((3, 1), -100)], dim=1)
    with torch.no_grad():
        ref = hf(x, labels=x).loss
        _, loss = model(x, targets)
    assert_close(loss, ref)


def test_from_hf_copies_config_and_ties_weights():
    hf = random_hf_gpt2()
    model = GPT.from_hf(hf)
    c = model.config
    assert (c.vocab_size, c.context_length, c.n_layers, c.n_heads, c.d_model) == (VOCAB, 64, 2, 2, 32)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params() == sum(p.numel() for p in hf.parameters())


def test_greedy_matches_hf_generate():
    hf = random_hf_gpt2()
    model = GPT.from_hf(hf).eval()
    x = ids(B=2, T=6, seed=3)
    with torch.no_grad():
        ref = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=15)
    out = greedy(model, x, max_new_tokens=15)
    assert out.shape == (2, 21)
    assert torch.equal(out, ref)
    # sampling restricted to the single best token is greedy too
    assert torch.equal(model.generate(x, 15, top_k=1), ref)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"pos_emb": "rope", "mlp": "relu2", "tie_weights": False, "bias": False}],
    ids=["gpt2", "rope-relu2-untied-nobias"],
)
def test_fused_and_explicit_paths_agree(overrides):
    torch.manual_seed(0)
    fused = GPT(GPTConfig.tiny(fused_attention=True, **overrides))
    explicit = GPT(GPTConfig.tiny(fused_attention=False, **overrides))
    explicit.load_state_dict(fused.state_dict())
    x, y = ids(B=4, T=32, vocab=64), ids(B=4, T=32, seed=2, vocab=64)
    lf, loss_f = fused(x, y)
    le, loss_e = explicit(x, y)
    assert_close(lf, le)
    loss_f.backward()
    loss_e.backward()
    grads_e = dict(explicit.named_parameters())
    for name, p in fused.named_parameters():
        assert_close(p.grad, grads_e[name].grad, msg=lambda m: f"{name}: {m}")


def test_return_attention_gives_causal_weights_per_layer():
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny()).eval()  # fused by default; return_attention uses the explicit path
    x = ids(B=2, T=10, vocab=64)
    out = model(x, return_attention=True)
    logits, attn = out.logits, out.attentions
    assert_close(logits, model(x)[0])
    assert model(x).attentions is None and len(tuple(out)) == 2  # unpacks as (logits, loss), like nanoGPT's
    assert len(attn) == 2
    for a in attn:
        assert a.shape == (2, 2, 10, 10)
        assert_close(a.sum(-1), torch.ones(2, 2, 10))
        assert torch.all(a.triu(diagonal=1) == 0)  # no weight on future tokens


def test_rotary_matches_hf_llama_rope():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = transformers.LlamaConfig(hidden_size=32, num_attention_heads=2, max_position_embeddings=64)
    hs, T = 16, 12
    q, k = torch.randn(2, 2, T, hs), torch.randn(2, 2, T, hs)
    cos, sin = LlamaRotaryEmbedding(cfg)(q, torch.arange(T).unsqueeze(0))
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    rot = Rotary(hs, context_length=64)
    assert_close(rot(q), q_ref)
    assert_close(rot(k), k_ref)


def test_rotary_scores_depend_only_on_relative_position():
    rot = Rotary(16, context_length=64)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):  # q at position m, k at position n
        qs = rot(q.expand(1, 1, 64, 16))[0, 0, m]
        ks = rot(k.expand(1, 1, 64, 16))[0, 0, n]
        return qs @ ks

    assert_close(score(5, 2), score(40, 37))
    assert_close(score(3, 9), score(50, 56))


def test_generate_crops_context_to_block_size():
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(context_length=8)).eval()
    x = ids(B=2, T=5, vocab=64)
    g = torch.Generator().manual_seed(0)
    out = model.generate(x, max_new_tokens=20, temperature=0.8, top_k=10, top_p=0.9, generator=g)
    assert out.shape == (2, 25)
    assert torch.equal(out[:, :5], x)
    g = torch.Generator().manual_seed(0)
    again = model.generate(x, max_new_tokens=20, temperature=0.8, top_k=10, top_p=0.9, generator=g)
    assert torch.equal(out, again)  # seeded sampling is reproducible
    with pytest.raises(ValueError, match="context_length"):
        model(ids(B=1, T=9, vocab=64))


@pytest.mark.parametrize("overrides", [{}, {"pos_emb": "rope", "mlp": "relu2"}], ids=["gpt2", "rope-relu2"])
def test_adamw_steps_lower_the_loss(overrides):
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(**overrides))
    x, y = ids(B=4, T=32, vocab=64), ids(B=4, T=32, seed=2, vocab=64)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-3)
    losses = []
    for _ in range(15):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(64.0)).item(), abs=0.1)  # ~uniform at init
    assert losses[-1] < 0.8 * losses[0]


def test_attention_only_blocks_have_no_mlp():
    # mlp="none": every block is x + attn(ln_1(x)) and nothing else (notebook 11's gpt-icl)
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(mlp="none", pos_emb="rope"))
    assert not any(".mlp." in k or ".ln_2." in k for k in model.state_dict())
    x = ids(B=2, T=16, vocab=64)
    logits, _ = model(x)
    h = model.transformer.wte(x)
    for block in model.transformer.h:
        h = h + block.attn(block.ln_1(h))[0]
    assert_close(logits, model.lm_head(model.transformer.ln_f(h)))
    with_mlp = GPT(GPTConfig.tiny(pos_emb="rope"))
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in with_mlp.parameters())


def test_config_rejects_bad_options():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig.tiny(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="pos_emb"):
        GPTConfig.tiny(pos_emb="sinusoidal")
    with pytest.raises(ValueError, match="mlp"):
        GPTConfig.tiny(mlp="swiglu")


def test_from_pretrained_offline_gives_clear_error(monkeypatch, tmp_path):
    # force offline mode with an empty cache: no network access is attempted
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError) as err:
        GPT.from_pretrained("gpt2")
    msg = str(err.value)
    assert "unreachable" in msg and "Colab" in msg and "cache" in msg


def test_from_pretrained_network_failure_gives_clear_error(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.GPT2LMHeadModel, "from_pretrained", no_network)
    with pytest.raises(RuntimeError, match="hub is offline or unreachable"):
        GPT.from_pretrained("gpt2")


def test_relu_squared_function_matches_autograd():
    from labkit.models.gpt import ReLUSquared

    x = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ReLUSquared.apply, (x,))  # the hand-written backward is the true derivative
    g = torch.randn(6, 40, dtype=torch.float64)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = ReLUSquared.apply(x), torch.nn.functional.relu(x2).square()
    (y * g).sum().backward()
    (y2 * g).sum().backward()
    assert torch.equal(y, y2)
    torch.testing.assert_close(x.grad, x2.grad)


def test_output_is_a_named_tuple_and_encode_gives_the_hidden_states():
    from labkit.models.gpt import GPTOutput

    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=VOCAB)).eval()
    x, y = ids(B=2, T=10), ids(B=2, T=10, seed=2)
    out = model(x, y)
    assert isinstance(out, GPTOutput) and out.logits.shape == (2, 10, VOCAB) and out.loss.dim() == 0
    logits, loss = out  # still unpacks as before
    assert logits is out.logits and loss is out.loss and model(x).loss is None
    h = model.encode(x)
    assert h.shape == (2, 10, 32)
    assert_close(model.lm_head(h), out.logits)
    hf = random_hf_gpt2()
    ours = GPT.from_hf(hf).eval()
    with torch.no_grad():
        expected = hf(ids(), output_hidden_states=True).hidden_states[-1]  # HF's last one is after ln_f
    assert_close(ours.encode(ids()), expected)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
def test_return_attention_is_capture_attention(fused):
    from labkit.attention import capture_attention

    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(fused_attention=fused, pos_emb="rope")).eval()
    x = ids(B=2, T=10, vocab=64)
    out = model(x, x, return_attention=True)
    (logits, loss), attn = out, out.attentions
    with capture_attention(model) as captured:
        out = model(x, x)
    assert list(captured) == ["transformer.h.0.attn", "transformer.h.1.attn"]
    assert torch.equal(out.logits, logits) and torch.equal(out.loss, loss)
    for a, b in zip(attn, captured.layers()):
        assert torch.equal(a, b)
    hf = random_hf_gpt2()  # and they are GPT-2's own attention weights
    with torch.no_grad():
        hf_attn = hf(ids(), output_attentions=True).attentions
        ours = GPT.from_hf(hf).eval()(ids(), return_attention=True).attentions
    for a, b in zip(ours, hf_attn):
        assert_close(a, b)


def test_one_of_each_shared_part():
    import labkit.layers
    import labkit.optim
    from labkit.models.bert import BERT

    assert issubclass(Rotary, labkit.layers.RotaryEmbedding)
    assert GPT._init_weights is BERT._init_weights is labkit.layers.normal_init
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny())
    opt = model.configure_optimizers(weight_decay=0.3, learning_rate=1e-3)
    expected = labkit.optim.decay_groups(model.parameters(), 0.3)
    assert [[id(p) for p in g["params"]] for g in opt.param_groups] == [[id(p) for p in g["params"]] for g in expected]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0] and opt.defaults["lr"] == 1e-3


# ---------------------------------------------------------------- int8 weights (torchao)
# Weight-only int8 quantization of a trained GPT (notebook 16): the weights become int8 (4 times fewer bytes), the
# outputs change, and the held-out loss stays within 0.02 nats of the float32 model's.


def _torchao():
    pytest.importorskip("torchao")
    logging.getLogger("torchao").setLevel(logging.ERROR)  # optional CUDA extensions it cannot load on a CPU
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    return quantize_, Int8WeightOnlyConfig


MARGIN = 0.02  # nats per character: the margin notebook 16 asserts too


@pytest.fixture(scope="module")
def trained_char_gpt():
    from labkit.recipes.gpt_shakespeare import shakespeare_data

    tok, train_data, val_data = shakespeare_data()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=32, n_layers=2, n_heads=2, d_model=64, bias=False,
                          tie_weights=False))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(len(train_data) - 33, (32,), generator=g).tolist()
        x = torch.stack([train_data[s:s + 32] for s in starts])
        y = torch.stack([train_data[s + 1:s + 33] for s in starts])
        model(x, y).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model.eval(), val_data[:20_001]


def _held_out_loss(model, data, block=32):
    n = (len(data) - 1) // block
    x = data[:n * block].view(n, block)
    y = data[1:n * block + 1].view(n, block)
    with torch.no_grad():
        return model(x, y).loss.item()


def _stored_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def test_int8_weights_keep_the_loss(trained_char_gpt):
    quantize_, Int8WeightOnlyConfig = _torchao()
    model, val = trained_char_gpt
    int8 = copy.deepcopy(model)
    quantize_(int8, Int8WeightOnlyConfig())
    assert type(int8.transformer.h[0].mlp.c_fc.weight).__name__ == "Int8Tensor"
    loss, loss_int8 = _held_out_loss(model, val), _held_out_loss(int8, val)
    assert loss < 3.0  # it trained_char_gpt (a uniform guess over 65 characters is 4.17)
    x = val[:64].view(2, 32)
    with torch.no_grad():
        assert not torch.equal(model(x).logits, int8(x).logits)  # the weights really were rounded
    assert abs(loss_int8 - loss) < MARGIN
    assert _stored_bytes(int8) < 0.5 * _stored_bytes(model)
