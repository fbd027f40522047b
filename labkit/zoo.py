"""Named pretrained checkpoints: load from the cache, or train on demand and cache.

A notebook that needs an earlier notebook's model asks for it by name::

    model = zoo.load("gpt-shakespeare")

If the checkpoint is in ``$LABKIT_DATA_DIR/zoo/`` (an instructor's pre-seeded copy)
or in the cache, it is loaded (``weights_only=True``); ``find(name)`` says which
file that is. Otherwise the registered recipe trains it, with a progress bar, and
the result is saved atomically, so any notebook can be opened first.

Training happens once even when two processes ask for the same uncached model
(two notebooks at once, two learners sharing a folder): ``load`` holds a lock on
``<checkpoint>.lock`` beside the checkpoint while it checks the cache, trains and
saves, and the second process waits, then loads what the first one saved. The lock
is the operating system's (``filelock``, on Linux, macOS and Windows), released when
its holder ends, however it ends.

The built-in models are the recipes of ``labkit.recipes`` (``RECIPE_MODULES``),
registered on first use.
"""

from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from filelock import FileLock, Timeout
from torch import nn

from ._io import atomic_write
from .data import cache_dir

__all__ = ["Recipe", "register", "available", "path", "find", "load", "save"]


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
_builtin_done = False


def _ensure_builtin() -> None:
    """Register the lab's own recipes (``labkit.recipes.RECIPE_MODULES``) on first use: importing
    them when the zoo is imported would be slow."""
    global _builtin_done
    if not _builtin_done:
        _builtin_done = True
        from . import recipes

        recipes.register_all()


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


def find(name: str) -> Path | None:
    """The checkpoint ``load(name)`` would load: a pre-seeded copy in ``$LABKIT_DATA_DIR/zoo/``,
    else the cached one; None if there is neither (``load`` would train the model)."""
    candidates = []
    if os.environ.get("LABKIT_DATA_DIR"):
        candidates.append(Path(os.environ["LABKIT_DATA_DIR"]).expanduser() / "zoo" / path(name).name)
    candidates.append(path(name))
    return next((c for c in candidates if c.is_file()), None)


def save(name: str, model: nn.Module, meta: dict) -> Path:
    """Cache ``model``'s state dict and ``meta`` under ``name``, atomically."""
    target = path(name)
    ckpt = {"model": getattr(model, "_orig_mod", model).state_dict(), "meta": meta,
            "name": name, "version": _recipe(name).version}
    return atomic_write(target, lambda tmp: torch.save(ckpt, tmp))


@contextmanager
def _lock(target: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on ``target``'s ``.lock`` file; say so if another process holds it.

    The lock is the operating system's (``filelock``: flock on Linux and macOS, msvcrt on Windows), so it dies
    with its holder: a kernel killed while training leaves the file behind but not the lock, and the next
    ``load`` takes it at once."""
    lock_path = target.with_name(target.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Another process is training {name!r}; waiting for it to finish...", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _load_file(r: Recipe, file: Path, device) -> nn.Module:
    ckpt = torch.load(file, map_location="cpu", weights_only=True)
    model = _resolve(r.build)(ckpt["meta"])
    model.load_state_dict(ckpt["model"])
    model.zoo_meta = ckpt["meta"]
    return model.to(device).eval()


def load(name: str, device: torch.device | str = "cpu", retrain: bool = False) -> nn.Module:
    """The trained model ``name`` in eval mode, with its saved ``meta`` dict as ``model.zoo_meta``.

    Loaded from ``find(name)``, or trained by its recipe and cached (``retrain=True`` always trains);
    a process that finds another one training the same model waits for it and loads its result."""
    r = _recipe(name)
    if not retrain and (found := find(name)) is not None:
        return _load_file(r, found, device)
    with _lock(path(name), name):
        if not retrain and (found := find(name)) is not None:  # trained by another process while we waited
            return _load_file(r, found, device)
        minutes = f" (about {r.minutes_cpu:g} min on a 2-core CPU)" if r.minutes_cpu else ""
        print(f"{name!r} is not cached yet: training it now{minutes}. It is saved to {path(name)} for next time.")
        model, meta = _resolve(r.train)()
        save(name, model, meta)
    model.zoo_meta = meta
    return model.to(device).eval()
