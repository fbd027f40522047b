"""Tokenizers: text in, integer ids out, and back.

Three tokenizers: the two that notebook 01 builds, and notebook 14's word-level one:

* ``CharTokenizer``: one id per character, the vocabulary being the characters
  of a training text (65 for Tiny Shakespeare).
* ``BPETokenizer``: byte-level byte-pair encoding trained with the Hugging Face
  ``tokenizers`` library (the GPT-2 recipe). Every text round-trips exactly,
  ``decode(encode(s)) == s``, because any byte has a token. ``merges`` and
  ``encode_steps`` show the learned merges at work, with a merge loop written
  out by hand that gives the library's own segmentation.

* ``WordTokenizer``: one id per word of a small closed vocabulary (notebook 14's
  captions), with ``<bos>``/``<eos>`` around every text; a word outside the
  vocabulary is an ``UnknownWordError`` that names it and suggests known ones.

All three save to and load from a JSON file.
"""

from __future__ import annotations

import codecs
import difflib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from ._io import atomic_write_text as _atomic_write_text

__all__ = ["CharTokenizer", "BPETokenizer", "WordTokenizer", "UnknownWordError"]

# Ready-made lists of special tokens for the models in the lab.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GPT_SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>")



def _describe_char(ch: str) -> str:
    name = unicodedata.name(ch, "unnamed")
    return f"{ch!r} (U+{ord(ch):04X} {name})"


# ---------------------------------------------------------------------------
# Character tokenizer
# ---------------------------------------------------------------------------


class CharTokenizer:
    """One token per character; ids follow the sorted characters.

    ``CharTokenizer.from_text(text)`` takes the distinct characters of ``text``.
    By default a character outside the vocabulary is an error (``ValueError``
    naming it); pass ``unk="?"`` (any single character) to map unknown
    characters to that character's id instead (the ``unk`` character is added
    to the vocabulary if the text lacks it).
    """

    def __init__(self, chars: Iterable[str], unk: str | None = None):
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"CharTokenizer needs single characters, got {bad[:5]!r}")
        if unk is not None:
            if not isinstance(unk, str) or len(unk) != 1:
                raise ValueError(f"unk must be a single character, got {unk!r}")
            chars.append(unk)
        self.chars: list[str] = sorted(set(chars))
        if not self.chars:
            raise ValueError("CharTokenizer needs at least one character (was the text empty?)")
        self.unk = unk
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.chars)}  # string to id
        self.itos: dict[int, str] = dict(enumerate(self.chars))  # id to string
        self.unk_id = None if unk is None else self.stoi[unk]

    @classmethod
    def from_text(cls, text: str, unk: str | None = None) -> "CharTokenizer":
        """Build the vocabulary from the distinct characters of ``text``."""
        return cls(set(text), unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk={self.unk!r})"

    def encode(self, s: str) -> list[int]:
        """Ids of the characters of ``s``."""
        stoi = self.stoi
        try:
            return [stoi[c] for c in s]
        except KeyError:
            pass
        if self.unk_id is not None:
            return [stoi.get(c, self.unk_id) for c in s]
        pos, ch = next((i, c) for i, c in enumerate(s) if c not in stoi)
        raise ValueError(
            f"character {_describe_char(ch)} at position {pos} is not in this tokenizer's "
            f"vocabulary of {self.vocab_size} characters. Rebuild the tokenizer with "
            f"CharTokenizer.from_text(text) from a text that contains it, or build it with "
            f"unk='?' to map unknown characters to '?'."
        )

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids (ints or a 1-D tensor)."""
        itos = self.itos
        out = []
        for i in ids:
            i = int(i)
            if i not in itos:
                raise ValueError(f"id {i} is out of range for a vocabulary of {self.vocab_size} (0..{self.vocab_size - 1})")
            out.append(itos[i])
        return "".join(out)

    def save(self, path: str | os.PathLike) -> None:
        """Save the vocabulary as JSON (atomically)."""
        data = {"type": "CharTokenizer", "version": 1, "chars": self.chars, "unk": self.unk}
        _atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        """Load a tokenizer saved with ``save``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("type") != "CharTokenizer":
            raise ValueError(f"{path} does not hold a CharTokenizer (type={data.get('type')!r})")
        return cls(data["chars"], unk=data.get("unk"))


# ---------------------------------------------------------------------------
# Byte-level BPE tokenizer
# ---------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to printable characters ("Ġ" is a space)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_TO_CHAR = _bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _hex_bytes(err: UnicodeDecodeError) -> tuple[str, int]:
    # a token holding part of a character's UTF-8 bytes shows them as <0xC3>
    return "".join(f"<0x{b:02X}>" for b in err.object[err.start:err.end]), err.end


codecs.register_error("labkit_hexbytes", _hex_bytes)


def _require_tokenizers():
    try:
        import tokenizers  # noqa: F401
    except ImportError as e:  # pragma: no cover - a dependency of labkit
        raise ImportError("BPETokenizer needs the Hugging Face 'tokenizers' package: pip install tokenizers") from e
    return tokenizers


class BPETokenizer:
    """Byte-level BPE (as in GPT-2) trained with the Hugging Face ``tokenizers`` library.

    Train with ``BPETokenizer.train(texts, vocab_size)``; the vocabulary holds
    the 256 byte tokens, the special tokens and one token per learned merge.
    """

    def __init__(self, tokenizer):
        """Wrap a ``tokenizers.Tokenizer`` (use ``train`` or ``load`` to make one)."""
        self._tok = tokenizer
        self._merges: list[tuple[str, str]] | None = None
        self._ranks: dict[tuple[str, str], int] | None = None

    # -- construction ------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        min_frequency: int = 2,
        show_progress: bool = False,
    ) -> "BPETokenizer":
        """Learn merges from ``texts`` (one string, or an iterable of strings) until
        the vocabulary has ``vocab_size`` tokens (fewer if the text runs out of pairs
        seen ``min_frequency`` times). Special tokens take the first ids, in order."""
        tk = _require_tokenizers()
        from tokenizers import decoders, models, pre_tokenizers, trainers

        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens has duplicates: {special_tokens}")
        min_size = 256 + len(special_tokens)
        if vocab_size < min_size:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: a byte-level BPE vocabulary holds the 256 byte "
                f"tokens plus {len(special_tokens)} special tokens, so it needs at least {min_size} "
                f"(and more to learn any merges)"
            )
        if isinstance(texts, str):
            texts = texts.splitlines(keepends=True)
        tok = tk.Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    def save(self, path: str | os.PathLike) -> None:
        """Save as a Hugging Face ``tokenizer.json`` (written to a temp file, then renamed)."""
        _atomic_write_text(path, self._tok.to_str(pretty=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Load a tokenizer saved with ``save`` (any byte-level BPE ``tokenizer.json``)."""
        tk = _require_tokenizers()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        return cls(tk.Tokenizer.from_file(str(path)))

    @property
    def hf_tokenizer(self):
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    # -- vocabulary --------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special_tokens={self.special_tokens})"

    def get_vocab(self) -> dict[str, int]:
        """Token string (byte-level form, "Ġ" for a space) to id."""
        return self._tok.get_vocab(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """Id of a token in its byte-level form (e.g. ``"Ġthe"`` or ``"[PAD]"``), or None."""
        return self._tok.token_to_id(token)

    def id_to_token(self, id: int) -> str | None:
        """Byte-level form of the token with this id, or None."""
        return self._tok.id_to_token(int(id))

    @property
    def special_tokens(self) -> list[str]:
        """Special tokens, in id order."""
        return [t.content for _, t in sorted(self._tok.get_added_tokens_decoder().items())]

    @property
    def special_ids(self) -> dict[str, int]:
        """Special token to id, e.g. ``{"[PAD]": 0, "[UNK]": 1, ...}``."""
        return {t.content: i for i, t in sorted(self._tok.get_added_tokens_decoder().items())}

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The learned merges in the order they were learned (= priority), byte-level form."""
        if self._merges is None:
            model = json.loads(self._tok.to_str())["model"]
            merges = []
            for m in model.get("merges", []):
                if isinstance(m, str):  # older tokenizers versions write "a b"
                    a, b = m.split(" ")
                else:
                    a, b = m
                merges.append((a, b))
            self._merges = merges
            self._ranks = {pair: r for r, pair in enumerate(merges)}
        return self._merges

    # -- encoding ----------------------------------------------------------

    def encode(self, s: str) -> list[int]:
        """Token ids of ``s``. Special-token strings in ``s`` become their special ids."""
        return self._tok.encode(s, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for many texts (in parallel)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of a sequence of ids (ints or a 1-D tensor); special tokens are
        kept by default so that ``decode(encode(s)) == s``."""
        ids = [int(i) for i in ids]
        n = self.vocab_size
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"ids {bad[:5]} are out of range for a vocabulary of {n} (0..{n - 1})")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def tokens(self, s: str, raw: bool = False) -> list[str]:
        """The tokens of ``s`` as strings, for printing and plots.

        Readable by default: each token's own text (``" the"``); a token that
        holds only part of a character's UTF-8 bytes shows them as ``"<0xC3>"``. ``raw=True``
        gives the byte-level vocabulary form (``"Ġthe"``)."""
        toks = self._tok.encode(s, add_special_tokens=False).tokens
        if raw:
            return toks
        return [self.token_text(t) for t in toks]

    def token_text(self, token: str) -> str:
        """Readable text of one byte-level token string (``"Ġthe"`` -> ``" the"``)."""
        if token in self.special_ids:
            return token
        try:
            data = bytes(_CHAR_TO_BYTE[c] for c in token)
        except KeyError:
            return token
        return data.decode("utf-8", errors="labkit_hexbytes")

    # -- the merge loop, by hand -------------------------------------------

    def pretokenize(self, s: str) -> list[str]:
        """Split ``s`` into the chunks BPE works on (GPT-2's regex), in byte-level form."""
        return [piece for piece, _ in self._tok.pre_tokenizer.pre_tokenize_str(s)]

    def apply_merges(self, s: str, n_merges: int | None = None) -> list[str]:
        """Segment ``s`` with only the first ``n_merges`` learned merges (all if None),
        by the plain BPE loop: start from bytes, repeatedly merge the adjacent pair
        learned earliest. With all merges this equals the library's ``tokens(s, raw=True)``
        (for text without special tokens)."""
        merges = self.merges
        ranks = self._ranks
        n = len(merges) if n_merges is None else max(0, min(int(n_merges), len(merges)))
        out: list[str] = []
        for piece in self.pretokenize(s):
            symbols = list(piece)  # one symbol per byte
            while len(symbols) > 1:
                # 1. find the adjacent pair with the lowest merge rank (learned first)
                best_rank, best_i = n, -1
                for i in range(len(symbols) - 1):
                    r = ranks.get((symbols[i], symbols[i + 1]), n)
                    if r < best_rank:
                        best_rank, best_i = r, i
                if best_i < 0:
                    break  # no learned merge applies any more
                # 2. merge every occurrence of that pair, left to right
                a, b = merges[best_rank]
                merged, i = [], 0
                while i < len(symbols):
                    if i < len(symbols) - 1 and symbols[i] == a and symbols[i + 1] == b:
                        merged.append(a + b)
                        i += 2
                    else:
                        merged.append(symbols[i])
                        i += 1
                symbols = merged
            out.extend(symbols)
        return out

    def encode_steps(
        self, word: str, steps: Sequence[int | None] = (0, 10, 50, 100, 200, 500, 1000, None), raw: bool = False
    ) -> list[tuple[int, list[str]]]:
        """How ``word`` is segmented after the first 0, 10, 50, ... merges.

        Returns ``[(n_merges, tokens), ...]``; ``None`` in ``steps`` means all
        merges; steps beyond the number of merges are dropped (except None). Tokens
        are readable text unless ``raw=True``."""
        total = len(self.merges)
        seen, out = set(), []
        for n in steps:
            n = total if n is None else int(n)
            if n > total or n in seen:
                continue
            seen.add(n)
            toks = self.apply_merges(word, n)
            out.append((n, toks if raw else [self.token_text(t) for t in toks]))
        return out


# ---------------------------------------------------------------------------
# Word-level tokenizer (notebook 14's captions)
# ---------------------------------------------------------------------------

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class UnknownWordError(ValueError):
    """A text holds words outside a ``WordTokenizer``'s vocabulary (``.unknown`` lists them)."""

    def __init__(self, message: str, unknown: list[str]):
        super().__init__(message)
        self.unknown = unknown


class WordTokenizer:
    """One id per word of a closed vocabulary, for texts as small and regular as notebook 14's captions.

    ``split`` lower-cases a text and cuts it into words and punctuation marks ("A thick seven, slanted" ->
    ["a", "thick", "seven", ",", "slanted"]). ``encode`` adds ``<bos>`` before and ``<eos>`` after, so the
    empty text (the *null caption* of classifier-free guidance) is ``[<bos>, <eos>]``; ``encode_batch`` pads
    with ``<pad>`` and returns the token mask (True at real tokens, False at padding: labkit's mask convention).
    A word outside the vocabulary raises ``UnknownWordError`` naming it, with the closest known words: the
    model has an embedding for nothing else. (A lookup table is all a closed vocabulary needs; the lab's
    open-vocabulary tokenizer is ``BPETokenizer``.)
    """

    specials = ("<pad>", "<bos>", "<eos>")
    _split = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")

    def __init__(self, words: Iterable[str]):
        words = sorted(set(words) - set(self.specials))
        bad = [w for w in words if self.split(w) != [w]]
        if bad:
            raise ValueError(f"vocabulary entries must be single lower-case words or marks, got {bad[:5]!r}")
        self.words: list[str] = list(self.specials) + words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.bos_id, self.eos_id = (self.stoi[s] for s in self.specials)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "WordTokenizer":
        """The vocabulary of every word in ``texts``."""
        return cls(w for t in texts for w in cls.split(t))

    @classmethod
    def split(cls, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"a text must be a str, got {type(text).__name__}")
        return cls._split.findall(text.lower())

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` outside the vocabulary, in order, without repeats."""
        return list(dict.fromkeys(w for w in self.split(text) if w not in self.stoi))

    def encode(self, text: str) -> list[int]:
        """``[<bos>, word ids..., <eos>]``; an ``UnknownWordError`` for a word outside the vocabulary."""
        unknown = self.unknown_words(text)
        if unknown:
            raise UnknownWordError(self._explain(text, unknown), unknown)
        return [self.bos_id] + [self.stoi[w] for w in self.split(text)] + [self.eos_id]

    def _explain(self, text: str, unknown: list[str]) -> str:
        known = [w for w in self.words[len(self.specials):] if w.isalpha()]
        parts = []
        for w in unknown:
            if w.isdigit() and len(w) == 1 and _NUMBER_WORDS[int(w)] in self.stoi:
                parts.append(f"{w!r} (write numbers as words: {_NUMBER_WORDS[int(w)]!r})")
            else:
                close = difflib.get_close_matches(w, known, n=3, cutoff=0.6)
                parts.append(f"{w!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
        return (f"{len(unknown)} word{'s' if len(unknown) > 1 else ''} in {text!r} {'are' if len(unknown) > 1 else 'is'} "
                f"not in this model's vocabulary: {', '.join(parts)}. It knows {len(known)} words: "
                f"{', '.join(known)}.")

    def encode_batch(self, texts: Sequence[str], max_len: int | None = None):
        """Ids (B, T) padded with ``<pad>`` to the longest text (or ``max_len``) and the token mask (B, T),
        True at real tokens, False at padding."""
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of texts; use encode for one")
        seqs = [self.encode(t) for t in texts]
        longest = max((len(s) for s in seqs), default=2)
        T = longest if max_len is None else max_len
        if longest > T:
            raise ValueError(f"a text has {longest} tokens (with <bos> and <eos>), more than max_len={T}")
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
        return ids, ids != self.pad_id

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` joined by spaces (specials dropped; no space before punctuation)."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} is out of range for a vocabulary of {self.vocab_size} (0..{self.vocab_size - 1})")
            if i >= len(self.specials):
                out.append(self.words[i])
        return re.sub(r" ([^\sa-z0-9])", r"\1", " ".join(out))

    def save(self, path: str | os.PathLike) -> None:
        """Save the vocabulary as JSON (atomically)."""
        data = {"type": "WordTokenizer", "version": 1, "words": self.words[len(self.specials):]}
        _atomic_write_text(path, json.dumps(data, indent=0))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WordTokenizer":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("type") != "WordTokenizer":
            raise ValueError(f"{path} does not hold a WordTokenizer (type={data.get('type')!r})")
        return cls(data["words"])
