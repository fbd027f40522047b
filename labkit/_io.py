"""File plumbing shared by the data sets and the zoo: atomic writes (a reader sees the old file or the whole new
one, never half of one), SHA-256 checks, checked downloads, and the classroom kit's address."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

USER_AGENT = "Mozilla/5.0 (labkit; Foundation Models Lab)"  # some hosts refuse Python's default agent


class ChecksumError(ValueError):
    """A file's SHA-256 differs from the one it must have."""


def kit_setting() -> str:
    """``$LABKIT_KIT_URL`` as set: ``""`` (unset), ``"off"``, or a kit's address ending in ``/``."""
    url = os.environ.get("LABKIT_KIT_URL", "").strip()
    if url.lower() == "off":
        return "off"
    return url.rstrip("/") + "/" if url else ""


def sha256sum(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_name)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); give it a normal file's mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # only still there if writing failed
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def download(url: str, target: str | os.PathLike, sha256: str | None = None, progress: bool = True,
             timeout: float = 30.0, desc: str = "Downloading",
             transform: Callable[[Path], None] | None = None) -> Path:
    """Stream ``url`` into a temporary file beside ``target``, check that every byte the server announced arrived,
    apply ``transform`` to the temporary file (e.g. extract an archive's member into it), check its SHA-256, and
    only then rename it to ``target``. On any failure (a cut connection, a wrong checksum) nothing is left
    behind, and an existing ``target`` is untouched. Raises OSError or ChecksumError."""
    from tqdm.auto import tqdm

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            expected = int(expected) if expected is not None else None
            received = 0
            with tqdm(total=expected, unit="B", unit_scale=True, desc=desc, disable=not progress,
                      leave=False) as bar:
                while block := response.read(1 << 16):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            if expected is not None and received != expected:
                raise OSError(f"connection closed after {received:,} of {expected:,} bytes")
        if transform is not None:
            transform(tmp)
        if sha256 is not None and (actual := sha256sum(tmp)) != sha256:
            raise ChecksumError(f"{url} gave a file with the wrong checksum: expected sha256 {sha256}, got "
                                f"{actual}. The file was not kept.")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)  # atomic: a reader sees the old state or the whole verified file
    finally:
        tmp.unlink(missing_ok=True)
    return target
