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

    def run(build):  # one case: build the tokenizer from text, then encode s or decode its ids
        def case(text, s, which):
            encode, decode = build(text)
            return encode(s) if which == "encode" else decode(_char_reference(text, s, "encode"))
        return case

    def first_seen(text):  # ids in the order characters first appear
        chars = list(dict.fromkeys(text))
        return (lambda s: [chars.index(c) for c in s]), (lambda ids: "".join(chars[i] for i in ids))

    def list_decode(text):
        chars = sorted(set(text))
        return (lambda s: [chars.index(c) for c in s]), (lambda ids: [chars[i] for i in ids])

    mistakes = [
        (run(first_seen), "Hint: your ids follow the order in which characters first appear in the text; the "
                          "vocabulary must be sorted so that it does not depend on that order: sorted(set(text))."),
        (run(list_decode), "Hint: decode returns a list of characters; join them into one string with "
                           "''.join(...)."),
    ]
    return check_close(
        "build_char_tokenizer",
        run(learner_fn),
        _char_reference,
        cases,
        mistakes=mistakes,
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
    mistakes = [
        (lambda ids, w: F.one_hot(ids).float() @ w,
         "Hint: F.one_hot(ids) alone is only max(ids)+1 columns wide; pass num_classes=weight.shape[0] so that "
         "it has one column per row of weight."),
        (lambda ids, w: F.one_hot(ids, w.shape[0]) @ w,
         "Hint: F.one_hot gives integers (int64) and matmul will not mix them with float weights: convert it "
         "with .float() (or .to(weight.dtype)) first."),
        (lambda ids, w: F.one_hot(ids, w.shape[1]).float() @ w.T,
         "Hint: the embedding of id i is ROW i of weight (vocab_size, d_model): one_hot(ids, vocab_size) @ "
         "weight, with no transpose."),
    ]
    return check_close(
        "embedding_lookup",
        learner_fn,
        lambda ids, weight: F.embedding(ids, weight),
        _embedding_cases(),
        mistakes=mistakes,
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

    def as_ids(fn):
        def ids(E, i, k):
            out = fn(E, i, k)
            return torch.as_tensor(out).long() if not isinstance(out, torch.Tensor) else out
        return ids

    def dot_product(E, i, k):
        sims = E @ E[i]
        sims[i] = float("-inf")
        return sims.topk(k).indices

    def with_itself(E, i, k):
        En = E / E.norm(dim=1, keepdim=True)
        return (En @ En[i]).topk(k).indices

    mistakes = [
        (dot_product, "Hint: you ranked by the raw dot product, which favours long rows; cosine similarity "
                      "normalises every row first (E / E.norm(dim=1, keepdim=True), or F.normalize(E, dim=1))."),
        (with_itself, "Hint: row i is its own nearest neighbour (cosine 1): exclude it before topk, e.g. by "
                      "setting its similarity to -inf."),
    ]
    return check_close(
        "nearest_neighbours",
        as_ids(learner_fn),
        _nearest_reference,
        _nearest_cases(),
        mistakes=mistakes,
        hint=(
            "Hint: cosine similarity divides the dot product by BOTH norms (normalise every row of E first), "
            "otherwise long rows win; leave row i itself out (e.g. set its similarity to -inf) and return "
            "topk(k).indices, most similar first."
        ),
    )
