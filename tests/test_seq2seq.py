"""The translation transformer (labkit.models.seq2seq), its decoders (labkit.generate) and its recipe."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.attention import capture_attention
from labkit.generate import beam_search, seq2seq_beam_search, seq2seq_greedy
from labkit.layers import DecoderBlock, EncoderBlock
from labkit.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer, shift_right

PAD, BOS, EOS = 0, 1, 2


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(src_vocab_size=13, tgt_vocab_size=11, d_model=32, n_heads=4, d_ff=64, dropout=0.0, context_length=16)
    cfg.update(kw)
    return Seq2SeqTransformer(Seq2SeqConfig(**cfg)).eval()


def sharpen(model, scale=6.0):
    """Scale the output layer so that an untrained model's next-token distributions are far from uniform
    (and differ from position to position): a decoding test then has real choices to get right."""
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


SRC = [[3, 4, 5, EOS], [6, EOS], [7, 8, 9, 10, 11, EOS], [12, 3, EOS]]


# --- the model --------------------------------------------------------------------------


def test_loss_decreases_on_a_copy_task_in_seconds():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(Seq2SeqConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=32, n_heads=2, d_ff=64,
                                             dropout=0.0, label_smoothing=0.0, context_length=12)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def batch():
        x = torch.randint(3, 12, (64, 5), generator=gen)
        tgt = torch.cat((x, torch.full((64, 1), EOS)), 1)
        return torch.cat((x, torch.full((64, 1), EOS)), 1), shift_right(tgt, BOS), tgt

    losses = []
    for _ in range(150):
        loss = model(*batch()).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # ~ln(12): chance
    assert sum(losses[-10:]) / 10 < 0.3, losses[-10:]  # it learned to copy
    # and greedy decoding copies a sequence it has never seen
    x = torch.tensor([[5, 9, 3, 11, 7]])
    out = seq2seq_greedy(model.eval(), torch.cat((x, torch.tensor([[EOS]])), 1))
    assert out[0] == x[0].tolist() + [EOS]


def test_loss_is_label_smoothed_cross_entropy_over_non_padding_targets():
    model = tiny(label_smoothing=0.1)
    src = torch.tensor([[3, 4, EOS, PAD], [5, 6, 7, EOS]])
    tgt = torch.tensor([[3, 5, EOS, PAD], [4, EOS, PAD, PAD]])
    out = model(src, shift_right(tgt, BOS), tgt)
    keep = tgt.ne(PAD)
    ref = F.cross_entropy(out.logits[keep], tgt[keep], label_smoothing=0.1)
    torch.testing.assert_close(out.loss, ref)


def test_padding_is_hidden():
    model = tiny()
    src = torch.tensor([[3, 4, 5, EOS]])
    tgt_in = torch.tensor([[BOS, 3, 4]])
    alone = model(src, tgt_in).logits
    # more padding on the source changes nothing
    padded = model(torch.tensor([[3, 4, 5, EOS, PAD, PAD, PAD]]), tgt_in).logits
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    # whatever token sits at a masked (padded) source position, no output changes
    mask = torch.tensor([[True, True, True, True, False, False]])  # True = real token
    a = model.decode(tgt_in, model.encode(torch.tensor([[3, 4, 5, EOS, 7, 8]]), mask), mask)
    b = model.decode(tgt_in, model.encode(torch.tensor([[3, 4, 5, EOS, 11, 3]]), mask), mask)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a, alone, atol=1e-5, rtol=1e-5)
    # a target token changes no output at an earlier position (right padding is hidden by the causal mask)
    c = model(src, torch.tensor([[BOS, 3, 4, 9, 9]])).logits
    torch.testing.assert_close(c[:, :3], alone, atol=1e-5, rtol=1e-5)
    # and a sentence padded in a batch gets what it gets alone
    batch = model(torch.tensor([[3, 4, 5, EOS], [6, EOS, PAD, PAD]]), torch.tensor([[BOS, 3, 4], [BOS, 8, 8]])).logits
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-5)


def test_attention_weights_have_the_documented_shapes_and_rows_sum_to_one():
    model = tiny(n_encoder_layers=2, n_decoder_layers=3)
    src = torch.tensor([[3, 4, 5, EOS, PAD], [6, 7, 8, 9, EOS]])
    tgt_in = torch.tensor([[BOS, 3, 4], [BOS, 5, 6]])
    with torch.no_grad():
        out = model(src, tgt_in, return_attention=True)
        with capture_attention(model) as attn:
            plain = model(src, tgt_in)
    assert plain.attentions is None and torch.equal(out.logits, plain.logits)
    weights = out.attentions
    assert [len(weights[k]) for k in ("encoder", "decoder", "cross")] == [2, 3, 3]
    for w in weights["encoder"]:
        assert w.shape == (2, 4, 5, 5)
    for w in weights["decoder"]:
        assert w.shape == (2, 4, 3, 3)
        assert torch.all(w.triu(1) == 0)  # causal: nothing on future positions
    for w in weights["cross"]:
        assert w.shape == (2, 4, 3, 5)
        assert torch.all(w[0, :, :, 4] == 0)  # the padded source position gets no attention
    for w in weights["encoder"] + weights["decoder"] + weights["cross"]:
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    for a, b in zip(weights["cross"], attn.layers("decoder.*cross_attn")):  # the same weights capture_attention sees
        assert torch.equal(a, b)


def test_the_stacks_equal_pytorchs_nn_transformer_with_copied_weights():
    torch.manual_seed(0)
    ref = nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64,
                         dropout=0.0, batch_first=True, norm_first=True).eval()
    model = tiny()
    model.encoder.layers = nn.ModuleList(EncoderBlock.from_torch(layer) for layer in ref.encoder.layers)
    model.decoder.layers = nn.ModuleList(DecoderBlock.from_torch(layer) for layer in ref.decoder.layers)
    model.encoder.norm.load_state_dict(ref.encoder.norm.state_dict())
    model.decoder.norm.load_state_dict(ref.decoder.norm.state_dict())
    src = torch.tensor([[3, 4, 5, EOS, PAD], [6, 7, 8, 9, EOS]])
    tgt_in = torch.tensor([[BOS, 3, 4, 5], [BOS, 5, 6, 7]])
    x, y = model._embed(model.src_embed, src), model._embed(model.tgt_embed, tgt_in)
    pad = src.eq(PAD)
    with torch.no_grad():
        expected = ref(x, y, tgt_mask=nn.Transformer.generate_square_subsequent_mask(4), src_key_padding_mask=pad,
                       memory_key_padding_mask=pad, tgt_is_causal=True)
        got = model.decoder(y, model.encoder(x, key_mask=~pad), memory_mask=~pad)  # labkit: True = token
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_shared_embeddings_are_one_table_and_need_one_vocabulary():
    model = tiny(src_vocab_size=11, share_embeddings=True)
    assert model.src_embed is model.tgt_embed and model.lm_head.weight is model.tgt_embed.weight
    assert model.num_params() == sum(p.numel() for p in set(model.parameters()))
    with pytest.raises(ValueError, match="share_embeddings=True needs one shared vocabulary"):
        tiny(share_embeddings=True)


def test_bad_inputs_say_what_is_wrong():
    model = tiny()
    with pytest.raises(ValueError, match="outside 0..12.*other language"):
        model(torch.tensor([[3, 40]]), torch.tensor([[BOS]]))
    with pytest.raises(ValueError, match="context_length=16"):
        model(torch.full((1, 20), 3), torch.tensor([[BOS]]))
    with pytest.raises(ValueError, match=r"\(B, T\) tensor of token ids"):
        model(torch.tensor([3, 4]), torch.tensor([[BOS]]))
    with pytest.raises(ValueError, match="empty input"):
        seq2seq_greedy(model, [[3, EOS], []])


# --- decoding ---------------------------------------------------------------------------


def test_greedy_is_the_argmax_at_every_step():
    model = sharpen(tiny())
    for src, out in zip(SRC, seq2seq_greedy(model, SRC, max_new_tokens=8)):
        memory = model.encode(torch.tensor([src]))
        prefix = [BOS]
        for tok in out:
            logits = model.decode(torch.tensor([prefix]), memory)[0, -1]
            assert tok == logits.argmax().item()
            prefix.append(tok)
        assert out[-1] == EOS or len(out) == 8


def test_beam_width_one_equals_greedy():
    for seed in range(3):
        model = sharpen(tiny(seed))
        greedy = seq2seq_greedy(model, SRC, max_new_tokens=8)
        beam = seq2seq_beam_search(model, SRC, beam_size=1, max_new_tokens=8)
        assert [hyps[0][0] for hyps in beam] == greedy


def test_hypotheses_are_sorted_by_score_and_scored_as_documented():
    model = sharpen(tiny())
    for alpha in (0.0, 1.0):
        for src, hyps in zip(SRC, seq2seq_beam_search(model, SRC, beam_size=5, length_penalty=alpha, max_new_tokens=8)):
            scores = [s for _, s in hyps]
            assert len(hyps) == 5 and scores == sorted(scores, reverse=True)
            memory = model.encode(torch.tensor([src]))
            for ids, score in hyps:
                logits = model.decode(torch.tensor([[BOS] + ids[:-1]]), memory)[0]
                logp = F.log_softmax(logits.double(), -1).gather(1, torch.tensor(ids)[:, None]).sum().item()
                assert score == pytest.approx(logp / len(ids) ** alpha, abs=1e-5)


def exhaustive(model, src, max_len, alpha):
    """Every hypothesis beam search could return, scored: token strings that end at EOS or at max_len."""
    V = model.config.tgt_vocab_size
    memory = model.encode(torch.tensor([src]))
    others = [t for t in range(V) if t != EOS]
    hyps = []
    for n in range(1, max_len + 1):
        for body in itertools.product(others, repeat=n - 1):
            for last in (range(V) if n == max_len else [EOS]):
                ids = list(body) + [last]
                logits = model.decode(torch.tensor([[BOS] + ids[:-1]]), memory)[0]
                logp = F.log_softmax(logits.double(), -1).gather(1, torch.tensor(ids)[:, None]).sum().item()
                hyps.append((ids, logp / n**alpha))
    return sorted(hyps, key=lambda h: h[1], reverse=True)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_beam_on_a_tiny_model_is_exhaustive_search(alpha):
    model = sharpen(tiny(tgt_vocab_size=5), scale=3.0)
    expected = exhaustive(model, SRC[0], max_len=3, alpha=alpha)  # 1 + 4 + 16 + 64 = 85 hypotheses
    assert len(expected) == 85
    got = seq2seq_beam_search(model, [SRC[0]], beam_size=85, length_penalty=alpha, max_new_tokens=3)[0]
    assert [ids for ids, _ in got] == [ids for ids, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)  # float32 logits
    # a narrower beam finds the best hypothesis here too
    top = seq2seq_beam_search(model, [SRC[0]], beam_size=4, length_penalty=alpha, max_new_tokens=3)[0]
    assert top[0][0] == expected[0][0]


def test_beam_search_over_many_sentences_equals_one_sentence_at_a_time():
    model = sharpen(tiny())
    batched = seq2seq_beam_search(model, SRC, beam_size=3, max_new_tokens=7)
    for src, hyps in zip(SRC, batched):
        memory = model.encode(torch.tensor([src]))

        def step(prefixes):
            return F.log_softmax(model.decode(prefixes, memory.expand(len(prefixes), -1, -1))[:, -1], -1)

        ref = beam_search(lambda prefixes, rows: step(prefixes), [[BOS]], 3, 7, eos_id=EOS)[0]
        assert [ids for ids, _ in hyps] == [r for r, _ in ref]
        assert [s for _, s in hyps] == pytest.approx([s for _, s in ref], abs=1e-5)


def test_beam_search_stops_at_eos_and_respects_per_sentence_limits():
    V = 6

    def step_fn(prefixes, rows):  # row 0 prefers EOS at once; row 1 never says EOS
        logp = torch.full((len(rows), V), -5.0)
        logp[rows == 0, EOS] = -0.1
        logp[rows == 1, 4] = -0.1
        return logp

    out = beam_search(step_fn, [[BOS]] * 2, beam_size=2, max_new_tokens=[5, 3], eos_id=EOS, length_penalty=0.0)
    assert out[0][0] == ([EOS], pytest.approx(-0.1))
    assert out[1][0][0] == [4, 4, 4]  # cut at its own limit, no EOS
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(step_fn, [[BOS]] * 2, beam_size=0, max_new_tokens=3, eos_id=EOS)
    with pytest.raises(ValueError, match="one such int per sequence"):
        beam_search(step_fn, [[BOS]] * 2, beam_size=2, max_new_tokens=[3], eos_id=EOS)


# --- the recipe's data --------------------------------------------------------------------


def test_the_split_is_by_unique_english_sentence_with_every_reference():
    from labkit.recipes import seq2seq_fra as R

    pairs = R.load_pairs(R.SEQ2SEQ_FRA)
    assert all(len(en.split()) <= 5 for en, _ in pairs)
    assert not any("\u202f" in fr for _, fr in pairs)
    train, val, test = R.split_by_source(pairs, n_test=1000, n_val=500, seed=0)
    train_en = {en for en, _ in train}
    assert len(test) == 1000 and len(val) == 500
    assert not (train_en & set(test)) and not (train_en & set(val)) and not (set(val) & set(test))
    by_source = {}
    for en, fr in pairs:
        by_source.setdefault(en, []).append(fr)
    assert all(test[en] == by_source[en] for en in test)  # every translation is a reference
    assert len(train) + sum(map(len, val.values())) + sum(map(len, test.values())) == len(pairs)
    assert any(len(refs) > 1 for refs in test.values())
    assert R.split_by_source(pairs, 1000, 500, seed=0)[2] == test  # seeded
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        R.split_by_source(pairs[:10], n_test=8, n_val=5)
