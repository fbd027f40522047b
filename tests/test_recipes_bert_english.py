"""The bert-english recipe: its data pipeline, its fast MLM loss, and a tiny end-to-end run through the zoo."""

from dataclasses import replace

import pytest
import torch

from labkit import zoo
from labkit.data import length_grouped_batches, pad_batch
from labkit.metrics import evaluate_mlm, unigram_baseline
from labkit.models.bert import BERT, BERTConfig, masked_batch, mlm_loss, special_tokens_mask
from labkit.recipes import bert_english as rb
from labkit.tokenizers import BERT_SPECIAL_TOKENS, BPETokenizer

SENTENCES = [f"{who} {verb} the {thing}{end}"
             for who in ["I", "You", "Tom", "We", "They", "She"]
             for verb in ["like", "saw", "want", "need", "found"]
             for thing in ["dog", "cat", "book", "car", "house", "apple", "old red bicycle"]
             for end in [".", "!", " again."]]  # fmt: skip
TINY = rb.BERTRecipe(vocab_size=300, context_length=12, n_val=100, n_layers=2, n_heads=2, d_model=32, d_ff=64,
                     steps=60, batch_size=32, warmup_steps=5, eval_every=20, lr=1e-2)


@pytest.fixture
def tok():
    return BPETokenizer.train(SENTENCES, 300, special_tokens=BERT_SPECIAL_TOKENS)


def test_split_is_seeded_and_disjoint():
    train, val = rb.split_sentences(SENTENCES, 100, seed=0)
    assert len(val) == 100 and len(train) == len(SENTENCES) - 100 and not set(train) & set(val)
    assert rb.split_sentences(SENTENCES, 100, seed=0) == (train, val)
    assert rb.split_sentences(SENTENCES, 100, seed=1)[1] != val


def test_encode_pad_and_mask(tok):
    seqs = rb.encode_sentences(tok, SENTENCES[:50], context_length=8)
    sp = tok.special_ids
    assert all(s[0] == sp["[CLS]"] and s[-1] == sp["[SEP]"] and len(s) <= 8 for s in seqs)
    ids, attn = pad_batch(seqs, sp["[PAD]"])
    assert ids.shape == attn.shape == (50, max(map(len, seqs)))
    assert torch.equal(attn.sum(1), torch.tensor([len(s) for s in seqs]))
    assert (ids[attn == 0] == sp["[PAD]"]).all()
    special = special_tokens_mask(ids, tok)
    assert torch.equal(special, (ids == sp["[PAD]"]) | (ids == sp["[CLS]"]) | (ids == sp["[SEP]"]))
    g = torch.Generator().manual_seed(0)
    masked, attn2, labels = masked_batch(seqs * 40, tok, 0.15, g)
    assert torch.equal(attn2, pad_batch(seqs * 40)[1])
    chosen = labels != -100
    ids40 = pad_batch(seqs * 40, sp["[PAD]"])[0]
    assert not (chosen & special_tokens_mask(ids40, tok)).any()
    assert torch.equal(labels[chosen], ids40[chosen]) and torch.equal(masked[~chosen], ids40[~chosen])
    assert 0.12 < chosen.float().sum() / (~special_tokens_mask(ids40, tok)).sum() < 0.18


def test_length_grouped_batches_are_seeded_and_tight():
    seqs = [[0] * n for n in torch.randint(3, 30, (2000,), generator=torch.Generator().manual_seed(0)).tolist()]
    a = length_grouped_batches(seqs, 64, torch.Generator().manual_seed(1))
    b = length_grouped_batches(seqs, 64, torch.Generator().manual_seed(1))
    spreads = []
    for _ in range(40):  # crosses a group boundary (16 batches per group)
        x, y = next(a), next(b)
        assert x == y and len(x) == 64
        lengths = [len(s) for s in x]
        spreads.append(max(lengths) - min(lengths))
    assert sum(spreads) / len(spreads) < 5  # random batches would spread ~26


def test_mlm_loss_equals_bert_loss(tok):
    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny(vocab_size=tok.vocab_size)).eval()
    seqs = rb.encode_sentences(tok, SENTENCES[:16], 12)
    ids, attn, labels = masked_batch(seqs, tok, 0.3, torch.Generator().manual_seed(0))
    loss, logits = mlm_loss(model, ids, attn, labels)
    out = model(ids, attn, labels=labels)
    torch.testing.assert_close(loss, out.loss)
    torch.testing.assert_close(logits, out.logits[labels != -100])


def test_evaluate_and_unigram_baseline(tok):
    seqs = rb.encode_sentences(tok, SENTENCES, 12)
    torch.manual_seed(0)
    model = BERT(BERTConfig.tiny(vocab_size=tok.vocab_size))
    r1, r2 = evaluate_mlm(model, seqs, tok), evaluate_mlm(model, seqs, tok)
    assert r1 == r2 and 0 <= r1["mlm_accuracy"] <= 1 and r1["masked_tokens"] > 0  # a fixed masking
    base = unigram_baseline(seqs, seqs, tok)
    assert base["most_frequent"] == " the" and 0.1 < base["mlm_accuracy"] < 0.3
    assert base["mlm_loss"] < torch.log(torch.tensor(float(tok.vocab_size))).item()  # beats uniform guessing


def test_tiny_training_through_the_zoo(isolated_cache, monkeypatch, capsys):
    monkeypatch.setattr(rb, "english_sentences", lambda: list(SENTENCES))
    rb.mlm_data.cache_clear()
    zoo.register(zoo.Recipe("test-bert", "tiny", build=rb.build_bert_english,
                            train=lambda: rb.train_bert_english(TINY, progress=False)), overwrite=True)
    model = zoo.load("test-bert")
    meta = model.zoo_meta
    h = meta["history"]
    assert h["eval_steps"] == [20, 40, 60] and len(h["val_accuracy"]) == 3 and len(h["train_loss"]) == 6
    assert meta["val"]["mlm_loss"] < meta["unigram"]["mlm_loss"] - 1.0  # it uses the context, even this tiny
    assert meta["val"]["mlm_accuracy"] > meta["unigram"]["mlm_accuracy"]
    # the cached checkpoint rebuilds the same model and tokenizer
    again = zoo.load("test-bert")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    tok = rb.load_bert_tokenizer(again.zoo_meta)
    assert tok.get_vocab() == rb.mlm_data(TINY).tokenizer.get_vocab()
    data = rb.mlm_data(TINY)
    assert evaluate_mlm(again, data.val, tok) == meta["val"]
    torch.load(zoo.path("test-bert"), weights_only=True)  # meta holds plain types only
    rb.mlm_data.cache_clear()


def test_same_recipe_gives_the_same_model(monkeypatch):
    monkeypatch.setattr(rb, "english_sentences", lambda: list(SENTENCES))
    rb.mlm_data.cache_clear()
    r = replace(TINY, steps=8, eval_every=4, n_val=40)
    m1, meta1 = rb.train_bert_english(r, progress=False)
    rb.mlm_data.cache_clear()
    m2, meta2 = rb.train_bert_english(r, progress=False)
    rb.mlm_data.cache_clear()
    assert meta1["history"]["train_loss"] == meta2["history"]["train_loss"] and meta1["val"] == meta2["val"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_the_recipe_is_listed_and_adamw_is_an_option():
    assert "bert-english" in zoo.available()
    assert zoo.path("bert-english").name == f"bert-english-v{rb.RECIPE.version}.pt"
    model = BERT(BERTConfig.tiny())
    assert isinstance(rb.bert_optimizer(model, replace(TINY, optimizer="adamw")), torch.optim.AdamW)
    muon = rb.bert_optimizer(model, TINY)
    n_muon = sum(p.numel() for p in muon.muon.param_groups[0]["params"])
    assert n_muon == sum(p.numel() for n, p in model.blocks.named_parameters() if p.dim() == 2)
    with pytest.raises(ValueError, match="optimizer must be"):
        rb.bert_optimizer(model, replace(TINY, optimizer="sgd"))
