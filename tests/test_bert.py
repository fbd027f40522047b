"""labkit.models.bert against Hugging Face BERT (copied weights), and BERT's 80/10/10 masking."""

import pytest
import torch
from torch.testing import assert_close

from labkit.models.bert import BERT, BERTConfig, mask_tokens

transformers = pytest.importorskip("transformers")

VOCAB = 101


def hf_config():
    return transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, pad_token_id=0,
    )  # fmt: skip


def perturbed(hf_model, seed=0):
    """Perturb every parameter so LayerNorm gains, biases and the MLM bias all matter."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in hf_model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return hf_model.eval()


def padded_batch():
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, VOCAB, (3, 16), generator=g)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 9:] = 1
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 11:] = 0  # two padded rows of different lengths
    attention_mask[2, 5:] = 0
    input_ids[attention_mask == 0] = 0
    return input_ids, attention_mask, token_type_ids


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
def test_from_hf_mlm_logits_match_with_padding(fused):
    torch.manual_seed(0)
    hf = perturbed(transformers.BertForMaskedLM(hf_config()))
    model = BERT.from_hf(hf, fused_attention=fused).eval()
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        out = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    real = attention_mask.bool()  # padded positions' outputs are never used
    assert out.logits.shape == (3, 16, VOCAB)
    assert out[0] is out.logits
    assert_close(out.logits[real], ref.logits[real])


def test_from_hf_loss_matches():
    hf = perturbed(transformers.BertForMaskedLM(hf_config()))
    model = BERT.from_hf(hf).eval()
    input_ids, attention_mask, token_type_ids = padded_batch()
    masked, labels = mask_tokens(
        input_ids, mask_token_id=3, vocab_size=VOCAB, mlm_probability=0.3,
        special_tokens_mask=attention_mask == 0, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    with torch.no_grad():
        ref = hf(masked, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels).loss
        loss = model(masked, attention_mask, labels, token_type_ids).loss
    assert_close(loss, ref)


def test_from_hf_pretraining_model_pooled_and_hidden_match_bert_model():
    hf = perturbed(transformers.BertForPreTraining(hf_config()))
    model = BERT.from_hf(hf).eval()
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        ref = hf.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        ref_logits = hf(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).prediction_logits
        out = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    real = attention_mask.bool()
    assert_close(out.pooled, ref.pooler_output)
    assert_close(out.hidden_states[real], ref.last_hidden_state[real])
    assert_close(out.logits[real], ref_logits[real])


def test_from_hf_ties_decoder_and_counts_params():
    hf = transformers.BertForPreTraining(hf_config())
    model = BERT.from_hf(hf)
    assert model.mlm.decoder.weight is model.embeddings.word.weight
    hf_params = sum(p.numel() for p in hf.parameters()) - sum(p.numel() for p in hf.cls.seq_relationship.parameters())
    assert model.num_params() == hf_params  # everything except the next-sentence head


def test_return_attention_masks_padded_keys():
    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny(vocab_size=VOCAB)).eval()
    input_ids, attention_mask, _ = padded_batch()
    out = model(input_ids, attention_mask, return_attention=True)
    assert_close(out.logits, model(input_ids, attention_mask).logits)  # same function either path
    assert len(out.attentions) == 2
    for a in out.attentions:
        assert a.shape == (3, 2, 16, 16)
        assert_close(a.sum(-1), torch.ones(3, 2, 16))
        assert torch.all(a[2, :, :, 5:] == 0) and torch.all(a[1, :, :, 11:] == 0)
    assert model(input_ids).attentions is None


def test_fused_and_explicit_paths_agree_with_gradients():
    torch.manual_seed(0)
    fused = BERT(BERTConfig.tiny(vocab_size=VOCAB, fused_attention=True))
    explicit = BERT(BERTConfig.tiny(vocab_size=VOCAB, fused_attention=False))
    explicit.load_state_dict(fused.state_dict())
    input_ids, attention_mask, _ = padded_batch()
    labels = torch.where(attention_mask.bool(), input_ids, -100)
    a = fused(input_ids, attention_mask, labels)
    b = explicit(input_ids, attention_mask, labels)
    assert_close(a.loss, b.loss)
    a.loss.backward()
    b.loss.backward()
    grads_b = dict(explicit.named_parameters())
    for name, p in fused.named_parameters():
        assert_close(p.grad, grads_b[name].grad, msg=lambda m: f"{name}: {m}")


def test_adamw_steps_lower_the_loss():
    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny())
    input_ids = torch.randint(5, 64, (8, 24), generator=torch.Generator().manual_seed(0))
    masked, labels = mask_tokens(input_ids, 4, 64, mlm_probability=0.3, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(masked, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


# ---------------------------------------------------------------------------- mask_tokens

MASK_ID, V = 4, 1000


def big_batch():
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, V, (400, 500), generator=g)  # 200k tokens, never the mask id
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] ... [SEP]
    special[:50, 400:] = True  # padding
    return input_ids, special


def test_mask_tokens_proportions():
    input_ids, special = big_batch()
    masked, labels = mask_tokens(input_ids, MASK_ID, V, special_tokens_mask=special,
                                 generator=torch.Generator().manual_seed(1))  # fmt: skip
    chosen = labels != -100
    n = chosen.sum().item()
    # 1. about 15% of the non-special positions are chosen (std ~0.0008)
    assert n / (~special).sum().item() == pytest.approx(0.15, abs=0.004)
    # 2. of those: 80% [MASK], 10% a random token, 10% unchanged (std <= 0.0024; the
    #    random token equals [MASK] or the original with probability 1/V each, negligible)
    frac_mask = (masked[chosen] == MASK_ID).float().mean().item()
    frac_same = (masked[chosen] == input_ids[chosen]).float().mean().item()
    frac_random = 1 - frac_mask - frac_same
    assert frac_mask == pytest.approx(0.8, abs=0.01)
    assert frac_same == pytest.approx(0.1, abs=0.008)
    assert frac_random == pytest.approx(0.1, abs=0.008)
    # random replacements are spread over the vocabulary
    rand_ids = masked[chosen & (masked != MASK_ID) & (masked != input_ids)]
    assert rand_ids.min() < 50 and rand_ids.max() > V - 50


def test_mask_tokens_labels_and_special_tokens():
    input_ids, special = big_batch()
    masked, labels = mask_tokens(input_ids, MASK_ID, V, special_tokens_mask=special,
                                 generator=torch.Generator().manual_seed(2))  # fmt: skip
    chosen = labels != -100
    assert not (chosen & special).any()  # special tokens are never chosen
    assert torch.equal(labels[chosen], input_ids[chosen])  # labels: the original ids where chosen
    assert torch.all(labels[~chosen] == -100)
    assert torch.equal(masked[~chosen], input_ids[~chosen])  # unchosen positions are untouched
    assert masked.dtype == input_ids.dtype and masked.shape == input_ids.shape


def test_mask_tokens_is_reproducible_with_a_generator():
    input_ids, special = big_batch()
    a = mask_tokens(input_ids, MASK_ID, V, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(input_ids, MASK_ID, V, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_encode_gives_the_hidden_states_and_the_mlm_loss_builds_on_it():
    from labkit.models.bert import mlm_loss

    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny(vocab_size=VOCAB)).eval()
    input_ids, attention_mask, token_type_ids = padded_batch()
    out = model(input_ids, attention_mask, token_type_ids=token_type_ids)
    assert torch.equal(model.encode(input_ids, attention_mask, token_type_ids), out.hidden_states)
    hf = perturbed(transformers.BertModel(hf_config(), add_pooling_layer=False))
    with torch.no_grad():
        expected = hf(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
    got = BERT.from_hf(hf).eval().encode(input_ids, attention_mask, token_type_ids)
    assert_close(got[attention_mask.bool()], expected[attention_mask.bool()])
    labels = torch.where(torch.rand(input_ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3,
                         input_ids, -100)
    labels[0, 0] = input_ids[0, 0]
    loss, logits = mlm_loss(model, input_ids, attention_mask, labels)
    full = model(input_ids, attention_mask, labels)
    assert_close(loss, full.loss)
    assert_close(logits, full.logits[labels != -100])


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
def test_return_attention_is_capture_attention(fused):
    from labkit.attention import capture_attention

    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny(vocab_size=VOCAB, fused_attention=fused)).eval()
    input_ids, attention_mask, _ = padded_batch()
    out = model(input_ids, attention_mask, return_attention=True)
    with capture_attention(model) as captured:
        plain = model(input_ids, attention_mask)
    assert list(captured) == ["blocks.0.attn", "blocks.1.attn"] and plain.attentions is None
    assert torch.equal(plain.logits, out.logits)
    for a, b in zip(out.attentions, captured.layers()):
        assert torch.equal(a, b)
    hf = perturbed(transformers.BertForMaskedLM(hf_config()))
    with torch.no_grad():
        hf_attn = hf(input_ids, attention_mask=attention_mask, output_attentions=True).attentions
        ours = BERT.from_hf(hf).eval()(input_ids, attention_mask, return_attention=True).attentions
    for a, b in zip(ours, hf_attn):
        assert_close(a, b)


def test_mean_pool_averages_the_real_tokens_only():
    """Each sentence's vector is the mean of its own tokens' hidden states, the same as encoding it alone:
    padding (here up to 7 positions of it) must not count."""
    from labkit.models.bert import mean_pool
    from labkit.models.bert import BERT, BERTConfig

    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny()).train()
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(5, 64, (n,), generator=g).tolist() for n in (9, 2, 5, 9, 3)]
    pooled = mean_pool(model, seqs, pad_id=0, batch_size=3)  # batches [9, 2, 5] and [9, 3]: both padded
    assert pooled.shape == (5, 32) and model.training  # the model's mode is restored
    model.eval()
    with torch.no_grad():
        alone = torch.stack([model.encode(torch.tensor([s]))[0].mean(0) for s in seqs])  # no padding at all
    torch.testing.assert_close(pooled, alone, atol=1e-5, rtol=1e-4)
