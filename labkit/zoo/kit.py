"""The classroom kit: every data set and every zoo model in one checked folder or archive (``labkit.zoo.sources``
is where a learner's zoo fetches a missing model from).

A kit is a folder (or a ``.tar`` of it)::

    KIT/
      kit.json              what is inside: the lab's version, and every file with its SHA-256 and size
      tinyshakespeare.txt   the data sets, under their registry names (data/README.md)
      ...
      zoo/
        manifest.json       every checkpoint with its SHA-256, size, and where and how long it trained
        gpt-shakespeare-v3.pt ...

``LABKIT_DATA_DIR=KIT`` makes every notebook start from it (the data layer and the zoo both look there);
``unpack`` copies it into the cache instead, so that nothing needs setting. Served over HTTP (``serve``, or any
static file server), its address in ``LABKIT_KIT_URL`` lets each learner's zoo fetch what is missing, checked
against the manifest, falling back to training only when the address does not answer. Without
``LABKIT_KIT_URL``, the zoo tries this release's published kit (the files attached to the GitHub release
``v<version>`` of the repository the package names); ``LABKIT_KIT_URL=off`` turns fetching off.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from pathlib import Path

from .. import zoo
from .._io import ChecksumError, atomic_write_text, sha256sum
from ..data import REGISTRY, cache_dir, fetch
from .sources import RELEASE_MANIFEST

__all__ = ["KIT_INDEX", "build", "verify", "pack", "unpack", "serve"]

KIT_INDEX = "kit.json"


# ---- for the instructor: build, verify, pack, unpack, serve ------------------------------------------------------

def build(names: list[str] | None = None, retrain: bool = False, progress: bool = True) -> list[tuple[str, float]]:
    """Train (or load) ``names`` and everything they need, in dependency order; (name, seconds) for each."""
    from tqdm.auto import tqdm

    done = []
    todo = zoo.order(names)
    with tqdm(todo, desc="zoo models", unit="model", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            zoo.load(name, retrain=retrain)
            done.append((name, time.perf_counter() - t0))
    return done


def verify(folder: Path | None = None) -> list[tuple[Path, str | None]]:
    """Each checkpoint the zoo would use (or each in ``folder``) and why it is bad (None: it matches)."""
    if folder is not None:
        files = sorted(Path(folder).glob("*.pt"))
    else:
        files = [f for name in zoo.available() for f, _ in zoo._candidates(name) if f.is_file()]
    return [(f, zoo.check(f) if f.name in zoo.manifest(f.parent) else "not listed in its manifest")
            for f in files]


def _file_entry(file: Path) -> dict:
    return {"sha256": sha256sum(file), "bytes": file.stat().st_size}


def pack(out: Path, names: list[str] | None = None) -> Path:
    """Write the kit (every data set and the checkpoints of ``names``, default every model) to ``out``: a folder,
    or a ``.tar`` archive when ``out`` ends with .tar. The models must be built (``build``) first."""
    from .. import __version__

    out = Path(out)
    names = zoo.order(names)
    missing = [n for n in names if zoo.find(n) is None]
    if missing:
        raise FileNotFoundError(f"Not built yet: {', '.join(missing)}. Run `python -m labkit.zoo build "
                                f"{' '.join(missing)}` first (or `build --all`).")
    folder = out.with_suffix("") if out.suffix == ".tar" else out
    (folder / "zoo").mkdir(parents=True, exist_ok=True)
    index: dict = {"lab_version": __version__, "files": {}}
    for ds in REGISTRY.values():
        shutil.copy2(fetch(ds.name), folder / ds.filename)
        index["files"][ds.filename] = _file_entry(folder / ds.filename)
    models = {}
    for name in names:
        source = zoo.find(name)
        target = folder / "zoo" / source.name
        shutil.copy2(source, target)
        entry = zoo.manifest(source.parent).get(source.name) or {"name": name, "version": zoo.recipe(name).version}
        models[source.name] = {**entry, **_file_entry(target)}
        index["files"]["zoo/" + source.name] = _file_entry(target)
    manifest_text = json.dumps({"format": 1, "files": models}, indent=1, sort_keys=True) + "\n"
    atomic_write_text(folder / "zoo" / zoo.MANIFEST, manifest_text)
    atomic_write_text(folder / RELEASE_MANIFEST, manifest_text)  # the name it has among a release's files
    atomic_write_text(folder / KIT_INDEX, json.dumps(index, indent=1, sort_keys=True) + "\n")
    if out.suffix != ".tar":
        return folder
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w") as tar:
        tar.add(folder, arcname=folder.name)
    os.replace(tmp, out)
    return out


def _check_kit(folder: Path) -> dict:
    index_file = folder / KIT_INDEX
    if not index_file.is_file():
        raise FileNotFoundError(f"{folder} is not a kit: it has no {KIT_INDEX} (make one with "
                                "`python -m labkit.zoo pack`).")
    index = json.loads(index_file.read_text())
    for rel, entry in index["files"].items():
        file = folder / rel
        if not file.is_file():
            raise FileNotFoundError(f"The kit lacks {rel}: copy the whole kit again.")
        if file.stat().st_size != entry["bytes"] or sha256sum(file) != entry["sha256"]:
            raise ChecksumError(f"The kit's {rel} is damaged (its size or SHA-256 differs from {KIT_INDEX}): "
                                "copy the kit again, or ask for a new one.")
    return index


def unpack(archive: Path, to: Path | None = None) -> Path:
    """Check a kit (``.tar`` or folder) file by file, then copy its data sets and checkpoints into ``to``
    (default: this machine's cache), each one atomically, so that every notebook starts from them."""
    archive, to = Path(archive), Path(to) if to is not None else cache_dir()
    if archive.is_dir():
        folder, cleanup = archive, None
    else:
        cleanup = Path(to) / f".unpack-{os.getpid()}"
        with tarfile.open(archive) as tar:
            try:
                tar.extractall(cleanup, filter="data")  # no paths outside the folder, no links, no devices
            except TypeError:  # a Python older than 3.10.12 / 3.11.4: check the members ourselves
                bad = [m.name for m in tar.getmembers() if not (m.isfile() or m.isdir()) or m.name.startswith("/")
                       or ".." in Path(m.name).parts]
                if bad:
                    raise ValueError(f"{archive} is not a kit: it holds {bad[:3]}") from None
                tar.extractall(cleanup)
        folder = next(p for p in cleanup.iterdir() if (p / KIT_INDEX).is_file())
    try:
        index = _check_kit(folder)
        models = zoo.manifest(folder / "zoo")
        for rel in index["files"]:
            target = to / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.partial")
            shutil.copyfile(folder / rel, tmp)
            os.replace(tmp, target)
            if rel.startswith("zoo/"):
                zoo._record(target, models.get(target.name, index["files"][rel]))
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
    return to


def serve(folder: Path, port: int = 8000, host: str = "0.0.0.0") -> None:
    """Serve a kit folder over HTTP (a plain static file server) until interrupted; learners set
    ``LABKIT_KIT_URL=http://<this machine's address>:<port>/``."""
    import functools
    import socket
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    _check_kit(Path(folder))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    with ThreadingHTTPServer((host, port), handler) as server:
        try:
            address = socket.gethostbyname(socket.gethostname())
        except OSError:
            address = "<this machine's address>"
        print(f"Serving the kit {folder} on port {port}. On each learner's machine:\n"
              f"    export LABKIT_KIT_URL=http://{address}:{port}/      (Windows: set LABKIT_KIT_URL=...)\n"
              "Press Ctrl+C to stop.", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
