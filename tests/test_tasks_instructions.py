"""labkit.tasks.instructions: the instruction set of notebook 12, its held-out phrasings and its judge."""

import random

import pytest

from labkit.tasks import instructions as ins

SENTENCES = ["Tom is late.", "I can't swim, can you?", "We ate the cake at noon.", "Go.",
             "This sentence has far too many words to be used here at all."]
SMS = [("spam", "WIN a FREE prize now! Call 0800"), ("ham", "see you at 6"), ("ham", "ok, on my way")]


def test_each_task_has_the_right_answer():
    rng = random.Random(0)
    s = "I can't swim, can you?"
    assert ins.words_of(s) == ["I", "can't", "swim", "can", "you"]
    answers = {t: ins.make_example(t, s, rng).answer for t in ("repeat", "reverse", "count", "first_word",
                                                              "last_word", "first_and_last")}
    assert answers == {"repeat": s, "reverse": "you can swim can't I", "count": "5", "first_word": "I",
                       "last_word": "you", "first_and_last": "I you"}
    assert ins.make_example("spam", "WIN now", rng, label="spam").answer == "spam"
    assert ins.make_example("spam", "hi mum", rng, label="ham").answer == "not spam"
    w = ins.make_example("write", "We ate the cake at noon.", rng)
    assert w.word in ("cake", "noon") and w.answer == "We ate the cake at noon." and w.input == ""
    with pytest.raises(ValueError, match="unknown task"):
        ins.make_example("translate", s, rng)


def test_held_out_phrasings_are_never_trained_on():
    train = ins.build_examples(SENTENCES, SMS, ins.TRAINED_TASKS, 40, seed=0)
    held = ins.build_examples(SENTENCES, SMS, ins.TRAINED_TASKS, 40, seed=0, held_out_phrasing=True)
    trained = {e.instruction for e in train}
    assert trained and not trained & {e.instruction for e in held}
    assert {e.instruction for e in held} == {ins.TASKS[t].held_out_phrasing for t in ins.TRAINED_TASKS}
    assert len(train) == 40 * len(ins.TRAINED_TASKS)
    assert all("too many words" not in e.input and e.input != "Go." for e in train)  # 3 to 8 words only
    spam = [e for e in train if e.task == "spam"]
    assert sum(e.answer == "spam" for e in spam) == len(spam) // 2  # balanced
    assert ins.HELD_OUT_TASK not in ins.TRAINED_TASKS


def test_the_judge_scores_what_it_says():
    good = ins.judge("cake", "We ate the cake.")
    assert good == ins.JudgeScore(2 + 1 - 0.4, True, True, 0, 0, 4)
    known = {"we", "ate", "the", "cake"}
    assert ins.judge("cake", "We ate the cake.", known) == good
    assert ins.judge("cake", "We atte the cake.", known).unknown == 1  # a made-up word loses a point
    assert ins.judge("cake", "Wecake.", known).score < good.score
    assert ins.judge("cake", "We ate the cake the cake").score < ins.judge("cake", "We ate the cake").score
    assert ins.judge("cake", "We ate.").score < good.score  # the word matters most
    assert ins.judge("cake", "We ate the big cake.").score < good.score  # shorter is better
    assert ins.exact_match(" I you ", "I you") and not ins.exact_match("i you", "I you")


def test_build_examples_takes_counts_per_task_and_a_length_limit():
    ex = ins.build_examples(SENTENCES, SMS, ("repeat", "spam"), {"repeat": 5, "spam": 2}, seed=0, max_words=3)
    assert sum(e.task == "repeat" for e in ex) == 5 and sum(e.task == "spam" for e in ex) == 2
    assert {e.input for e in ex if e.task == "repeat"} == {"Tom is late."}  # the only sentence of 3 words
    with pytest.raises(ValueError, match="3-2 words"):
        ins.build_examples(SENTENCES, SMS, ("repeat",), 1, max_words=2)
    with pytest.raises(ValueError, match="unknown task"):
        ins.build_examples(SENTENCES, SMS, ("summarise",), 1)
