"""The zoo's ``gpt-english``: a small BPE GPT pretrained on everyday English, the base model of notebook 12.

The text is the English side of the Tatoeba English-French pairs (the sentences notebook 07 translates and
``bert-english`` reads), each distinct sentence once, shuffled with a fixed seed, with the same held-out
split as ``bert-english`` (``split_sentences``: its first ``n_val`` are never trained on). A byte-level
BPE tokenizer is trained on the training sentences; they are written one per line, in paragraphs of six
neighbours in the file (which is sorted, so neighbours share words: "Why are you sitting there?", "Why are
you so busy today?"), paragraphs in a shuffled order, into one stream of text; and the GPT learns to predict the next token of random windows of the stream, as nanoGPT does with
OpenWebText, with the lab's CPU recipe (rotary positions, ReLU^2, zero-initialised output projections, Muon):

    recipe = GPT_ENGLISH
    data = english_lm_data(recipe)            # tokenizer, the train/val streams and sentences
    model, meta = train_gpt_english(recipe)   # what ``zoo.load("gpt-english")`` runs once
    tok = load_english_tokenizer(meta)

Why a new model rather than ``gpt-shakespeare``: notebook 12 teaches it to follow instructions about real
sentences (repeat, reverse, count their words, ...). That needs a vocabulary of words rather than
characters (a sentence is ~10 tokens, not one per character), a context that holds an instruction and its answer
(128 tokens), and modern everyday English. And it needs text that repeats itself within the context:
that is where a model learns to copy (induction heads, notebook 11). Measured on a 2-core CPU (2026-12-01),
as the loss per token on a held-out sentence the first and the second time it appears in a row, and after
the same 400 steps of instruction tuning:

    pretraining text                                     1st -> 2nd copy   repeat   last word
    every sentence once, shuffled                        3.05 -> 2.97      0.00     0.04-0.08
    paragraph=6 (neighbours in the sorted file)          3.16 -> 2.76      0.02     0.22
    + keep_duplicates, muon_weight_decay=0.5 (default)   3.27 -> 2.11      0.20     0.16

The default pretrains in ~170 s (500 steps, ~12k tokens/s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import NamedTuple

import torch

from ..data import load_fra_eng
from ..device import get_device
from ..models.gpt import GPT, GPTConfig
from ..tokenizers import BPETokenizer
from . import Recipe
from .bert_english import english_sentences, split_sentences
from .gpt_shakespeare import LMRecipe, build_lm, evaluate_lm, train_lm

__all__ = ["EnglishLMRecipe", "GPT_ENGLISH", "EnglishLMData", "english_lm_data", "build_gpt_english",
           "load_english_tokenizer", "train_gpt_english", "RECIPE"]


@dataclass(frozen=True)
class EnglishLMRecipe(LMRecipe):
    """``LMRecipe`` (the model and the optimisation) plus the data and the tokenizer."""
    vocab_size: int = 2048  # byte-level BPE vocabulary (256 bytes + merges)
    n_val: int = 3000  # held-out sentences, the same ones as bert-english's (split seed 0)
    paragraph: int = 1  # >1: write runs of this many consecutive sentences of the file (which is sorted, so
    # neighbours share words) as one paragraph, paragraphs in a shuffled order: text that repeats itself
    keep_duplicates: bool = False  # with paragraph > 1: keep the file's repeated English lines (a sentence with
    # several French translations appears once per translation), so paragraphs repeat sentences verbatim


GPT_ENGLISH = EnglishLMRecipe(
    n_layers=4, n_heads=4, d_model=128, context_length=128,
    pos_emb="rope", mlp="relu2", tie_weights=False, bias=False, dropout=0.0, zero_init=True,
    optimizer="muon", steps=500, batch_size=32, lr=3e-2, muon_lr=0.025, muon_momentum=0.9,
    betas=(0.9, 0.99), weight_decay=0.1, warmup_steps=50, min_lr_ratio=0.1,
    grad_clip=1.0, seed=1337, paragraph=6, keep_duplicates=True, muon_weight_decay=0.5,
)  # fmt: skip


class EnglishLMData(NamedTuple):
    tokenizer: BPETokenizer
    train: torch.Tensor  # the training sentences' stream of ids (1-D)
    val: torch.Tensor  # the held-out sentences' stream of ids (1-D)
    train_text: list[str]
    val_text: list[str]


def _stream(tok: BPETokenizer, sentences: list[str]) -> torch.Tensor:
    return torch.tensor([t for ids in tok.encode_batch([s + "\n" for s in sentences]) for t in ids],
                        dtype=torch.long)


@lru_cache(maxsize=2)
def english_lm_data(recipe: EnglishLMRecipe = GPT_ENGLISH) -> EnglishLMData:
    """Split the sentences (as ``bert-english`` does), train the tokenizer on the training ones, and encode
    both parts as streams of one sentence per line. Cached per recipe: treat the result as read-only."""
    sentences = english_sentences()
    train_text, val_text = split_sentences(sentences, recipe.n_val, seed=0)
    tok = BPETokenizer.train([s + "\n" for s in train_text], recipe.vocab_size)
    stream_text = train_text
    if recipe.paragraph > 1:
        import random

        held = set(val_text)
        if recipe.keep_duplicates:
            in_order = [en for en, _ in load_fra_eng() if en not in held]
        else:
            in_order = [s for s in sentences if s not in held]
        paras = [in_order[i : i + recipe.paragraph] for i in range(0, len(in_order), recipe.paragraph)]
        random.Random(recipe.seed).shuffle(paras)
        stream_text = [s for p in paras for s in p]
    return EnglishLMData(tok, _stream(tok, stream_text), _stream(tok, val_text), train_text, val_text)


def build_gpt_english(meta: dict) -> GPT:
    """An untrained GPT of the shape saved in ``meta["config"]``."""
    return GPT(GPTConfig(**meta["config"]))


def load_english_tokenizer(meta: dict) -> BPETokenizer:
    """The tokenizer saved in ``meta`` (its ``tokenizer.json`` text)."""
    from tokenizers import Tokenizer

    return BPETokenizer(Tokenizer.from_str(meta["tokenizer"]))


def train_gpt_english(recipe: EnglishLMRecipe = GPT_ENGLISH, progress: bool = True,
                      device: torch.device | str | None = None) -> tuple[GPT, dict]:
    """Pretrain ``gpt-english`` on ``device`` (default ``get_device()``); ``meta`` holds the config, the tokenizer,
    the recipe and the held-out loss."""
    data = english_lm_data(recipe)
    model = build_lm(recipe, data.tokenizer.vocab_size).to(get_device(device))
    result = train_lm(model, data.train, recipe, progress=progress)
    recipe_dict = asdict(recipe)
    recipe_dict["betas"] = list(recipe.betas)
    meta = {"config": asdict(model.config), "tokenizer": data.tokenizer.hf_tokenizer.to_str(),
            "recipe": recipe_dict, "val_loss": evaluate_lm(model, data.val, recipe.context_length),
            "train_steps": result.steps, "train_seconds": result.seconds}
    return model, meta


RECIPE = Recipe(
    name="gpt-english",
    description="BPE GPT (4 layers, 4 heads, 128 wide, 128-token context, 2,048-token vocabulary) "
                "pretrained on the English Tatoeba sentences with the lab's CPU recipe",
    build=f"{__name__}:build_gpt_english", train=f"{__name__}:train_gpt_english",
    version=2, minutes_cpu=3,
)  # fmt: skip
