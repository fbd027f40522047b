"""Turning a model's next-token scores into text: greedy, sampling, beam search.

The sampling step is split into pieces a notebook can plot one at a time::

    logits --apply_temperature--> --top_k_filter--> --top_p_filter--> softmax --> multinomial

``sample_next`` chains them (in that order, as Hugging Face does). ``greedy``
and ``beam_search`` are the deterministic decoders; ``beam_search`` only needs a
``step_fn`` from prefixes to next-token log-probabilities, so the same code
serves a decoder-only GPT and an encoder-decoder translation model, and it searches
for many sequences at once (one batch of every sequence's live beams per step).
``seq2seq_greedy`` and ``seq2seq_beam_search`` decode a
``labkit.models.seq2seq.Seq2SeqTransformer`` with it, running the encoder once per
sentence and reusing its output.

``KVCache`` keeps the keys and values a GPT has computed, so each generated token costs one position's
work (``labkit.models.gpt.GPT.generate`` uses it by default).

Filtered-out logits are set to ``-inf`` so that ``softmax`` gives them
probability exactly 0.
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .device import module_device

__all__ = [
    "KVCache",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "greedy",
    "beam_search",
    "seq2seq_greedy",
    "seq2seq_beam_search",
]


# ----------------------------------------------------------------------------
# the pieces of one sampling step


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by ``temperature``: < 1 sharpens the distribution, > 1 flattens it.

    As ``temperature`` -> 0 sampling approaches argmax; it must be > 0.
    """
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature!r}; for deterministic decoding use greedy()"
        )
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` highest logits along the last dim, set the rest to -inf.

    Exactly ``k`` entries survive (ties broken by ``torch.topk``); ``k`` larger than
    the vocabulary keeps everything.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {k!r}")
    k = min(int(k), logits.size(-1))
    top = torch.topk(logits, k, dim=-1)
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(-1, top.indices, top.values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most-likely tokens whose probability sums to >= ``p``.

    The most likely token is always kept; ``p`` must lie in (0, 1] and ``p=1`` keeps everything.
    """
    if not (0.0 < p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    if p == 1.0:
        return logits.clone()
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    probs = F.softmax(sorted_logits.float(), dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of all more-likely tokens
    drop_sorted = mass_before >= p  # the nucleus was already complete before this token
    drop_sorted[..., 0] = False  # always keep the top token
    drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample one token id per row from next-token ``logits`` of shape (B, V) -> ids (B, 1).

    Applies temperature, then top-k, then top-p, then draws from the softmax
    (``generator`` makes the draw reproducible). A 1-D (V,) input gives a (1,) output.
    """
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = F.softmax(logits.float(), dim=-1)  # (B, V)
    if generator is not None and generator.device != probs.device:  # draw where the generator lives
        return torch.multinomial(probs.to(generator.device), num_samples=1, generator=generator).to(probs.device)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


# ----------------------------------------------------------------------------
# the KV cache


class KVCache:
    """The keys and values a GPT has computed so far, for generation: per layer one buffer of
    (B, n_heads, context_length, head_size) for keys and one for values, filled left to right.

    ``model(new_ids, cache=cache)`` reads only the new tokens: their queries attend over every cached
    key (and their own), their keys and values are appended, and ``cache.length`` advances. Keys are
    cached after the rotary rotation, which depends only on a token's own position, so they stay valid.
    """

    def __init__(self, n_layers: int, context_length: int):
        self.context_length = context_length
        self.length = 0  # positions filled, the same in every layer
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) at positions offset..offset+T-1 of ``layer``; return every key and value
        up to there, (B, nh, offset+T, hs)."""
        B, nh, T, hs = k.shape
        if offset + T > self.context_length:
            raise ValueError(f"the cache holds {self.context_length} positions; {offset + T} asked for")
        if self.k[layer] is None or self.k[layer].shape[0] != B:
            self.k[layer] = k.new_empty(B, nh, self.context_length, hs)
            self.v[layer] = v.new_empty(B, nh, self.context_length, hs)
        self.k[layer][:, :, offset : offset + T] = k
        self.v[layer][:, :, offset : offset + T] = v
        return self.k[layer][:, :, : offset + T], self.v[layer][:, :, : offset + T]


# ----------------------------------------------------------------------------
# deterministic decoders


def _logits_of(output) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, its ``.logits`` (``GPTOutput``, ``BERTOutput``),
    or the first item of a plain ``(logits, ...)`` tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    return output[0]


@torch.no_grad()
def greedy(
    model: Callable, idx: torch.Tensor, max_new_tokens: int, context_length: int | None = None
) -> torch.Tensor:
    """Append ``max_new_tokens`` argmax tokens to ``idx`` (B, T); returns (B, T + max_new_tokens).

    ``model(idx)`` must return logits (B, T, V), an output with ``.logits``, or a tuple starting with them. The
    context is cropped to ``context_length`` (default: ``model.config.context_length`` if present).
    """
    if context_length is None:
        context_length = getattr(getattr(model, "config", None), "context_length", None)
    for _ in range(max_new_tokens):
        idx_cond = idx if context_length is None else idx[:, -context_length:]  # (B, <=context_length)
        logits = _logits_of(model(idx_cond))[:, -1, :]  # (B, V)
        next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat((idx, next_id), dim=1)  # (B, T+1)
    return idx


@torch.no_grad()
def beam_search(
    step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    starts: Sequence[Sequence[int]],
    beam_size: int,
    max_new_tokens: int | Sequence[int],
    eos_id: int | None = None,
    length_penalty: float = 1.0,
    device=None,
) -> list[list[tuple[list[int], float]]]:
    """Beam search for several sequences at once; for each, up to ``beam_size`` ``(ids, score)``, best first.

    ``starts`` holds each sequence's prefix (all of one length; e.g. ``[[bos_id]] * n``). ``step_fn(prefixes,
    rows)`` maps the live beams' prefixes (N, T) and ``rows`` (N,), the sequence each beam belongs to, to next-token
    log-probs (N, V). At each step the 2k best extensions of a sequence's beams are scored; a hypothesis that ends
    in ``eos_id`` is set aside with ``score = sum of log-probs / len(ids) ** length_penalty`` (``ids``: the added
    tokens, ``eos_id`` included; ``length_penalty`` 0 = the raw sum, 1 = the mean); a sequence is done when it has
    ``beam_size`` finished hypotheses and no live beam scores better, or after ``max_new_tokens`` tokens (one int,
    or one per sequence), its live beams then counting as hypotheses. Done sequences leave the batch."""
    n = len(starts)
    if isinstance(beam_size, bool) or not isinstance(beam_size, numbers.Integral) or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
    limits = [int(max_new_tokens)] * n if isinstance(max_new_tokens, numbers.Integral) else [int(m) for m in max_new_tokens]
    if len(limits) != n or min(limits, default=1) < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1 or one such int per sequence ({n}), got {max_new_tokens!r}")
    T0 = len(starts[0]) if n else 0
    if any(len(s) != T0 for s in starts):
        raise ValueError("every start prefix must have the same length")

    def normalised(logp_sum: float, length: int) -> float:
        return logp_sum / (length**length_penalty)

    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(n)]
    # 1. one live beam per sequence: its prefix, with log-probability 0 (beams of a sequence stay contiguous)
    seqs, logps, rows = [list(s) for s in starts], [0.0] * n, list(range(n))
    for step in range(1, max(limits, default=0) + 1):
        if not rows:
            break
        # 2. extend every live beam by every token and score the candidates
        logp = step_fn(torch.tensor(seqs, dtype=torch.long, device=device), torch.tensor(rows, device=device))
        cand = torch.tensor(logps, dtype=torch.float64, device=logp.device).unsqueeze(1) + logp.to(torch.float64)
        V = logp.size(1)
        new_seqs, new_logps, new_rows = [], [], []
        start = 0
        while start < len(rows):
            row, end = rows[start], start
            while end < len(rows) and rows[end] == row:
                end += 1
            top = torch.topk(cand[start:end].reshape(-1), min(2 * beam_size, (end - start) * V))  # 2k: k survive EOS
            kept = []
            for rank, (score, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                b, tok = divmod(flat, V)
                if tok == eos_id:  # 3. a hypothesis that ends here is set aside with its normalised score
                    if rank < beam_size:
                        finished[row].append((seqs[start + b][T0:] + [tok], normalised(score, step)))
                else:
                    kept.append((seqs[start + b] + [tok], score))
                if len(kept) == beam_size:
                    break
            # 4. done: no live beam left, the limit reached, or k hypotheses and no live beam scoring better
            fin = sorted(finished[row], key=lambda h: h[1], reverse=True)[:beam_size]
            done = not kept or step == limits[row] or (
                len(fin) == beam_size and normalised(kept[0][1], step) <= fin[-1][1])
            if done and (step == limits[row] or len(fin) < beam_size):  # 5. beams alive at the end count too
                fin = sorted(fin + [(s[T0:], normalised(lp, step)) for s, lp in kept], key=lambda h: h[1],
                             reverse=True)[:beam_size]
            finished[row] = fin
            if not done:
                new_seqs += [s for s, _ in kept]
                new_logps += [lp for _, lp in kept]
                new_rows += [row] * len(kept)
            start = end
        seqs, logps, rows = new_seqs, new_logps, new_rows
    return finished


def _src_batches(model, src, batch_size: int):
    """Pad a list of id lists (or take a padded (B, S) tensor) and cut it into batches of ``batch_size``."""
    pad = model.config.pad_id
    if isinstance(src, torch.Tensor):
        ids = src
    else:
        src = [list(s) for s in src]
        if any(len(s) == 0 for s in src):
            raise ValueError("every source sentence needs at least one token (an empty input cannot be translated)")
        T = max((len(s) for s in src), default=1)
        ids = torch.full((len(src), T), pad, dtype=torch.long)
        for i, s in enumerate(src):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    device = module_device(model)
    for i in range(0, ids.size(0), batch_size):
        yield ids[i:i + batch_size].to(device)


def _max_new_tokens(model, src_ids: torch.Tensor, max_new_tokens: int | None) -> list[int]:
    """Per sentence: ``max_new_tokens``, else twice the source's length plus 10 (and never past the model's context length)."""
    lengths = src_ids.ne(model.config.pad_id).sum(1).tolist()
    cap = model.config.context_length - 1  # the decoder input holds bos plus the generated tokens
    return [min(cap, max_new_tokens if max_new_tokens is not None else 2 * n + 10) for n in lengths]


@torch.no_grad()
def seq2seq_greedy(model, src, max_new_tokens: int | None = None, batch_size: int = 256) -> list[list[int]]:
    """Greedy decoding of an encoder-decoder model, batched: one list of target ids per source sentence.

    ``src``: a list of id lists (padded here) or a padded (B, S) tensor. The encoder runs once; each step
    decodes every unfinished sentence and appends its argmax. Ids stop at (and include) ``eos_id``, or
    after ``max_new_tokens`` tokens (default: 2 x the source's length + 10)."""
    model.eval()
    c = model.config
    out: list[list[int]] = []
    for ids in _src_batches(model, src, batch_size):
        mask = model.token_mask(ids)
        memory = model.encode(ids, mask)  # (B, S, d): once per sentence
        limits = _max_new_tokens(model, ids, max_new_tokens)
        tgt = torch.full((ids.size(0), 1), c.bos_id, dtype=torch.long, device=ids.device)
        alive = torch.arange(ids.size(0), device=ids.device)  # sentences still writing
        results = [[] for _ in range(ids.size(0))]
        for step in range(1, max(limits) + 1):
            logits = model.decode(tgt, memory[alive], mask[alive], last_only=True)[:, -1]  # (n_alive, V)
            nxt = logits.argmax(-1)  # (n_alive,)
            keep = []
            for j, (row, tok) in enumerate(zip(alive.tolist(), nxt.tolist())):
                results[row].append(tok)
                if tok != c.eos_id and step < limits[row]:
                    keep.append(j)
            if not keep:
                break
            keep_t = torch.tensor(keep, device=ids.device)
            tgt = torch.cat((tgt, nxt.unsqueeze(1)), dim=1)[keep_t]
            alive = alive[keep_t]
        out.extend(results)
    return out


@torch.no_grad()
def seq2seq_beam_search(model, src, beam_size: int = 4, length_penalty: float = 1.0, max_new_tokens: int | None = None,
                        batch_size: int = 128) -> list[list[tuple[list[int], float]]]:
    """Beam search for an encoder-decoder model, batched over sentences (``batched_beam_search``).

    ``src`` as in ``seq2seq_greedy``. The encoder runs once per sentence; every step gathers each live
    beam's sentence memory by index. Returns, per sentence, up to ``beam_size`` ``(ids, score)`` pairs,
    best first (ids end with ``eos_id`` unless cut at ``max_new_tokens``; score = log-prob / len ** length_penalty).
    """
    model.eval()
    c = model.config
    out: list[list[tuple[list[int], float]]] = []
    for ids in _src_batches(model, src, batch_size):
        mask = model.token_mask(ids)
        memory = model.encode(ids, mask)  # (B, S, d): once per sentence

        def step_fn(prefixes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            logits = model.decode(prefixes, memory[rows], mask[rows], last_only=True)[:, -1]  # (N, V)
            return F.log_softmax(logits.float(), dim=-1)

        out.extend(beam_search(step_fn, [[c.bos_id]] * ids.size(0), beam_size, _max_new_tokens(model, ids, max_new_tokens),
                               eos_id=c.eos_id, length_penalty=length_penalty, device=ids.device))
    return out
