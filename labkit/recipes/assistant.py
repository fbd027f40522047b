"""Notebook 12's recipe: ``gpt-english`` instruction-tuned into an assistant (SFT), measured by exact match.

The instruction set comes from ``labkit.tasks.instructions``: examples of the trained tasks about ``gpt-english``'s
training sentences and most SMS messages; tests about its held-out sentences and 1,000 held-out messages,
in three groups (trained phrasings, held-out phrasings, the held-out task). SFT is ``labkit.train`` on the
assistant's tokens only, with batches of similar length (``labkit.chat.length_grouped_batches``)::

    data = instruction_data(tok, english_lm_data(GPT_ENGLISH), SFT)
    chat = ChatTemplate(tok.encode, tok.decode, tok.vocab_size)
    resize_token_embeddings(model, chat.vocab_size)
    history = sft(model, chat, data.train, SFT)
    scores = score(model, chat, tok, data.test)      # {task: exact-match rate}

The zoo's ``gpt-english-sft`` is exactly that model (``train_gpt_english_sft``; notebook 12 trains it live
and caches what it trained under this name, so later notebooks load it rather than train it again)::

    sft_model = zoo.load("gpt-english-sft")
    tok, chat = chat_of(sft_model.zoo_meta)

Calibrated on a 2-core CPU (2026-12-02, fp32): the weights give the hard tasks (reverse, repeat) more
examples than the easy ones (first word), which lifted the mean exact match after 2,000 steps from 0.65
(equal shares) to 0.75-0.78 at the same cost; sentences of at most 5 words rather than 6, to 0.84.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..chat import ChatTemplate, length_grouped_batches, resize_token_embeddings, respond
from ..data import load_sms_spam
from ..device import get_device
from ..models.gpt import GPT, GPTConfig
from ..tasks import instructions
from ..train import History, TrainConfig, make_optimizer, train
from . import Recipe
from .gpt_english import GPT_ENGLISH, english_lm_data, load_english_tokenizer

__all__ = ["SFTRecipe", "SFT", "InstructionData", "instruction_data", "sft", "score", "TaskScores",
           "sft_meta", "chat_of", "train_gpt_english_sft", "build_gpt_english_sft", "RECIPE"]


@dataclass(frozen=True)
class SFTRecipe:
    n_per_task: int = 3000  # training examples of a task of weight 1
    weights: dict = field(default_factory=lambda: {
        "repeat": 2.0, "reverse": 3.0, "count": 1.5, "first_word": 0.5, "last_word": 1.5, "spam": 1.5,
        instructions.JUDGED_TASK: 1.0})  # fmt: skip
    max_words: int = 5  # sentences of 3 to max_words words
    max_sms_tokens: int = 72  # SMS messages of at most this many tokens
    n_sms_test: int = 1000  # messages held out for the tests
    n_test: int = 100  # test examples per task and group
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3  # AdamW, no weight decay, cosine to 0.1 lr after 20 warmup steps
    warmup_steps: int = 20
    seed: int = 0


SFT = SFTRecipe()


class InstructionData(NamedTuple):
    train: list  # Example: the trained tasks and "write", trained phrasings, training sentences
    test: list  # the trained tasks, trained phrasings, held-out sentences and messages
    test_held_out_phrasing: list  # the same tasks asked with the held-out phrasing
    test_held_out_task: list  # the task never trained on
    sms_train: list  # (label, text)
    sms_test: list


def instruction_data(tok, lm_data, recipe: SFTRecipe = SFT, sms: Sequence[tuple[str, str]] | None = None) -> InstructionData:
    """The instruction set for ``tok`` (``gpt-english``'s tokenizer) and ``lm_data`` (its
    ``english_lm_data``): held-out sentences and messages are only ever in the tests."""
    if sms is None:
        sms = load_sms_spam()
    sms = [(lab, t) for lab, t in sms if len(tok.encode(t)) <= recipe.max_sms_tokens]
    random.Random(recipe.seed).shuffle(sms)
    sms_test, sms_train = sms[: recipe.n_sms_test], sms[recipe.n_sms_test :]
    tasks = instructions.TRAINED_TASKS + (instructions.JUDGED_TASK,)
    n = {t: int(recipe.n_per_task * recipe.weights.get(t, 1.0)) for t in tasks}
    kw = dict(max_words=recipe.max_words, max_sms_chars=10_000)
    train_ex = instructions.build_examples(lm_data.train_text, sms_train, tasks, n, seed=recipe.seed + 1, **kw)

    def test(tasks, held_out_phrasing, seed):
        return instructions.build_examples(lm_data.val_text, sms_test, tasks, recipe.n_test, seed=seed,
                                       held_out_phrasing=held_out_phrasing, **kw)

    return InstructionData(train_ex, test(instructions.TRAINED_TASKS, False, recipe.seed + 2),
                           test(instructions.TRAINED_TASKS, True, recipe.seed + 3),
                           test((instructions.HELD_OUT_TASK,), False, recipe.seed + 4), sms_train, sms_test)


def sft(model: nn.Module, chat: ChatTemplate, examples: Sequence, recipe: SFTRecipe = SFT,
        parameters: Sequence[nn.Parameter] | None = None, steps: int | None = None, lr: float | None = None,
        progress: bool = True, desc: str = "SFT") -> History:
    """Instruction-tune ``model`` in place on ``examples`` (the loss on the assistant's tokens only), with
    AdamW on ``parameters`` (default: all of them; pass ``lora_parameters(model)`` for LoRA-SFT)."""
    torch.manual_seed(recipe.seed)
    lr = recipe.lr if lr is None else lr
    if parameters is None:
        optimizer = make_optimizer(model, lr, 0.0, (0.9, 0.99))
    else:
        optimizer = torch.optim.AdamW(list(parameters), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    get_batch = length_grouped_batches(chat, [e.messages() for e in examples], recipe.batch_size,
                                       model.config.context_length, seed=recipe.seed)
    config = TrainConfig(max_steps=steps or recipe.steps, lr=lr, warmup_steps=recipe.warmup_steps,
                         min_lr_ratio=0.1, weight_decay=0.0, grad_clip=1.0, eval_every=0, log_every=50,
                         progress=progress, desc=desc)
    return train(model, get_batch, config, optimizer=optimizer)


class TaskScores(NamedTuple):
    by_task: dict  # task -> exact-match rate
    answers: list  # the decoded answers, in the examples' order

    @property
    def mean(self) -> float:
        return sum(self.by_task.values()) / len(self.by_task)


@torch.no_grad()
def score(model: nn.Module, chat: ChatTemplate, tok, examples: Sequence, max_new_tokens: int = 40) -> TaskScores:
    """Greedy answers to ``examples`` (zero-shot: the user's message only) and their exact-match rate per task."""
    was_training = model.training
    model.eval()
    prompts = [chat.render(e.messages(with_answer=False), add_generation_prompt=True).ids for e in examples]
    answers = [tok.decode(a) for a in respond(model, prompts, chat.end_id, max_new_tokens)]
    model.train(was_training)
    hits: dict[str, list[bool]] = {}
    for e, a in zip(examples, answers):
        hits.setdefault(e.task, []).append(instructions.exact_match(a, e.answer))
    return TaskScores({t: sum(h) / len(h) for t, h in hits.items()}, answers)


# --- the zoo's gpt-english-sft ---------------------------------------------------------------------------------


def sft_meta(model: nn.Module, base_meta: dict, recipe: SFTRecipe = SFT, seconds: float | None = None) -> dict:
    """The ``meta`` saved with an instruction-tuned ``gpt-english``: its (resized) config, the base model's
    tokenizer and the SFT recipe."""
    from dataclasses import asdict

    recipe_dict = asdict(recipe)
    return {"config": asdict(model.config), "tokenizer": base_meta["tokenizer"], "sft_recipe": recipe_dict,
            "base_val_loss": base_meta.get("val_loss"), "train_steps": recipe.steps, "train_seconds": seconds}


def chat_of(meta: dict):
    """``(tokenizer, ChatTemplate)`` of a saved ``gpt-english-sft``."""
    tok = load_english_tokenizer(meta)
    return tok, ChatTemplate(tok.encode, tok.decode, tok.vocab_size)


def train_gpt_english_sft(base: nn.Module, recipe: SFTRecipe = SFT, progress: bool = True,
                          device: torch.device | str | None = None) -> tuple[nn.Module, dict]:
    """Instruction-tune ``base`` (the zoo's ``gpt-english``, which the zoo passes in) as notebook 12 does: the chat
    markers added to the vocabulary, then ``sft`` on the instruction set, on ``device`` (default ``get_device()``)."""
    import copy
    import time

    tok = load_english_tokenizer(base.zoo_meta)
    data = instruction_data(tok, english_lm_data(GPT_ENGLISH), recipe)
    chat = ChatTemplate(tok.encode, tok.decode, tok.vocab_size)
    model = resize_token_embeddings(copy.deepcopy(base), chat.vocab_size).to(get_device(device))
    t0 = time.perf_counter()
    sft(model, chat, data.train, recipe, progress=progress)
    return model, sft_meta(model, base.zoo_meta, recipe, time.perf_counter() - t0)


def build_gpt_english_sft(meta: dict) -> nn.Module:
    """An untrained GPT of the shape saved in ``meta["config"]`` (the vocabulary with the chat markers)."""
    return GPT(GPTConfig(**meta["config"]))


RECIPE = Recipe(
    name="gpt-english-sft",
    description="gpt-english instruction-tuned (full SFT, 2,000 steps) into notebook 12's assistant",
    build=f"{__name__}:build_gpt_english_sft", train=f"{__name__}:train_gpt_english_sft",
    version=2, minutes_cpu=2.5, needs=("gpt-english",),
)  # fmt: skip
