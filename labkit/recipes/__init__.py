"""Training recipes for the zoo's models: one module per model, each with its recipe dataclass,
data, build, train and ``register`` (which makes the model known to ``labkit.zoo``).

``gpt_shakespeare``: the character-level GPT (recipes ``LAB`` and ``NANOGPT``, ``train_lm``).
``bert_english``: the small BERT pretrained by masked language modelling.
``seq2seq_fra``: the English→French encoder-decoder transformer (notebook 07).
``gpt_icl``: the small GPT that learns permutation tasks in context (notebook 11).
``gpt_english``: the small BPE GPT of everyday English, notebook 12's base model.
``ddpm_digits``: the class-conditional diffusion model of 8x8 digits (notebook 13).
``clip_digits``: the small CLIP of captioned 8x8 digits (notebook 14).
``ddpm_text_digits``: the caption-conditioned diffusion model of 8x8 digits (notebook 14).
``assistant``: ``gpt-english`` instruction-tuned into notebook 12's assistant (``gpt-english-sft``).

``RECIPE_MODULES`` lists them; ``register_all()`` registers every one, and is how the
zoo learns its built-in models. A new zoo model is a new module here with a
``register()``, named in ``RECIPE_MODULES``. The GPT recipe's names are also
importable from here (``from labkit.recipes import LAB, build_model, train_lm``);
optimizers are in ``labkit.optim``, batching helpers in ``labkit.data``, metrics
in ``labkit.evaluate``.
"""

from __future__ import annotations

import importlib

from . import assistant, bert_english, clip_digits, ddpm_digits, ddpm_text_digits, gpt_english, gpt_icl, gpt_shakespeare, seq2seq_fra
from .gpt_shakespeare import (
    LAB,
    NANOGPT,
    LMRecipe,
    MuonAdamW,
    TrainResult,
    batches,
    build_gpt_shakespeare,
    build_model,
    build_optimizer,
    evaluate_lm,
    gpt_config,
    shakespeare_data,
    split_params,
    train_config,
    train_gpt_shakespeare,
    train_lm,
    zoo_meta,
)

RECIPE_MODULES = ("gpt_shakespeare", "bert_english", "seq2seq_fra", "gpt_icl", "gpt_english", "ddpm_digits", "clip_digits", "ddpm_text_digits", "assistant")  # labkit.recipes.<name>, each with a register()

__all__ = ["RECIPE_MODULES", "register_all", "gpt_shakespeare", "bert_english", "seq2seq_fra", "gpt_icl", "gpt_english", "ddpm_digits", "clip_digits", "ddpm_text_digits", "assistant", *gpt_shakespeare.__all__]
__all__.remove("register")


def register_all() -> None:
    """Register every zoo model of ``RECIPE_MODULES`` with ``labkit.zoo`` (safe to call more than once)."""
    for name in RECIPE_MODULES:
        importlib.import_module(f"{__name__}.{name}").register()
