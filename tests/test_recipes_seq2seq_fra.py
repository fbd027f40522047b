"""The seq2seq-fra recipe: a tiny end-to-end run through the zoo, on a made-up English->French grammar."""

from dataclasses import replace

import torch

from labkit import zoo
from labkit.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from labkit.recipes import seq2seq_fra as rs

WHO = {"I": ("Je", "vois", "veux"), "You": ("Tu", "vois", "veux"), "We": ("Nous", "voyons", "voulons")}
THING = {"dog": "le chien", "cat": "le chat", "book": "le livre", "car": "la voiture", "house": "la maison",
         "apple": "la pomme", "bread": "le pain", "water": "l'eau"}
PAIRS = [(f"{who} {verb} the {thing}{end}", f"{fr[0]} {fr[1 if verb == 'see' else 2]} {THING[thing]}{end}")
         for who, fr in WHO.items() for verb in ("see", "want") for thing in THING for end in (".", "!")]
PAIRS += [(en, fr.replace(" !", "!").replace("!", " !")) for en, fr in PAIRS if en.endswith("!")]  # two references
TINY = replace(rs.SEQ2SEQ_FRA, n_test=8, n_val=8, vocab_size=300, d_model=32, n_heads=2, n_encoder_layers=1,
               n_decoder_layers=1, d_ff=64, steps=150, batch_size=32, warmup_steps=10, eval_every=50, lr=3e-3)


def test_tiny_training_through_the_zoo(isolated_cache, monkeypatch):
    monkeypatch.setattr(rs, "load_pairs", lambda recipe: list(PAIRS))
    rs.translation_data.cache_clear()
    zoo.register(zoo.Recipe("test-seq2seq", "tiny", build=rs.build_seq2seq_fra,
                            train=lambda: rs.train_seq2seq_fra(TINY, progress=False)), overwrite=True)
    model = zoo.load("test-seq2seq")
    meta = model.zoo_meta
    h = meta["history"]
    assert h["eval_steps"] == [50, 100, 150] and h["val_loss"][-1] < h["val_loss"][0] / 2
    assert 0.0 <= meta["bleu_greedy"] <= 100.0 + 1e-9 and 0.0 <= meta["bleu_beam"] <= 100.0 + 1e-9
    assert meta["bleu_beam"] > 20  # a grammar this regular is learned even by a tiny model
    data = rs.translation_data(TINY)
    assert not {en for en, _ in data.train_pairs} & set(data.test)
    # the cached checkpoint rebuilds the same model and tokenizers, and translates the same
    again = zoo.load("test-seq2seq")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    src_tok, tgt_tok = rs.load_tokenizers(again.zoo_meta)
    assert src_tok.get_vocab() == data.src_tok.get_vocab() and tgt_tok.get_vocab() == data.tgt_tok.get_vocab()
    bleu, hyps = rs.corpus_bleu(again, data, beam_size=4)
    assert abs(bleu - meta["bleu_beam"]) < 1e-9 and len(hyps) == len(data.test)
    torch.load(zoo.path("test-seq2seq"), weights_only=True)  # meta holds plain types only
    rs.translation_data.cache_clear()


def test_shared_vocabulary_is_one_tokenizer_and_one_table(monkeypatch):
    monkeypatch.setattr(rs, "load_pairs", lambda recipe: list(PAIRS))
    rs.translation_data.cache_clear()
    recipe = replace(TINY, shared_vocab=True)
    data = rs.translation_data(recipe)
    assert data.src_tok is data.tgt_tok
    model = rs.build_translator(recipe, data)
    assert model.src_embed is model.tgt_embed
    rs.translation_data.cache_clear()


def test_translate_returns_clean_text():
    torch.manual_seed(0)
    rs.translation_data.cache_clear()
    from labkit.tokenizers import BPETokenizer

    tok = BPETokenizer.train([en for en, _ in PAIRS] + [fr for _, fr in PAIRS], 300, special_tokens=rs.SPECIAL_TOKENS)
    model = Seq2SeqTransformer(Seq2SeqConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size,
                                                   d_model=16, n_heads=2, d_ff=32, dropout=0.0))
    for k in (1, 3):
        out = rs.translate(model, tok, tok, ["I see the dog.", "We want water!"], beam_size=k)
        assert len(out) == 2 and all(isinstance(s, str) and "<eos>" not in s and "<bos>" not in s for s in out)
