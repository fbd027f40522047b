"""Checkers of notebook 09 pass the reference solutions and fail typical mistakes with a specific hint."""

import pytest
import torch

from labkit.checks.pretraining import check_mask_tokens, check_masked_accuracy
from labkit.models.bert import mask_tokens as labkit_mask_tokens

pytestmark = pytest.mark.usefixtures("isolated_cache")  # checkers record progress: keep it out of the checkout


def todo(*args, **kwargs):
    raise NotImplementedError


# --- the 80/10/10 masking ---------------------------------------------------------------


def mask_tokens(input_ids, mask_token_id, vocab_size, special_tokens_mask, mlm_probability=0.15):
    chosen = (torch.rand(input_ids.shape) < mlm_probability) & ~special_tokens_mask
    labels = input_ids.masked_fill(~chosen, -100)
    to_mask = chosen & (torch.rand(input_ids.shape) < 0.8)
    to_random = chosen & ~to_mask & (torch.rand(input_ids.shape) < 0.5)
    masked = input_ids.masked_fill(to_mask, mask_token_id)
    masked = torch.where(to_random, torch.randint(vocab_size, input_ids.shape), masked)
    return masked, labels


def test_mask_tokens_passes_solution_and_labkit(capsys):
    assert check_mask_tokens(mask_tokens)
    assert "✅ mask_tokens" in capsys.readouterr().out

    def via_labkit(input_ids, mask_token_id, vocab_size, special_tokens_mask, mlm_probability=0.15):
        return labkit_mask_tokens(input_ids, mask_token_id, vocab_size, mlm_probability, special_tokens_mask)

    assert check_mask_tokens(via_labkit)


def _variant(**changes):
    def fn(input_ids, mask_token_id, vocab_size, special_tokens_mask, mlm_probability=0.15):
        p_mask, p_random = changes.get("p_mask", 0.8), changes.get("p_random", 0.5)
        chosen = torch.rand(input_ids.shape) < changes.get("p", mlm_probability)
        if not changes.get("specials_allowed"):
            chosen &= ~special_tokens_mask
        labels = input_ids.clone() if changes.get("labels_everywhere") else input_ids.masked_fill(~chosen, -100)
        to_mask = chosen & (torch.rand(input_ids.shape) < p_mask)
        to_random = chosen & ~to_mask & (torch.rand(input_ids.shape) < p_random)
        masked = input_ids.masked_fill(to_mask, mask_token_id)
        masked = torch.where(to_random, torch.randint(vocab_size, input_ids.shape), masked)
        if changes.get("labels_from_masked"):
            labels = masked.masked_fill(~chosen, -100)
        return masked, labels

    return fn


@pytest.mark.parametrize("changes, expected", [
    (dict(p_mask=1.0), "every chosen token became [MASK]"),
    (dict(p_random=0.1), "half (probability 0.5, not 0.1)"),
    (dict(labels_everywhere=True), "set labels to -100"),
    (dict(labels_from_masked=True), "ORIGINAL token id"),
    (dict(specials_allowed=True), "special tokens ([CLS], [SEP], [PAD]) were chosen"),
    (dict(p=0.15), "with mlm_probability=0.3 you chose"),  # ignores its argument
])  # fmt: skip
def test_mask_tokens_hints(capsys, changes, expected):
    assert not check_mask_tokens(_variant(**changes))
    out = capsys.readouterr().out
    assert "❌ mask_tokens" in out and expected in out


def test_mask_tokens_in_place_and_stub(capsys):
    def in_place(input_ids, mask_token_id, vocab_size, special_tokens_mask, mlm_probability=0.15):
        masked, labels = mask_tokens(input_ids, mask_token_id, vocab_size, special_tokens_mask, mlm_probability)
        input_ids.copy_(masked)
        return input_ids, labels

    assert not check_mask_tokens(in_place)
    assert "changed in place" in capsys.readouterr().out
    assert not check_mask_tokens(todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- accuracy on the masked positions -------------------------------------------------------


def masked_accuracy(logits, labels):
    chosen = labels != -100
    return (logits.argmax(-1)[chosen] == labels[chosen]).float().mean().item()


def test_masked_accuracy_passes_solution(capsys):
    assert check_masked_accuracy(masked_accuracy)
    assert "✅ masked_accuracy" in capsys.readouterr().out
    assert check_masked_accuracy(lambda lg, lb: (lg.argmax(-1) == lb)[lb != -100].float().mean())  # a tensor is fine


def test_masked_accuracy_hints(capsys):
    assert not check_masked_accuracy(lambda lg, lb: (lg.argmax(-1) == lb).float().mean().item())
    out = capsys.readouterr().out
    assert "❌ masked_accuracy" in out and "you averaged over ALL positions" in out
    assert not check_masked_accuracy(lambda lg, lb: (lg.argmax(-1) == lb).float().sum().item())
    out = capsys.readouterr().out
    assert "values differ" in out or "expected" in out
    assert "ALL positions" not in out
    assert not check_masked_accuracy(lambda lg, lb: (lg.argmax(-1) == lb)[lb != -100].float().sum().item())
    assert "that is the NUMBER of correct predictions" in capsys.readouterr().out
    assert not check_masked_accuracy(todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out
