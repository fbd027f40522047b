"""Checkers for notebook 01 (tokens and embeddings); see labkit.checks._core for the pattern."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._core import Case, CheckResult, check_close

__all__ = ["check_char_tokenizer", "check_embedding_lookup", "check_nearest_neighbours"]


# --- exercise 1: a character tokenizer ----------------------------------------

_CHAR_TEXTS = [
    ("a short text", "hello world", "low"),
    ("text with punctuation and capitals", "To be, or not to be: that is the question.", "to be, that is it."),
    ("text whose characters come in unsorted order", "zebra crossing, quietly", "quiz"),
    ("text with a newline and a non-ASCII letter", "Fa\u00e7ade\nand caf\u00e9", "caf\u00e9\nFa\u00e7ade"),
]


def _char_reference(text: str, s: str, which: str):
    from labkit.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text(text)
    ids = tok.encode(s)
    return ids if which == "encode" else tok.decode(ids)


def check_char_tokenizer(learner_fn: Callable) -> CheckResult:
    """Notebook 01: ``build_char_tokenizer(text)`` returns ``(encode, decode)``: ``encode(s)`` the list of ids of
    the characters of ``s`` (ids follow the SORTED distinct characters of ``text``), ``decode(ids)`` the string."""
    cases = []
    for name, text, s in _CHAR_TEXTS:
        cases.append(Case(f"encode({s!r}) after build_char_tokenizer({text!r})", (text, s, "encode")))
        cases.append(Case(f"decode(ids of {s!r}) after build_char_tokenizer({text!r})", (text, s, "decode")))

    def learner(text, s, which):
        encode, decode = learner_fn(text)
        if which == "encode":
            return encode(s)
        return decode(_char_reference(text, s, "encode"))

    return check_close(
        "build_char_tokenizer",
        learner,
        _char_reference,
        cases,
        hint=(
            "Hint: the vocabulary is sorted(set(text)) (a bare set has no fixed order, so the ids would differ), "
            "stoi maps each character to its position in that list, encode returns a list of ints, and decode "
            "looks each id up in itos and joins the characters with ''.join(...) into ONE string."
        ),
    )


# --- exercise 2: the embedding lookup as a matrix product ------------------------


def _embedding_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    cases = []
    for vocab, d_model, shape in [(10, 4, (5,)), (50, 8, (2, 7)), (1000, 16, (3, 4, 5))]:
        weight = torch.randn(vocab, d_model, generator=g)
        ids = torch.randint(0, vocab // 2, shape, generator=g)  # only the lower half: the max id is not vocab-1
        ids.view(-1)[0] = 0
        cases.append(Case(f"vocab={vocab}, d_model={d_model}, ids of shape {shape}", (ids, weight)))
    return cases


def check_embedding_lookup(learner_fn: Callable) -> CheckResult:
    """Notebook 01: ``embedding_lookup(ids, weight)`` = one_hot(ids) @ weight, shape ids.shape + (d_model,)."""
    return check_close(
        "embedding_lookup",
        learner_fn,
        lambda ids, weight: F.embedding(ids, weight),
        _embedding_cases(),
        hint=(
            "Hint: F.one_hot(ids, num_classes=weight.shape[0]) gives (..., vocab_size) — pass num_classes, or the "
            "width is only max(ids)+1 — then convert it to float (.float() or .to(weight.dtype)) before the "
            "matrix product with weight (vocab_size, d_model)."
        ),
    )


# --- exercise 3: nearest neighbours by cosine similarity ---------------------------


def _nearest_reference(E: torch.Tensor, i: int, k: int) -> torch.Tensor:
    En = E / E.norm(dim=1, keepdim=True)
    sims = En @ En[i]  # (vocab_size,) cosine similarity of every row with row i
    sims[i] = float("-inf")  # a token is not its own neighbour
    return sims.topk(k).indices


def _nearest_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    cases = []
    for vocab, d_model, i, k in [(6, 2, 0, 2), (20, 8, 7, 3), (65, 16, 64, 5)]:
        E = torch.randn(vocab, d_model, generator=g)
        E = E * torch.linspace(0.2, 5.0, vocab)[:, None]  # rows of very different lengths: dot product != cosine
        cases.append(Case(f"E of shape {(vocab, d_model)}, i={i}, k={k}", (E, i, k)))
    return cases


def check_nearest_neighbours(learner_fn: Callable) -> CheckResult:
    """Notebook 01: ``nearest_neighbours(E, i, k)``: ids of the k rows of E most cosine-similar to row i
    (excluding i itself), most similar first, as a LongTensor of shape (k,)."""

    def learner(E, i, k):
        out = learner_fn(E.clone(), i, k)
        return torch.as_tensor(out).long() if not isinstance(out, torch.Tensor) else out

    return check_close(
        "nearest_neighbours",
        learner,
        _nearest_reference,
        _nearest_cases(),
        hint=(
            "Hint: cosine similarity divides the dot product by BOTH norms (normalise every row of E first), "
            "otherwise long rows win; leave row i itself out (e.g. set its similarity to -inf) and return "
            "topk(k).indices, most similar first."
        ),
    )
