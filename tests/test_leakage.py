"""labkit.leakage: the near-duplicate detector of train/test leakage."""

import random

from labkit import leakage


def _edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]



def test_near_duplicates_finds_planted_copies_and_nothing_two_words_away():
    words = "tom mary cat dog tea milk runs eats sees likes big red old new very the a".split()
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 8))).capitalize() + "." for _ in range(300)]
    planted = {
        "exact": corpus[10].upper().rstrip(".") + "!",  # case and punctuation do not matter
        "substituted": " ".join(["zebra"] + corpus[20].split()[1:]),
        "inserted": corpus[30].rstrip(".") + " yesterday.",
        "deleted": " ".join(corpus[40].split()[1:]),
        "two away": " ".join(["zebra", "lion"] + corpus[50].split()[2:]),
        "unrelated": "Quantum chromodynamics is hard to teach.",
    }
    found = dict(zip(planted, leakage.near_duplicates(list(planted.values()), corpus)))
    assert found["exact"] == ("exact", 10)
    assert found["substituted"][0] == found["inserted"][0] == found["deleted"][0] == "near"
    for name in ("substituted", "inserted", "deleted"):  # the copy it names is one word away
        j = found[name][1]
        assert _edit_distance(leakage.normalise_text(planted[name]), leakage.normalise_text(corpus[j])) == 1
    assert found["two away"][0] != "exact" and found["unrelated"] == ("none", -1)
    # against brute force on random queries
    queries = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))) for _ in range(200)]
    got = leakage.near_duplicates(queries, corpus)
    for q, (kind, j) in zip(queries, got):
        dists = [_edit_distance(leakage.normalise_text(q), leakage.normalise_text(s)) for s in corpus]
        assert kind == ("exact" if min(dists) == 0 else "near" if min(dists) == 1 else "none")
        assert j == -1 or dists[j] == min(dists)
    assert [k for k, _ in leakage.near_duplicates(list(planted.values()), corpus, max_edits=0)].count("exact") == 1


def test_near_duplicates_returns_the_first_match_in_the_corpus():
    # several corpus sentences are one word away: the answer must not depend on set order (Python's hash seed)
    corpus = ["Tom is there.", "I am your brother.", "Tom was here.", "I am not your baby.", "Tom is here now."]
    assert leakage.near_duplicates(["Tom is here.", "I am not your brother."], corpus) == [("near", 0), ("near", 1)]
