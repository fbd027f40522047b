"""Train/test leakage: test sentences that are a word away from a training sentence (``near_duplicates``)."""

from __future__ import annotations

__all__ = ["normalise_text", "near_duplicates"]


def normalise_text(text: str) -> tuple[str, ...]:
    """A sentence as the words that matter for duplicate-finding: lower case, punctuation dropped."""
    import re

    return tuple(re.findall(r"[^\W_]+(?:'[^\W_]+)?", text.lower()))


def _within_one_edit(a: tuple, b: tuple) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1:]


def near_duplicates(queries, corpus, max_edits: int = 1, min_words: int = 3) -> list[tuple[str, int]]:
    """For each query sentence, whether ``corpus`` holds a copy: ``("exact", j)`` when corpus[j] has the same
    words (``normalise_text``: case and punctuation ignored), ``("near", j)`` when it is one word away (one word
    substituted, inserted or deleted; with ``max_edits=1``, for queries of at least ``min_words`` words), else
    ``("none", -1)``. Exact matching is a dictionary lookup; near matching indexes every corpus sentence under
    each of its one-word deletions (two sentences one edit apart share such a key), then checks the candidates;
    ``j`` is the first match in the corpus (the same on every run, whatever Python's hash seed)."""
    if max_edits not in (0, 1):
        raise ValueError(f"max_edits must be 0 (exact) or 1 (one word away), not {max_edits}")
    norm = [normalise_text(s) for s in corpus]
    exact: dict[tuple, int] = {}
    for j, w in enumerate(norm):
        exact.setdefault(w, j)
    keys: dict[tuple, list[int]] = {}
    if max_edits:
        for j, w in enumerate(norm):
            for key in {w, *(w[:i] + w[i + 1:] for i in range(len(w)))}:
                keys.setdefault(key, []).append(j)
    out = []
    for q in queries:
        w = normalise_text(q)
        if w in exact:
            out.append(("exact", exact[w]))
            continue
        found = -1
        if max_edits and len(w) >= min_words:
            candidates = sorted({j for key in (w, *(w[:i] + w[i + 1:] for i in range(len(w)))) for j in keys.get(key, ())})
            found = next((j for j in candidates if _within_one_edit(w, norm[j])), -1)  # the first in the corpus
        out.append(("near", found) if found >= 0 else ("none", -1))
    return out
