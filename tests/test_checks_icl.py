"""Notebook 11's checkers (in-context learning): solutions pass; typical mistakes get their hint; stubs say what to write."""

import pytest

from labkit import checks

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _todo(*args, **kwargs):
    raise NotImplementedError


def few_shot_prompt(examples, query, n_symbols):
    ids = []
    for x, y in examples:
        ids += [x, n_symbols + y]
    return ids + [query]


def prefix_matching(attn, tokens):  # the loop a learner writes, independent of labkit's vectorised one
    total, queries = 0.0, 0
    for i in range(len(tokens)):
        keys = [p + 1 for p in range(i) if tokens[p] == tokens[i]]
        if keys:
            total += float(sum(attn[i, k] for k in keys))
            queries += 1
    return total / queries


def test_solutions_pass(capsys):
    assert checks.check_few_shot_prompt(few_shot_prompt)
    assert checks.check_prefix_matching(prefix_matching)
    out = capsys.readouterr().out
    assert "✅ few_shot_prompt: all 4 cases pass" in out and "✅ prefix_matching: all 3 cases pass" in out


@pytest.mark.parametrize("wrong, hint", [
    (lambda ex, q, n: [t for x, y in ex for t in (x, y)] + [q], "their own tokens"),
    (lambda ex, q, n: [t for x, y in ex for t in (x, n + y)] + [q, n], "ends with the query"),
    (lambda ex, q, n: [t for x, y in ex for t in (n + y, x)] + [q], "input first"),
])
def test_prompt_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_few_shot_prompt(wrong)
    assert hint in capsys.readouterr().out


def test_prefix_mistakes_get_their_hint(capsys):
    def on_the_occurrence(attn, tokens):
        total, queries = 0.0, 0
        for i in range(len(tokens)):
            keys = [p for p in range(i) if tokens[p] == tokens[i]]
            if keys:
                total += float(sum(attn[i, k] for k in keys))
                queries += 1
        return total / queries

    assert not checks.check_prefix_matching(on_the_occurrence)
    assert "right *after* the earlier occurrence" in capsys.readouterr().out

    def over_every_query(attn, tokens):
        return sum(float(attn[i, p + 1]) for i in range(len(tokens)) for p in range(i) if tokens[p] == tokens[i]) / len(tokens)

    assert not checks.check_prefix_matching(over_every_query)
    assert "queries that have an earlier occurrence" in capsys.readouterr().out


def test_stubs_say_what_to_write(capsys):
    assert not checks.check_few_shot_prompt(_todo)
    assert not checks.check_prefix_matching(_todo)
    out = capsys.readouterr().out
    assert out.count("not implemented yet") == 2 and "Hint" not in out
