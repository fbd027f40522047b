"""labkit.recipes.gpt_english: the held-out sentences stay out of the training stream, paragraphs keep the
file's neighbours together, and the saved meta rebuilds the model and its tokenizer."""

import dataclasses

import pytest

from labkit.recipes import gpt_english as ge
from labkit.recipes.bert_english import english_sentences


@pytest.fixture(scope="module")
def data():
    return ge.english_lm_data(ge.GPT_ENGLISH)


def test_the_stream_holds_the_training_sentences_in_paragraphs_of_neighbours(data):
    tok = data.tokenizer
    text = tok.decode(data.train.tolist())
    lines = text.split("\n")[:-1]
    assert set(lines) == set(data.train_text)
    if ge.GPT_ENGLISH.keep_duplicates:  # the file's repeated lines stay: a sentence can follow itself
        assert len(lines) > len(data.train_text)
    else:
        assert len(lines) == len(data.train_text)
    assert not set(lines) & set(data.val_text)  # the held-out sentences are never trained on
    order = {s: i for i, s in enumerate(english_sentences())}
    p = ge.GPT_ENGLISH.paragraph
    neighbours = sum(0 <= order[lines[i + 1]] - order[lines[i]] < 3 for i in range(0, 600, p))
    assert neighbours >= 95  # within a paragraph: consecutive sentences of the (sorted) file
    assert tok.decode(data.val.tolist()).split("\n")[:-1] == data.val_text


def test_the_meta_rebuilds_the_model_and_tokenizer(data):
    recipe = dataclasses.replace(ge.GPT_ENGLISH, n_layers=1, d_model=32, n_heads=2, steps=2, batch_size=2)
    model, meta = ge.train_gpt_english(recipe, progress=False)
    again = ge.build_gpt_english(meta)
    again.load_state_dict(model.state_dict())
    tok = ge.load_english_tokenizer(meta)
    assert tok.encode("Tom is late.") == data.tokenizer.encode("Tom is late.")
    assert meta["val_loss"] > 0 and meta["train_steps"] == 2 and meta["recipe"]["paragraph"] == recipe.paragraph
