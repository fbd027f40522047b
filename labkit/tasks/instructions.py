"""An instruction set built from the lab's own data, its exact-match scoring, and a judge (notebook 12).

Each task asks something about a real sentence (the held-out Tatoeba sentences of ``gpt-english`` for
evaluation, its training sentences for tuning) or an SMS message, and has one right answer, so a model's
answer is scored by exact match. Every task has three phrasings to train on and a fourth, different one
held out; ``first_and_last`` is a whole task held out (it combines two trained tasks). ``write`` (a
sentence with a given word) has no single answer: it is the task the preference judge scores.

    examples = build_examples(sentences, sms, TRAINED_TASKS, n_per_task=1000, seed=0)  # list of Example
    conversation = example.messages()                                   # [{"role": "user", ...}, ...]
    score = exact_match(answer, example.answer)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

__all__ = ["Task", "TASKS", "TRAINED_TASKS", "HELD_OUT_TASK", "JUDGED_TASK", "Example", "words_of",
           "make_example", "build_examples", "exact_match", "judge", "JudgeScore"]

_WORD = re.compile(r"[A-Za-z0-9']+")


def words_of(sentence: str) -> list[str]:
    """The words of a sentence, punctuation left out: "Tom's late, isn't he?" -> [Tom's, late, isn't, he]."""
    return _WORD.findall(sentence)


@dataclass(frozen=True)
class Task:
    name: str
    phrasings: tuple[str, ...]  # trained on
    held_out_phrasing: str  # never trained on
    source: str = "sentence"  # "sentence" (Tatoeba) or "sms"


TASKS = {t.name: t for t in [
    Task("repeat", ("Repeat this sentence:", "Say this again:", "Copy the sentence:"),
         "Write the same sentence once more:"),
    Task("reverse", ("Reverse the order of the words:", "Say the words backwards:",
                     "Write the words in reverse order:"), "Turn this sentence around, last word first:"),
    Task("count", ("How many words are in this sentence?", "Count the words:", "Give the number of words:"),
         "Tell me how many words this has:"),
    Task("first_word", ("What is the first word?", "Give the first word:", "Which word comes first?"),
         "Name the word this sentence starts with:"),
    Task("last_word", ("What is the last word?", "Give the last word:", "Which word comes last?"),
         "Name the word this sentence ends with:"),
    Task("spam", ("Is this message spam?", "Spam or not spam?", "Classify this message as spam or not spam:"),
         "Would you call this text message spam?", source="sms"),
    Task("first_and_last", ("What are the first and last words?",), "What are the first and last words?"),
    Task("write", ('Write a sentence with the word "{word}".', 'Use "{word}" in a sentence.',
                   'Give me a sentence containing "{word}".'), 'Say something that uses the word "{word}".'),
]}  # fmt: skip
TRAINED_TASKS = ("repeat", "reverse", "count", "first_word", "last_word", "spam")  # scored by exact match
HELD_OUT_TASK = "first_and_last"  # never trained on
JUDGED_TASK = "write"  # trained on, scored by the judge


class Example(NamedTuple):
    task: str
    instruction: str  # the phrasing (with its word filled in for "write")
    input: str  # the sentence or message ("" for "write")
    answer: str  # the right answer (for "write": one sentence that uses the word)
    held_out_phrasing: bool

    @property
    def prompt(self) -> str:
        """The user's message: the instruction, then the input on its own line."""
        return f"{self.instruction}\n{self.input}" if self.input else self.instruction

    def messages(self, with_answer: bool = True) -> list[dict]:
        """The conversation: the user's message, then (``with_answer``) the assistant's answer."""
        user = [{"role": "user", "content": self.prompt}]
        return user + [{"role": "assistant", "content": self.answer}] if with_answer else user

    @property
    def word(self) -> str:
        """For ``write``: the word to use (quoted in the instruction)."""
        m = re.search(r'"([^"]+)"', self.instruction)
        return m.group(1) if m else ""


def _answer(task: str, text: str, label: str | None = None) -> str:
    w = words_of(text)
    if task == "repeat":
        return text
    if task == "reverse":
        return " ".join(reversed(w))
    if task == "count":
        return str(len(w))
    if task == "first_word":
        return w[0]
    if task == "last_word":
        return w[-1]
    if task == "first_and_last":
        return f"{w[0]} {w[-1]}"
    if task == "spam":
        return "spam" if label == "spam" else "not spam"
    raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")


def make_example(task: str, text: str, rng: random.Random, held_out_phrasing: bool = False,
                 label: str | None = None) -> Example:
    """One example of ``task`` about ``text`` (a sentence, or an SMS with its ``label``), with a phrasing
    drawn by ``rng`` from the trained ones, or the held-out one. For ``write`` the word is drawn from ``text``
    (a word of 4+ letters) and the answer is ``text``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    t = TASKS[task]
    phrasing = t.held_out_phrasing if held_out_phrasing else rng.choice(t.phrasings)
    if task == JUDGED_TASK:
        candidates = [w for w in words_of(text) if len(w) >= 4 and w.isalpha()]
        if not candidates:
            raise ValueError(f"no word of 4+ letters in {text!r} to ask for")
        return Example(task, phrasing.format(word=rng.choice(candidates).lower()), "", text, held_out_phrasing)
    return Example(task, phrasing, text, _answer(task, text, label), held_out_phrasing)


def build_examples(sentences: Sequence[str], sms: Sequence[tuple[str, str]], tasks: Sequence[str],
                   n_per_task: int | Mapping[str, int], seed: int = 0, held_out_phrasing: bool = False,
                   max_sms_chars: int = 160, max_words: int = 8) -> list[Example]:
    """``n_per_task`` examples of each task (a number, or one per task), from ``sentences`` (3 to
    ``max_words`` words) and ``sms`` ((label, text) pairs, at most ``max_sms_chars`` characters, half spam
    and half not), in a seeded order."""
    rng = random.Random(seed)
    short = [s for s in sentences if 3 <= len(words_of(s)) <= max_words]  # answers fit the context with room
    spam = [t for lab, t in sms if lab == "spam" and len(t) <= max_sms_chars]
    ham = [t for lab, t in sms if lab != "spam" and len(t) <= max_sms_chars]
    out = []
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
        n = n_per_task if isinstance(n_per_task, int) else n_per_task[task]
        if TASKS[task].source == "sms":
            if not spam or not ham:
                raise ValueError("the spam task needs both spam and non-spam messages")
            for i in range(n):
                label, pool = ("spam", spam) if i % 2 == 0 else ("ham", ham)
                out.append(make_example(task, rng.choice(pool), rng, held_out_phrasing, label))
        else:
            pool = short if task != JUDGED_TASK else [
                s for s in short if any(len(w) >= 4 and w.isalpha() for w in words_of(s))]
            if not pool:
                raise ValueError(f"no sentence of 3-{max_words} words for task {task!r}")
            out += [make_example(task, rng.choice(pool), rng, held_out_phrasing) for _ in range(n)]
    rng.shuffle(out)
    return out


def exact_match(answer: str, reference: str) -> bool:
    """The same text once surrounding spaces are stripped (case and punctuation count)."""
    return answer.strip() == reference.strip()


class JudgeScore(NamedTuple):
    score: float
    uses_word: bool
    full_stop: bool
    repeats: int
    unknown: int
    n_words: int


def judge(word: str, answer: str, known_words: set[str] | frozenset[str] | None = None) -> JudgeScore:
    """The preference judge for ``write``, a rule a reader can check by eye: an answer gets 2 points for using
    the word, 1 for ending with a full stop, loses 1 per repeated word, 1 per word not in ``known_words``
    (lower-case; e.g. every word of the training sentences: made-up words lose) and 0.1 per word (shorter
    is better). Of two answers the one with the higher score is preferred."""
    w = [x.lower() for x in words_of(answer)]
    uses = word.lower() in w
    stop = answer.strip().endswith(".")
    repeats = len(w) - len(set(w))
    unknown = sum(x not in known_words for x in w) if known_words is not None else 0
    return JudgeScore(2.0 * uses + 1.0 * stop - 1.0 * repeats - 1.0 * unknown - 0.1 * len(w), uses, stop, repeats,
                      unknown, len(w))
