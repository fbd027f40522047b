"""labkit.tokenizers: round trips on the lab's corpora, save/load, the hand-written merge loop."""

import json

import pytest

from labkit.tokenizers import BPETokenizer, CharTokenizer

SLICE = 200_000  # characters of each corpus used for training: keeps every test to a second or so


def _corpus_path(name):
    from labkit.data import fetch

    try:
        return fetch(name, progress=False)
    except RuntimeError as e:  # offline and no local copy
        pytest.skip(f"data set {name!r} is not available: set LABKIT_DATA_DIR to a folder holding it ({e})")


@pytest.fixture(scope="module")
def shakespeare():
    return _corpus_path("tinyshakespeare").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def fra_eng():
    """(English, French) lines exactly as in the file (U+202F and all), from the long end too."""
    lines = _corpus_path("fra-eng").read_text(encoding="utf-8").splitlines()
    sample = lines[:3000] + lines[-3000:]
    pairs = [tuple(line.split("\t")[:2]) for line in sample]
    return pairs


@pytest.fixture(scope="module")
def bpe(shakespeare, fra_eng):
    text = shakespeare[:SLICE] + "\n".join(e + "\n" + f for e, f in fra_eng)
    return BPETokenizer.train(
        text, vocab_size=1000, special_tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<bos>", "<eos>")
    )


# -- CharTokenizer -----------------------------------------------------------


def test_char_round_trip_shakespeare(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    assert tok.vocab_size == 65  # the data set's README says 65 distinct characters
    ids = tok.encode(shakespeare)
    assert min(ids) == 0 and max(ids) == 64
    assert tok.decode(ids) == shakespeare


def test_char_round_trip_french_accents(fra_eng):
    text = "\n".join(f for _, f in fra_eng)
    assert "\u202f" in text and "é" in text
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


def test_char_ids_follow_sorted_characters():
    tok = CharTokenizer.from_text("hello")
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.encode("hello") == [1, 0, 2, 2, 3]
    assert CharTokenizer("olleh").encode("hello") == [1, 0, 2, 2, 3]


def test_char_unknown_character_is_a_clear_error():
    tok = CharTokenizer.from_text("hello world")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9.*position 1.*from_text"):
        tok.encode("hé")


def test_char_unk_maps_unknown_characters():
    tok = CharTokenizer.from_text("hello", unk="?")
    assert "?" in tok.chars
    assert tok.decode(tok.encode("héllo!")) == "h?llo?"


def test_char_decode_out_of_range_is_a_clear_error():
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([0, 5])


def test_char_save_load(tmp_path, shakespeare):
    tok = CharTokenizer.from_text(shakespeare[:5000] + "é\u202f", unk="~")
    tok.save(tmp_path / "char.json")
    again = CharTokenizer.load(tmp_path / "char.json")
    sample = shakespeare[:2000] + "é\u202f¿"
    assert again.chars == tok.chars and again.unk == "~"
    assert again.encode(sample) == tok.encode(sample)
    assert list(tmp_path.iterdir()) == [tmp_path / "char.json"]  # no temp file left behind


def test_char_load_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"type": "something else"}))
    with pytest.raises(ValueError, match="does not hold a CharTokenizer"):
        CharTokenizer.load(tmp_path / "x.json")


# -- BPETokenizer ------------------------------------------------------------


def test_bpe_round_trip_shakespeare(bpe, shakespeare):
    text = shakespeare[-100_000:]  # text not seen in training
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_round_trip_english_and_french(bpe, fra_eng):
    english = "\n".join(e for e, _ in fra_eng)
    french = "\n".join(f for _, f in fra_eng)
    assert "\u202f" in french and "ç" in french
    for text in (english, french):
        assert bpe.decode(bpe.encode(text)) == text
    for e, f in fra_eng[::50]:  # line by line too
        assert bpe.decode(bpe.encode(e)) == e
        assert bpe.decode(bpe.encode(f)) == f


@pytest.mark.parametrize("text", ["", " ", "  leading and trailing  ", "tab\there\r\nCRLF", "日本語 😀 Ωμέγα", "\x00\x7f"])
def test_bpe_round_trip_any_text(bpe, text):
    """Byte-level: characters never seen in training still round-trip."""
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_special_tokens(bpe):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<bos>", "<eos>"]
    assert bpe.special_tokens == specials
    assert bpe.special_ids == {t: i for i, t in enumerate(specials)}
    assert bpe.token_to_id("[MASK]") == 4 and bpe.id_to_token(6) == "<eos>"
    ids = bpe.encode("<bos>to be<eos>")
    assert ids[0] == 5 and ids[-1] == 6
    assert bpe.decode(ids) == "<bos>to be<eos>"
    assert bpe.decode(ids, skip_special_tokens=True) == "to be"


def test_bpe_vocabulary(bpe):
    assert bpe.vocab_size == 1000 == len(bpe.get_vocab())
    assert len(bpe.merges) == 1000 - 256 - 7  # every non-byte, non-special token is one merge
    assert bpe.merges[0] == ("Ġ", "t")  # " t" is the commonest pair in English
    ids = bpe.encode(" the king")
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.tokens(" the king") == [" the", " k", "ing"]
    assert bpe.tokens(" the king", raw=True) == ["Ġthe", "Ġk", "ing"]
    assert bpe.id_to_token(bpe.token_to_id("Ġthe")) == "Ġthe"


def test_bpe_tokens_show_partial_characters_as_bytes(bpe):
    toks = bpe.tokens("→")  # U+2192, three UTF-8 bytes, not merged in this small vocabulary
    assert toks == ["<0xE2>", "<0x86>", "<0x92>"]
    assert "".join(bpe.tokens(" the king's crown")) == " the king's crown"


def test_bpe_larger_vocab_gives_shorter_sequences(shakespeare):
    train, held_out = shakespeare[:SLICE], shakespeare[-50_000:]
    lengths = [len(BPETokenizer.train(train, vocab_size=v).encode(held_out)) for v in (256, 300, 500, 1000)]
    assert lengths[0] == len(held_out.encode("utf-8"))  # no merges: one token per byte
    assert all(a > b for a, b in zip(lengths, lengths[1:])), lengths


def test_bpe_hand_merge_loop_equals_library(bpe, shakespeare, fra_eng):
    words = set(shakespeare[:SLICE].split()[:20_000])
    words |= {w for _, f in fra_eng[::10] for w in f.split()}
    for w in sorted(words):
        for text in (w, " " + w):
            assert bpe.apply_merges(text) == bpe.tokens(text, raw=True), text
    passage = shakespeare[-20_000:]  # whole text, with newlines and punctuation
    assert bpe.apply_merges(passage) == bpe.tokens(passage, raw=True)


def test_bpe_encode_steps(bpe):
    steps = bpe.encode_steps(" understanding", steps=(0, 10, 50, 200, None))
    counts = [n for n, _ in steps]
    assert counts == [0, 10, 50, 200, len(bpe.merges)]
    assert steps[0][1] == list(" understanding")  # no merges: one token per byte
    assert steps[-1][1] == bpe.tokens(" understanding")  # all merges: the library's answer
    for (_, before), (_, after) in zip(steps, steps[1:]):
        assert "".join(before) == "".join(after) == " understanding"
        assert len(after) <= len(before)
    assert [n for n, _ in bpe.encode_steps("x", steps=(0, 10**6, None))] == [0, len(bpe.merges)]


def test_bpe_save_load(bpe, tmp_path, fra_eng):
    path = tmp_path / "sub" / "bpe.json"
    bpe.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["bpe.json"]  # atomic write leaves no temp file
    again = BPETokenizer.load(path)
    text = "\n".join(f for _, f in fra_eng[-500:]) + "<eos>"
    assert again.encode(text) == bpe.encode(text)
    assert again.merges == bpe.merges and again.special_ids == bpe.special_ids
    assert again.decode(again.encode(text)) == text


def test_bpe_training_is_deterministic(shakespeare):
    a = BPETokenizer.train(shakespeare[:50_000], vocab_size=400)
    b = BPETokenizer.train(shakespeare[:50_000], vocab_size=400)
    c = BPETokenizer.train(iter(shakespeare[:50_000].splitlines(keepends=True)), vocab_size=400)
    assert a.merges == b.merges == c.merges


def test_bpe_errors_are_clear(bpe, tmp_path):
    with pytest.raises(ValueError, match="at least 259"):
        BPETokenizer.train("some text", vocab_size=100, special_tokens=("<a>", "<b>", "<c>"))
    with pytest.raises(ValueError, match="duplicates"):
        BPETokenizer.train("some text", vocab_size=300, special_tokens=("<a>", "<a>"))
    with pytest.raises(ValueError, match="out of range"):
        bpe.decode([1, 10_000])
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        BPETokenizer.load(tmp_path / "missing.json")
