"""The zoo's models, one module each: how to build one and how to train it, as data.

Each module declares ``RECIPE``, a ``Recipe``: the model's name, a description, its version, its ``build(meta)`` and
``train(*needed)`` functions (named as "module:function", so that reading the table imports nothing heavy), a
typical training time on a 2-core CPU, and the other zoo models its training starts from (``needs``: the zoo loads
them and passes them to ``train``, in that order). The recipes know nothing of the zoo;
``labkit.zoo`` reads ``recipes()`` and does the loading, training, caching and checking.

``gpt_shakespeare``: the character-level GPT of notebook 08.
``seq2seq_fra``: the English→French encoder-decoder of notebook 07.
``bert_english``: the small BERT of notebook 09, pretrained by masked language modelling.
``gpt_icl``: the attention-only GPT that learns permutation tasks in context (notebook 11).
``gpt_english``: the small BPE GPT of everyday English, notebook 12's base model.
``assistant``: ``gpt-english`` instruction-tuned into notebook 12's assistant (``gpt-english-sft``).
``ddpm_digits``: the class-conditional diffusion model of 8x8 digits (notebook 13).
``clip_digits``: the small CLIP of captioned 8x8 digits (notebook 14).
``ddpm_text_digits``: the caption-conditioned diffusion model of 8x8 digits (notebook 14).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["Recipe", "RECIPE_MODULES", "recipes", "parse_overrides"]

RECIPE_MODULES = ("gpt_shakespeare", "seq2seq_fra", "bert_english", "gpt_icl", "gpt_english", "assistant",
                  "ddpm_digits", "clip_digits", "ddpm_text_digits")


@dataclass(frozen=True)
class Recipe:
    """How to rebuild and how to train one named model.

    ``build(meta)`` returns an untrained model of the right shape from the saved ``meta`` dict (config and anything
    else, e.g. a tokenizer's characters); ``train(*needed)`` returns ``(trained_model, meta)``, given the models
    named in ``needs``, in that order. Both may be "module:function" strings."""

    name: str
    description: str
    build: Callable | str
    train: Callable | str
    version: int = 1  # bump when the recipe changes, so stale caches are not loaded
    minutes_cpu: float | None = None  # typical training time on a 2-core CPU, shown to the learner
    needs: tuple[str, ...] = ()  # other zoo models its training starts from


def recipes() -> dict[str, Recipe]:
    """Every module's ``RECIPE``, by model name."""
    found = {}
    for module in RECIPE_MODULES:
        recipe = importlib.import_module(f"{__name__}.{module}").RECIPE
        found[recipe.name] = recipe
    return found


def parse_overrides(recipe, items: list[str]):
    """``recipe`` (a dataclass) with ``name=value`` overrides, each value converted to the field's type; a ValueError
    names a wrong one."""
    fields = {f.name: f for f in dataclasses.fields(recipe)}
    changes = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"{item!r}: expected name=value with name one of {', '.join(sorted(fields))}")
        current = getattr(recipe, name)
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{item!r}: {name} is true or false")
            changes[name] = value.lower() in ("true", "1")
        elif current is None or isinstance(current, (int, float, str)):
            kind = type(current) if current is not None else float
            try:
                changes[name] = kind(value) if value.lower() != "none" else None
            except ValueError:
                raise ValueError(f"{item!r}: {name} must be a {kind.__name__}") from None
        else:
            changes[name] = tuple(float(v) for v in value.split(","))
    return dataclasses.replace(recipe, **changes)
