"""Notebook 01's checkers: the reference solutions pass; typical mistakes fail with the specific hint."""

import pytest
import torch
import torch.nn.functional as F

from labkit import checks

pytestmark = pytest.mark.usefixtures("isolated_cache")  # checkers record progress: keep it out of the checkout


def _todo(*args, **kwargs):
    raise NotImplementedError


# --- build_char_tokenizer ---------------------------------------------------------


def build_char_tokenizer(text):
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    itos = dict(enumerate(chars))
    return (lambda s: [stoi[c] for c in s]), (lambda ids: "".join(itos[int(i)] for i in ids))


def test_char_tokenizer_passes_solution(capsys):
    assert checks.check_char_tokenizer(build_char_tokenizer)
    assert "✅ build_char_tokenizer" in capsys.readouterr().out


def test_char_tokenizer_unsorted_vocabulary_fails(capsys):
    def unsorted(text):  # first-appearance order instead of sorted order
        chars = list(dict.fromkeys(text))
        stoi = {c: i for i, c in enumerate(chars)}
        return (lambda s: [stoi[c] for c in s]), (lambda ids: "".join(chars[i] for i in ids))

    assert not checks.check_char_tokenizer(unsorted)
    out = capsys.readouterr().out
    assert "❌ build_char_tokenizer" in out and "values differ" not in out and "expected" in out
    assert "the order in which characters first appear" in out


def test_char_tokenizer_decode_returning_list_fails(capsys):
    def list_decode(text):
        enc, _ = build_char_tokenizer(text)
        chars = sorted(set(text))
        return enc, (lambda ids: [chars[i] for i in ids])

    assert not checks.check_char_tokenizer(list_decode)
    out = capsys.readouterr().out
    assert "decode(" in out and "decode returns a list of characters" in out


def test_char_tokenizer_stub(capsys):
    assert not checks.check_char_tokenizer(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- embedding_lookup ----------------------------------------------------------------


def test_embedding_lookup_passes_solution(capsys):
    assert checks.check_embedding_lookup(lambda ids, w: F.one_hot(ids, num_classes=w.shape[0]).float() @ w)
    assert "✅ embedding_lookup: all 3 cases pass" in capsys.readouterr().out


def test_embedding_lookup_mistakes(capsys):
    # no num_classes: the one-hot is only max(ids)+1 wide, so the product fails to line up
    assert not checks.check_embedding_lookup(lambda ids, w: F.one_hot(ids).float() @ w)
    out = capsys.readouterr().out
    assert "raised RuntimeError" in out and "F.one_hot(ids) alone is only max(ids)+1 columns wide" in out
    # an integer one-hot times a float matrix
    assert not checks.check_embedding_lookup(lambda ids, w: F.one_hot(ids, w.shape[0]) @ w)
    out = capsys.readouterr().out
    assert "raised RuntimeError" in out and "F.one_hot gives integers (int64)" in out
    # looking up columns instead of rows
    assert not checks.check_embedding_lookup(lambda ids, w: F.one_hot(ids, w.shape[1]).float() @ w.T)
    out = capsys.readouterr().out
    assert "❌ embedding_lookup" in out and "the embedding of id i is ROW i of weight" in out
    assert not checks.check_embedding_lookup(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- nearest_neighbours ----------------------------------------------------------------


def nearest_neighbours(E, i, k):
    En = F.normalize(E, dim=1)
    sims = En @ En[i]
    sims[i] = -float("inf")
    return sims.topk(k).indices


def test_nearest_neighbours_passes_solution(capsys):
    assert checks.check_nearest_neighbours(nearest_neighbours)
    assert "✅ nearest_neighbours" in capsys.readouterr().out
    # a plain list of ints is accepted too
    assert checks.check_nearest_neighbours(lambda E, i, k: nearest_neighbours(E, i, k).tolist())


def test_nearest_neighbours_mistakes(capsys):
    def dot_product(E, i, k):  # no normalisation: long rows win
        sims = E @ E[i]
        sims[i] = -float("inf")
        return sims.topk(k).indices

    assert not checks.check_nearest_neighbours(dot_product)
    out = capsys.readouterr().out
    assert "❌ nearest_neighbours" in out and "you ranked by the raw dot product" in out

    def includes_itself(E, i, k):
        En = F.normalize(E, dim=1)
        return (En @ En[i]).topk(k).indices

    assert not checks.check_nearest_neighbours(includes_itself)
    assert "row i is its own nearest neighbour" in capsys.readouterr().out
    assert not checks.check_nearest_neighbours(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


def test_checkers_do_not_touch_the_global_random_stream():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    checks.check_embedding_lookup(lambda ids, w: F.embedding(ids, w))
    checks.check_nearest_neighbours(nearest_neighbours)
    checks.check_char_tokenizer(build_char_tokenizer)
    assert torch.equal(torch.rand(3), expected)
