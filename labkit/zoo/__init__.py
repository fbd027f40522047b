"""Named trained models: load a checked copy, or fetch one from a classroom's kit, or train it and keep it.

A notebook that needs an earlier notebook's model asks for it by name::

    model = zoo.load("gpt-shakespeare")

``load`` looks, in order, for a checkpoint in the cache (``<cache>/zoo/``), then in a folder an instructor
pre-seeded (``$LABKIT_DATA_DIR/zoo/``), then at a kit's address (``$LABKIT_KIT_URL``, a laptop serving the
classroom kit, or else this release's published kit), and only then trains the model with its recipe (a
progress bar; minutes on a laptop), so any notebook can be opened first.

Every checkpoint the zoo writes is listed in its folder's ``manifest.json`` with its SHA-256, its size, and
where and how long it trained; every load checks the file against it. A damaged file (truncated, a flipped
byte) is never loaded: ``load`` names it, says what to do, and goes on to the next copy, or trains a new one
into the cache, which then comes first. Training happens once even when two processes ask for the same model
at once: ``load`` holds an operating-system lock (``filelock``) on ``<checkpoint>.lock`` while it looks,
fetches or trains and saves; the other process waits, then loads the result. The lock dies with its holder.

The lab's models are the recipes of ``labkit.recipes`` (each module's ``RECIPE``), read on first use; the zoo loads
what a recipe ``needs`` and passes it to its training. For a classroom::

    python -m labkit.zoo list | build --all | verify | pack KIT.tar | unpack KIT.tar | serve KIT_DIR
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from filelock import FileLock, Timeout
from torch import nn

from .._io import atomic_write, atomic_write_text, sha256sum
from ..data import cache_dir
from ..recipes import Recipe, recipes
from .sources import MANIFEST, fetch_checkpoint

__all__ = ["Recipe", "DamagedCheckpoint", "register", "available", "recipe", "order", "path", "seeded_dir",
           "find", "check", "manifest", "load", "save", "MANIFEST"]



class DamagedCheckpoint(RuntimeError):
    """A checkpoint whose bytes are not the ones its manifest recorded, or that does not load."""


_RECIPES: dict[str, Recipe] = {}
_builtin_done = False
_verified: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime) -> checked against its manifest
_warned: set[str] = set()


def _ensure_builtin() -> None:
    """Read the lab's own recipes (``labkit.recipes``) on first use: importing them when the zoo is imported
    would be slow."""
    global _builtin_done
    if not _builtin_done:
        _builtin_done = True
        for r in recipes().values():
            _RECIPES.setdefault(r.name, r)


def register(recipe: Recipe, overwrite: bool = False) -> Recipe:
    """Make a recipe available to ``load`` (one of your own: the lab's are read from ``labkit.recipes``)."""
    _ensure_builtin()
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


def recipe(name: str) -> Recipe:
    """The registered recipe of ``name``."""
    _ensure_builtin()
    if name not in _RECIPES:
        known = ", ".join(sorted(_RECIPES)) or "(none)"
        raise KeyError(f"No zoo model named {name!r}. Known: {known}.")
    return _RECIPES[name]


_recipe = recipe  # the name the recipes' tests and older code use


def order(names: list[str] | None = None) -> list[str]:
    """``names`` (default: every model) and what they need, each after the models it needs."""
    _ensure_builtin()
    done: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in stack:
            raise ValueError(f"zoo models that need each other: {' -> '.join(stack + (name,))}")
        if name not in done:
            for dep in recipe(name).needs:
                visit(dep, stack + (name,))
            done.append(name)

    for name in names if names is not None else sorted(_RECIPES):
        visit(name, ())
    return done


def path(name: str) -> Path:
    """Where the cached checkpoint of ``name`` lives (it may not exist yet)."""
    r = recipe(name)
    return cache_dir() / "zoo" / f"{r.name}-v{r.version}.pt"


def seeded_dir() -> Path | None:
    """The instructor's pre-seeded folder of checkpoints, ``$LABKIT_DATA_DIR/zoo``, if that is set."""
    seeded = os.environ.get("LABKIT_DATA_DIR")
    return Path(seeded).expanduser() / "zoo" if seeded else None


def manifest(folder: Path) -> dict[str, dict]:
    """The entries of ``folder``'s manifest.json: file name -> {sha256, bytes, name, version, trained_on, ...}."""
    file = Path(folder) / MANIFEST
    try:
        return json.loads(file.read_text(encoding="utf-8")).get("files", {})
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise DamagedCheckpoint(f"The manifest {file} cannot be read ({e}): delete it and the checkpoints beside "
                                "it will be re-checked (or re-fetched, or retrained) on their next load.") from e


def _record(file: Path, entry: dict) -> None:
    """Add ``file``'s entry to its folder's manifest, under the manifest's own lock (several processes save)."""
    folder = file.parent
    with FileLock(folder / (MANIFEST + ".lock")):
        files = manifest(folder)
        files[file.name] = entry
        atomic_write_text(folder / MANIFEST, json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True)
                          + "\n")
    stat = file.stat()
    _verified[(str(file), stat.st_size, stat.st_mtime_ns)] = True


def check(file: Path) -> str | None:
    """Why ``file`` must not be loaded (its size or SHA-256 differs from its manifest's entry), or None. A file
    the manifest does not list (written before the zoo kept manifests) passes here; ``load`` checks that it
    loads."""
    stat = file.stat()
    key = (str(file), stat.st_size, stat.st_mtime_ns)
    if _verified.get(key):
        return None
    entry = manifest(file.parent).get(file.name)
    if entry is None:
        return None
    if stat.st_size != entry["bytes"]:
        return f"it is {stat.st_size:,} bytes where its manifest says {entry['bytes']:,} (a truncated copy?)"
    if (actual := sha256sum(file)) != entry["sha256"]:
        return f"its SHA-256 is {actual[:12]}… where its manifest says {entry['sha256'][:12]}… (a damaged copy)"
    _verified[key] = True
    return None


def _candidates(name: str) -> list[tuple[Path, str]]:
    out = [(path(name), "cache")]
    if (seeded := seeded_dir()) is not None:
        out.append((seeded / path(name).name, "pre-seeded"))
    return out


def _warn_damaged(file: Path, reason: str, what: str) -> None:
    if str(file) not in _warned:
        _warned.add(str(file))
        print(f"Not loading {file}: {reason}. {what}", flush=True)


def find(name: str) -> Path | None:
    """The checkpoint ``load(name)`` would load: the cached one, else the pre-seeded one, whichever exists and
    matches its manifest; None if neither does (``load`` would fetch or train the model)."""
    for file, where in _candidates(name):
        if file.is_file():
            reason = check(file)
            if reason is None:
                return file
            _warn_damaged(file, reason, "It is skipped; delete it, or replace it with a good copy "
                          f"({'python -m labkit.zoo verify' if where == 'cache' else 'ask for the kit again'}).")
    return None


def _trained_on(device: torch.device | None) -> str:
    if device is not None and device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device is not None and device.type == "mps":
        return "mps: Apple GPU"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def save(name: str, model: nn.Module, meta: dict, seconds: float | None = None) -> Path:
    """Cache ``model``'s state dict and ``meta`` under ``name``, atomically, and record its checksum, where it
    trained and (if given) for how many seconds in the zoo's manifest."""
    target = path(name)
    inner = getattr(model, "_orig_mod", model)
    ckpt = {"model": {k: v.detach().cpu() for k, v in inner.state_dict().items()}, "meta": meta,
            "name": name, "version": recipe(name).version}
    atomic_write(target, lambda tmp: torch.save(ckpt, tmp))
    device = next((p.device for p in inner.parameters()), None)
    _record(target, {"name": name, "version": recipe(name).version, "sha256": sha256sum(target),
                     "bytes": target.stat().st_size, "trained_on": _trained_on(device),
                     "seconds": None if seconds is None else round(seconds, 1), "torch": torch.__version__,
                     "date": time.strftime("%Y-%m-%d")})
    return target


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


def _load_file(r: Recipe, file: Path, device, source: str) -> nn.Module | None:
    """The model in ``file``, or None (after saying why) if the file does not load."""
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
        model = _resolve(r.build)(ckpt["meta"])
        model.load_state_dict(ckpt["model"])
    except Exception as e:  # noqa: BLE001 - a damaged file can fail in torch.load, the pickle or the state dict
        _warn_damaged(file, f"it does not load ({type(e).__name__}: {str(e)[:200]})",
                      "It is skipped; delete it, or replace it with a good copy.")
        return None
    if source == "cache" and file.name not in manifest(file.parent):  # from before the zoo kept manifests
        _record(file, {"name": r.name, "version": r.version, "sha256": sha256sum(file),
                       "bytes": file.stat().st_size, "trained_on": None, "seconds": None})
    model.zoo_meta = ckpt["meta"]
    model.zoo_source = source  # "cache", "pre-seeded", "downloaded" or "trained"
    model.zoo_file = file
    return model.to(device).eval()


def _load_found(r: Recipe, device) -> nn.Module | None:
    """The first copy (cache, then pre-seeded) that matches its manifest and loads; None if there is none."""
    for file, where in _candidates(r.name):
        if not file.is_file():
            continue
        if (reason := check(file)) is not None:
            _warn_damaged(file, reason, "It is skipped; delete it, or replace it with a good copy.")
        elif (model := _load_file(r, file, device, where)) is not None:
            return model
    return None


def load(name: str, device: torch.device | str = "cpu", retrain: bool = False,
         train: Callable[[], tuple[nn.Module, dict]] | None = None) -> nn.Module:
    """The trained model ``name`` in eval mode, with its saved ``meta`` dict as ``model.zoo_meta`` and where it
    came from as ``model.zoo_source`` ("cache", "pre-seeded", "downloaded" or "trained").

    From a checked copy (cache, then pre-seeded), else from a kit's address, else trained by its recipe (or by
    ``train``, e.g. a notebook's own training loop with a live plot, which must return what the recipe's does)
    and cached. ``retrain=True`` always trains. A process that finds another one training the same model waits
    for it and loads its result."""
    r = recipe(name)
    if not retrain and (model := _load_found(r, device)) is not None:
        return model
    with _lock(path(name), name):
        if not retrain:
            if (model := _load_found(r, device)) is not None:  # trained by another process while we waited
                return model
            if (entry := fetch_checkpoint(name, path(name))) is not None:
                _record(path(name), entry)
                if model := _load_file(r, path(name), device, "downloaded"):
                    return model
        minutes = f" (about {r.minutes_cpu:g} min on a 2-core CPU)" if r.minutes_cpu else ""
        if retrain and path(name).is_file():
            print(f"Training {name!r} again{minutes}; it replaces {path(name)}.", flush=True)
        else:
            print(f"{name!r} is not cached yet: training it now{minutes}. It is saved to {path(name)} for next time.",
                  flush=True)
        # the recipe's training gets the models it starts from, loaded (or trained) first; a notebook's own
        # ``train`` has them already
        needed = [] if train is not None else [load(dep) for dep in r.needs]
        t0 = time.perf_counter()
        model, meta = train(*needed) if train is not None else _resolve(r.train)(*needed)
        file = save(name, model, meta, seconds=time.perf_counter() - t0)
    model.zoo_meta = meta
    model.zoo_source = "trained"
    model.zoo_file = file
    return model.to(device).eval()
