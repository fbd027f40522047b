"""Notebook 07's checkers: solutions pass (written independently of the reference); typical mistakes get their hint."""

import pytest
import torch

from labkit import checks

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _todo(*args, **kwargs):
    raise NotImplementedError


# --- token_mask ---------------------------------------------------------------------------


@pytest.mark.parametrize("solution", [
    lambda ids, pad_id: ids != pad_id,
    lambda ids, pad_id: torch.stack([torch.tensor([t != pad_id for t in row.tolist()]) for row in ids]),
])
def test_token_mask_solutions_pass(solution, capsys):
    assert checks.check_token_mask(solution)
    assert "✅ token_mask: correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda ids, pad_id: ids == pad_id, "True where attention is allowed"),
    (lambda ids, pad_id: ids != 0, "compare with the pad_id argument"),
    (lambda ids, pad_id: (ids != pad_id).float(), "return a bool tensor"),
    (lambda ids, pad_id: ids[:, :-1] != pad_id, "one comparison does it"),
])
def test_token_mask_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_token_mask(wrong)
    out = capsys.readouterr().out
    assert "❌ token_mask" in out and hint in out


def test_token_mask_stub_says_what_to_write(capsys):
    assert not checks.check_token_mask(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- beam_step ------------------------------------------------------------------------


def beam_step_loops(beam_logp, next_logp, beam_size):
    """Every (beam, token) candidate scored in plain Python, sorted: no topk, no flattening tricks."""
    cands = [(beam_logp[b].item() + next_logp[b, t].item(), b, t)
             for b in range(next_logp.size(0)) for t in range(next_logp.size(1))]
    best = sorted(cands, key=lambda c: c[0], reverse=True)[:beam_size]
    return (torch.tensor([c[0] for c in best], dtype=torch.float64), torch.tensor([c[1] for c in best]),
            torch.tensor([c[2] for c in best]))


def test_beam_step_solution_passes(capsys):
    assert checks.check_beam_step(beam_step_loops)
    assert "✅ beam_step: all 4 cases pass" in capsys.readouterr().out


def test_beam_step_agrees_with_labkits_beam_search():
    # the checker's reference is one step of labkit.generate.beam_search: the beams it keeps after two steps
    from labkit.generate import beam_search

    g = torch.Generator().manual_seed(3)
    table = torch.log_softmax(2 * torch.randn(6, generator=g, dtype=torch.float64), -1)
    second = torch.log_softmax(2 * torch.randn(6, 6, generator=g, dtype=torch.float64), -1)

    def step_fn(prefixes, rows):
        return table.expand(len(prefixes), -1) if prefixes.size(1) == 1 else second[prefixes[:, -1]]

    got = beam_search(step_fn, [[0]], beam_size=3, max_new_tokens=2, length_penalty=0.0)[0]
    s1, _, t1 = beam_step_loops(torch.zeros(1, dtype=torch.float64), table[None], 3)
    s2, b2, t2 = beam_step_loops(s1, second[t1], 3)
    assert [ids for ids, _ in got] == [[t1[b].item(), t.item()] for b, t in zip(b2, t2)]
    assert [s for _, s in got] == pytest.approx(s2.tolist())


@pytest.mark.parametrize("wrong, hint", [
    (lambda b, n, k: (lambda top: (top.values, top.indices // n.size(1), top.indices % n.size(1)))(
        torch.topk(n.flatten(), k)), "PLUS the token's"),
    (lambda b, n, k: (lambda top: (top.values, top.indices // n.size(1), top.indices % n.size(1)))(
        torch.topk((b[:, None] * n).flatten(), k)), "log-probabilities ADD"),
    (lambda b, n, k: (lambda top: (top.values, top.indices % n.size(1), top.indices // n.size(1)))(
        torch.topk((b[:, None] + n).flatten(), k)), "beam and token are swapped"),
])
def test_beam_step_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_beam_step(wrong)
    out = capsys.readouterr().out
    assert "❌ beam_step" in out and hint in out


def test_beam_step_per_beam_best_gets_its_hint(capsys):
    def per_beam(beam_logp, next_logp, beam_size):
        scores, tokens = (beam_logp[:, None] + next_logp).max(-1)
        order = scores.argsort(descending=True)[:beam_size]
        return scores[order], order, tokens[order]

    assert not checks.check_beam_step(per_beam)
    out = capsys.readouterr().out
    assert "each beam's single best token" in out


def test_beam_step_stub_says_what_to_write(capsys):
    assert not checks.check_beam_step(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


# --- clipped_precision ------------------------------------------------------------------------


def clipped_precision_loops(hypothesis, references, n):
    """Written from Papineni et al.'s definition with plain loops: no Counter."""
    grams = [tuple(hypothesis[i:i + n]) for i in range(len(hypothesis) - n + 1)]
    matches = 0
    for gram in set(grams):
        in_refs = max(sum(tuple(r[i:i + n]) == gram for i in range(len(r) - n + 1)) for r in references)
        matches += min(grams.count(gram), in_refs)
    return matches, len(grams)


def test_clipped_precision_solution_passes(capsys):
    assert checks.check_clipped_precision(clipped_precision_loops)
    assert "✅ clipped_precision: all 5 cases pass" in capsys.readouterr().out


def test_clipped_precision_reference_adds_up_to_sacrebleus_counts():
    # labkit.metrics.clipped_ngram_matches, the checker's reference, summed over a corpus, gives sacrebleu's own
    # matches and totals for every n (on text tokenised the way sacrebleu tokenises it)
    import random

    import sacrebleu

    from labkit.metrics import clipped_ngram_matches, reference_streams

    rng = random.Random(0)
    words = "the a cat dog sat on mat rug is was here there".split()
    hyps = [" ".join(rng.choices(words, k=rng.randint(1, 9))) for _ in range(40)]
    refs = [[" ".join(rng.choices(words, k=rng.randint(2, 9))) for _ in range(rng.randint(1, 3))] for _ in hyps]
    score = sacrebleu.BLEU(tokenize="none").corpus_score(hyps, reference_streams(refs))
    for n in range(1, 5):
        got = [clipped_ngram_matches(h.split(), [r.split() for r in rs], n) for h, rs in zip(hyps, refs)]
        assert sum(m for m, _ in got) == score.counts[n - 1] and sum(t for _, t in got) == score.totals[n - 1]


@pytest.mark.parametrize("wrong, hint", [
    (lambda h, rs, n: (sum(tuple(h[i:i + n]) in {tuple(r[j:j + n]) for r in rs for j in range(len(r) - n + 1)}
                           for i in range(len(h) - n + 1)), max(len(h) - n + 1, 0)), "Clip each n-gram's count"),
    (lambda h, rs, n: (0, max(len(h) - n + 1, 0)), "count the hypothesis's n-grams"),
])
def test_clipped_precision_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_clipped_precision(wrong)
    out = capsys.readouterr().out
    assert "❌ clipped_precision" in out and hint in out


def test_clipped_precision_stub_says_what_to_write(capsys):
    assert not checks.check_clipped_precision(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out


def _by_sum(h, rs, n):
    grams = [tuple(h[i:i + n]) for i in range(len(h) - n + 1)]
    in_all = [tuple(r[j:j + n]) for r in rs for j in range(len(r) - n + 1)]
    return sum(min(grams.count(g), in_all.count(g)) for g in set(grams)), len(grams)


def _distinct(h, rs, n):
    grams = {tuple(h[i:i + n]) for i in range(len(h) - n + 1)}
    return len(grams & {tuple(r[j:j + n]) for r in rs for j in range(len(r) - n + 1)}), len(grams)


def _short_window(h, rs, n):
    return clipped_precision_loops(h[:-1], [r[:-1] for r in rs], n) if len(h) > n else (0, 0)


@pytest.mark.parametrize("wrong, hint", [(_by_sum, "ONE reference"), (_distinct, "each distinct n-gram once")])
def test_clipped_precision_other_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_clipped_precision(wrong)
    out = capsys.readouterr().out
    assert "❌ clipped_precision" in out and hint in out


def test_a_solution_that_drops_the_last_ngram_fails(capsys):
    assert not checks.check_clipped_precision(_short_window)
    assert "❌ clipped_precision" in capsys.readouterr().out
