"""Named pretrained checkpoints: load from the cache, or train on demand and cache.

A notebook that needs an earlier notebook's model asks for it by name::

    model = zoo.load("gpt-shakespeare")

If the checkpoint is in ``$LABKIT_DATA_DIR/zoo/`` (an instructor's pre-seeded copy)
or in the cache, it is loaded (``weights_only=True``); otherwise the registered
recipe trains it, with a progress bar, and the result is saved atomically, so
any notebook can be opened first.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .data import cache_dir
from .train import _atomic_save

__all__ = ["Recipe", "register", "available", "path", "load", "save"]


@dataclass
class Recipe:
    """How to rebuild and how to train one named model.

    ``build(meta)`` returns an untrained model of the right shape from the saved ``meta``
    dict (config and anything else, e.g. a tokenizer's characters); ``train()`` returns
    ``(trained_model, meta)``. Both may be given as "module:function" strings so that
    registering a recipe imports nothing heavy.
    """

    name: str
    description: str
    build: Callable[[dict], nn.Module] | str
    train: Callable[[], tuple[nn.Module, dict]] | str
    version: int = 1  # bump when the recipe changes, so stale caches are not loaded
    minutes_cpu: float | None = None  # typical training time on a 2-core CPU, shown to the learner


_RECIPES: dict[str, Recipe] = {}
_BUILTIN = ("labkit.recipes:register_all", "labkit.recipes_bert:register_bert")  # modules whose recipes ship with the lab
_builtin_done = False


def _ensure_builtin() -> None:
    """Register the lab's own recipes on first use (importing them at import time would be slow)."""
    global _builtin_done
    if not _builtin_done:
        _builtin_done = True
        for ref in _BUILTIN:
            _resolve(ref)()


def register(recipe: Recipe, overwrite: bool = False) -> Recipe:
    """Make a recipe available to ``load``."""
    if recipe.name in _RECIPES and not overwrite:
        raise ValueError(f"A zoo model named {recipe.name!r} is already registered; pass overwrite=True to replace it.")
    _RECIPES[recipe.name] = recipe
    return recipe


def available() -> dict[str, str]:
    """Registered names and their descriptions."""
    _ensure_builtin()
    return {name: r.description for name, r in sorted(_RECIPES.items())}


def _resolve(fn: Callable | str) -> Callable:
    if callable(fn):
        return fn
    module, _, attr = fn.partition(":")
    return getattr(importlib.import_module(module), attr)


def _recipe(name: str) -> Recipe:
    _ensure_builtin()
    if name not in _RECIPES:
        known = ", ".join(sorted(_RECIPES)) or "(none)"
        raise KeyError(f"No zoo model named {name!r}. Known: {known}.")
    return _RECIPES[name]


def path(name: str) -> Path:
    """Where the cached checkpoint of ``name`` lives (it may not exist yet)."""
    r = _recipe(name)
    return cache_dir() / "zoo" / f"{r.name}-v{r.version}.pt"


def save(name: str, model: nn.Module, meta: dict) -> Path:
    """Cache ``model``'s state dict and ``meta`` under ``name``, atomically."""
    target = path(name)
    _atomic_save({"model": getattr(model, "_orig_mod", model).state_dict(), "meta": meta,
                  "name": name, "version": _recipe(name).version}, target)
    return target


def load(name: str, device: torch.device | str = "cpu", retrain: bool = False) -> nn.Module:
    """The trained model ``name`` in eval mode, with its saved ``meta`` dict as ``model.zoo_meta``."""
    r = _recipe(name)
    candidates = []
    if os.environ.get("LABKIT_DATA_DIR"):
        candidates.append(Path(os.environ["LABKIT_DATA_DIR"]).expanduser() / "zoo" / path(name).name)
    candidates.append(path(name))
    for candidate in ([] if retrain else candidates):
        if candidate.is_file():
            ckpt = torch.load(candidate, map_location="cpu", weights_only=True)
            model = _resolve(r.build)(ckpt["meta"])
            model.load_state_dict(ckpt["model"])
            model.zoo_meta = ckpt["meta"]
            return model.to(device).eval()
    minutes = f" (about {r.minutes_cpu:g} min on a 2-core CPU)" if r.minutes_cpu else ""
    print(f"{name!r} is not cached yet: training it now{minutes}. It is saved to {path(name)} for next time.")
    model, meta = _resolve(r.train)()
    save(name, model, meta)
    model.zoo_meta = meta
    return model.to(device).eval()
