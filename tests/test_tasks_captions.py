"""Notebook 14's captioned digits (labkit.tasks.captions.captioned_digits) and its word tokenizer: captions are
deterministic, made only of measured attributes, held-out templates and (digit, attribute) pairs never appear
in training, the words are visible in the images, and unknown words get a clear error."""

import itertools

import pytest
import torch

from labkit.tasks.captions import CAPTION_TEMPLATES, DIGIT_WORDS, HELD_OUT_COMBOS, HELD_OUT_TEMPLATES, captioned_digits, digit_attributes, make_caption
from labkit.tokenizers import UnknownWordError, WordTokenizer


def _every_caption(templates):
    options = list(itertools.product((None, "narrow", "wide"), (None, "thin", "thick"), (None, "left", "right")))
    return {make_caption(d, {"width": w, "thickness": th, "slant": s}, t)
            for t in templates for d in range(10) for w, th, s in options}


@pytest.fixture(scope="module")
def data():
    return captioned_digits()


def test_captions_are_deterministic(data):
    again = captioned_digits()
    assert again.train.captions == data.train.captions and again.val.captions == data.val.captions
    assert torch.equal(again.train.images, data.train.images)
    other = captioned_digits(seed=1)
    assert other.train.captions != data.train.captions


def test_held_out_templates_and_combos_never_appear_in_training(data):
    train_set, held_set = _every_caption(CAPTION_TEMPLATES), _every_caption(HELD_OUT_TEMPLATES)
    assert not train_set & held_set  # the two template sets can never produce the same caption
    assert set(data.train.captions) <= train_set and set(data.val.captions) <= held_set
    for digit, attribute in HELD_OUT_COMBOS:
        words = {"slant": ("slanted",), "thickness": ("thin", "thick"), "width": ("narrow", "wide")}[attribute]
        for caption, y in zip(data.train.captions, data.train.labels.tolist()):
            if y == digit:
                assert not set(caption.split()) & set(words), caption
        # ...though such images are in the training set, and the held-out captions do name the pair
        assert any(w[attribute] for w, y in zip(data.train.words, data.train.labels.tolist()) if y == digit)
    assert len(data.train) == 1497 and len(data.val) == 300
    assert not set(data.train.captions) & set(data.val.captions)


def test_captions_name_the_label_and_the_measured_attributes(data):
    for caption, y, w in zip(data.train.captions, data.train.labels.tolist(), data.train.words):
        assert DIGIT_WORDS[y] in caption.split()
        if w["slant"] and (y, "slant") not in HELD_OUT_COMBOS:
            assert f"slanted to the {w['slant']}" in caption
    assert make_caption(8, {}, "{a} {adjs}{digit}{slant}") == "an eight"
    assert make_caption(8, {}, "{a} handwritten {adjs}{digit}{slant}") == "a handwritten eight"
    assert make_caption(1, {}, "{a} {adjs}{digit}{slant}") == "a one"  # by sound, not by letter
    assert make_caption(7, {"thickness": "thick", "slant": "right"}, "{a} {adjs}{digit}{slant}") == \
        "a thick seven slanted to the right"


def test_attribute_words_are_visible_in_the_images(data):
    a, words, labels = data.train.attributes, data.train.words, data.train.labels
    for name, low, high in [("thickness", "thin", "thick"), ("width", "narrow", "wide"), ("slant", "left", "right")]:
        for d in range(10):
            lo = torch.tensor([w[name] == low for w in words]) & (labels == d)
            hi = torch.tensor([w[name] == high for w in words]) & (labels == d)
            assert a[name][hi].mean() > a[name][lo].mean()
    # the moment-based width follows the bounding box: wide digits have wider boxes than narrow ones
    wide = torch.tensor([w["width"] == "wide" for w in words])
    narrow = torch.tensor([w["width"] == "narrow" for w in words])
    assert a["bbox_width"][wide].mean() > a["bbox_width"][narrow].mean() + 0.5
    # slant by moments: a sheared stroke leans the way it is sheared
    bar = torch.zeros(1, 8, 8)
    for r in range(8):
        bar[0, r, 4 + (3 - r) // 2] = 1.0  # top to the right
    assert digit_attributes(bar)["slant"].item() > 10
    assert digit_attributes(bar.flip(-1))["slant"].item() < -10
    with pytest.raises(ValueError, match="N, H, W"):
        digit_attributes(torch.rand(8, 8))


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="source"):
        captioned_digits("cifar")
    with pytest.raises(ValueError, match="quantile"):
        captioned_digits(quantile=0.6)
    with pytest.raises(ValueError, match="digit"):
        make_caption(12, {}, "{a} {digit}")


def test_word_tokenizer(data):
    tok = WordTokenizer(data.vocabulary)
    ids = tok.encode("A thick seven slanted to the right")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "a thick seven slanted to the right"
    assert tok.encode("") == [tok.bos_id, tok.eos_id]  # the null caption
    for caption in data.train.captions[:50]:
        assert tok.decode(tok.encode(caption)) == caption
    batch, real = tok.encode_batch(["a zero", "the digit one slanted to the left"])  # real: True at tokens
    assert batch.shape == (2, 9) and real[0].sum() == 4 and real[1].all()
    with pytest.raises(UnknownWordError, match="'thik' \\(did you mean 'thick'") as e:
        tok.encode("a thik 7")
    assert e.value.unknown == ["thik", "7"] and "seven" in str(e.value)
    with pytest.raises(ValueError, match="max_len"):
        tok.encode_batch(["the digit one slanted to the left"], max_len=4)


def test_word_tokenizer_saves_and_loads(tmp_path, data):
    tok = WordTokenizer(data.vocabulary)
    tok.save(tmp_path / "tok.json")
    back = WordTokenizer.load(tmp_path / "tok.json")
    assert back.words == tok.words
    (tmp_path / "other.json").write_text('{"type": "CharTokenizer"}')
    with pytest.raises(ValueError, match="WordTokenizer"):
        WordTokenizer.load(tmp_path / "other.json")
