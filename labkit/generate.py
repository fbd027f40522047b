"""Turning a model's next-token scores into text: greedy, sampling, beam search.

The sampling step is split into pieces a notebook can plot one at a time::

    logits --apply_temperature--> --top_k_filter--> --top_p_filter--> softmax --> multinomial

``sample_next`` chains them (in that order, as Hugging Face does). ``greedy``
and ``beam_search`` are the deterministic decoders; ``beam_search`` only needs a
``step_fn`` from prefixes to next-token log-probabilities, so the same code
serves a decoder-only GPT and an encoder-decoder translation model.
``batched_beam_search`` runs the same search for many sentences at once (one
batch of every sentence's live beams per step); ``seq2seq_greedy`` and
``seq2seq_beam_search`` decode a ``labkit.models.seq2seq.Seq2SeqTransformer``
with it, running the encoder once per sentence and reusing its output.

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

__all__ = [
    "KVCache",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "greedy",
    "beam_search",
    "batched_beam_search",
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
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


# ----------------------------------------------------------------------------
# the KV cache


class KVCache:
    """The keys and values a GPT has computed so far, for generation: per layer one buffer of
    (B, n_head, max_len, head_size) for keys and one for values, filled left to right.

    ``model(new_ids, cache=cache)`` reads only the new tokens: their queries attend over every cached
    key (and their own), their keys and values are appended, and ``cache.length`` advances. Keys are
    cached after the rotary rotation, which depends only on a token's own position, so they stay valid.
    """

    def __init__(self, n_layer: int, max_len: int):
        self.max_len = max_len
        self.length = 0  # positions filled, the same in every layer
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) at positions offset..offset+T-1 of ``layer``; return every key and value
        up to there, (B, nh, offset+T, hs)."""
        B, nh, T, hs = k.shape
        if offset + T > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} positions; {offset + T} asked for")
        if self.k[layer] is None or self.k[layer].shape[0] != B:
            self.k[layer] = k.new_empty(B, nh, self.max_len, hs)
            self.v[layer] = v.new_empty(B, nh, self.max_len, hs)
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
    model: Callable, idx: torch.Tensor, max_new_tokens: int, block_size: int | None = None
) -> torch.Tensor:
    """Append ``max_new_tokens`` argmax tokens to ``idx`` (B, T); returns (B, T + max_new_tokens).

    ``model(idx)`` must return logits (B, T, V), an output with ``.logits``, or a tuple starting with them. The
    context is cropped to ``block_size`` (default: ``model.config.block_size`` if present).
    """
    if block_size is None:
        block_size = getattr(getattr(model, "config", None), "block_size", None)
    for _ in range(max_new_tokens):
        idx_cond = idx if block_size is None else idx[:, -block_size:]  # (B, <=block_size)
        logits = _logits_of(model(idx_cond))[:, -1, :]  # (B, V)
        next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat((idx, next_id), dim=1)  # (B, T+1)
    return idx


@torch.no_grad()
def beam_search(
    step_fn: Callable[[torch.Tensor], torch.Tensor],
    start_ids: torch.Tensor,
    beam_size: int,
    max_len: int,
    eos_id: int | None = None,
    length_penalty: float = 1.0,
) -> list[tuple[torch.Tensor, float]]:
    """Beam search for one sequence; returns up to ``beam_size`` ``(ids, score)`` pairs, best first.

    ``step_fn`` maps a (beams, T) tensor of prefixes (each starting with the 1-D
    ``start_ids``) to next-token log-probs (beams, V). At most ``max_len`` tokens are
    added; ``ids`` are the added tokens only (ending with ``eos_id`` if reached) and
    ``score = sum of log-probs / len(ids) ** length_penalty`` (0 = raw sum, 1 = mean).
    """
    if isinstance(beam_size, bool) or not isinstance(beam_size, numbers.Integral) or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len!r}")
    start_ids = torch.as_tensor(start_ids).flatten()
    T0 = start_ids.numel()

    def normalised(logp_sum: float, length: int) -> float:
        return logp_sum / (length**length_penalty)

    # 1. one live beam: the start prefix, with log-probability 0
    beams = start_ids.unsqueeze(0)  # (1, T0)
    beam_logp = torch.zeros(1, dtype=torch.float64, device=start_ids.device)  # (beams,)
    finished: list[tuple[torch.Tensor, float]] = []
    for step in range(1, max_len + 1):
        # 2. extend every live beam by every token and score the candidates
        logp = step_fn(beams).to(torch.float64)  # (beams, V)
        V = logp.size(-1)
        cand = (beam_logp.unsqueeze(1) + logp).view(-1)  # (beams * V,)
        top = torch.topk(cand, min(2 * beam_size, cand.numel()))  # 2k so k survive after EOS
        new_beams, new_logp = [], []
        for rank, (score, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            b, tok = divmod(flat, V)
            seq = torch.cat((beams[b], beams.new_tensor([tok])))  # (T0 + step,)
            if eos_id is not None and tok == eos_id:
                # 3. a hypothesis that ends here is set aside with its length-normalised score
                if rank < beam_size:
                    finished.append((seq[T0:], normalised(score, step)))
            else:
                new_beams.append(seq)
                new_logp.append(score)
            if len(new_beams) == beam_size:
                break
        if not new_beams:  # every candidate ended with EOS
            beams = beams[:0]
            break
        beams = torch.stack(new_beams)  # (beams, T0 + step)
        beam_logp = beam_logp.new_tensor(new_logp)  # (beams,)
        # 4. stop once beam_size hypotheses are done and no live beam currently scores better
        finished.sort(key=lambda h: h[1], reverse=True)
        finished = finished[:beam_size]
        if len(finished) == beam_size and normalised(new_logp[0], step) <= finished[-1][1]:
            beams = beams[:0]
            break
    # 5. beams still alive at max_len count as hypotheses too
    for seq, score in zip(beams, beam_logp.tolist()):
        finished.append((seq[T0:], normalised(score, seq.numel() - T0)))
    finished.sort(key=lambda h: h[1], reverse=True)
    return finished[:beam_size]


@torch.no_grad()
def batched_beam_search(
    step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_sequences: int,
    bos_id: int,
    eos_id: int,
    beam_size: int,
    max_len: int | Sequence[int],
    length_penalty: float = 1.0,
    device=None,
) -> list[list[tuple[list[int], float]]]:
    """Beam search for ``n_sequences`` sequences at once; per sequence up to ``beam_size`` ``(ids, score)``, best first.

    ``step_fn(prefixes, rows)`` maps the live beams' prefixes (N, T), each starting with ``bos_id``, and
    ``rows`` (N,), the sequence each beam belongs to (0..n_sequences-1), to next-token log-probs (N, V).
    Every sequence follows exactly the rules of ``beam_search``: the 2k best extensions are scored, a
    hypothesis that ends in ``eos_id`` is set aside with ``score = sum of log-probs / len(ids) **
    length_penalty`` (``ids`` exclude ``bos_id`` and include ``eos_id``), and a sequence is done when it
    has ``beam_size`` finished hypotheses and no live beam scores better, or after ``max_len`` tokens
    (one int, or one per sequence). Done sequences leave the batch, so later steps get cheaper.
    """
    if isinstance(beam_size, bool) or not isinstance(beam_size, numbers.Integral) or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
    limits = [int(max_len)] * n_sequences if isinstance(max_len, numbers.Integral) else [int(m) for m in max_len]
    if len(limits) != n_sequences or min(limits, default=1) < 1:
        raise ValueError(f"max_len must be an int >= 1 or one such int per sequence ({n_sequences}), got {max_len!r}")

    def normalised(logp_sum: float, length: int) -> float:
        return logp_sum / (length**length_penalty)

    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(n_sequences)]
    # the live beams of every unfinished sequence: token lists (bos first), their log-prob sums, their rows
    seqs = [[bos_id] for _ in range(n_sequences)]
    logps = [0.0] * n_sequences
    rows = list(range(n_sequences))
    for step in range(1, max(limits, default=0) + 1):
        if not rows:
            break
        prefixes = torch.tensor(seqs, dtype=torch.long, device=device)  # (N, step)
        logp = step_fn(prefixes, torch.tensor(rows, device=device)).to(torch.float64)  # (N, V)
        cand = torch.tensor(logps, dtype=torch.float64, device=logp.device).unsqueeze(1) + logp  # (N, V)
        V = logp.size(1)
        # group the live beams by sequence (they are contiguous) and take each group's 2k best extensions
        new_seqs, new_logps, new_rows = [], [], []
        start = 0
        while start < len(rows):
            row = rows[start]
            end = start
            while end < len(rows) and rows[end] == row:
                end += 1
            flat = cand[start:end].reshape(-1)  # (beams * V,)
            top = torch.topk(flat, min(2 * beam_size, flat.numel()))
            kept = []
            for rank, (score, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                b, tok = divmod(idx, V)
                if tok == eos_id:
                    if rank < beam_size:
                        finished[row].append((seqs[start + b][1:] + [tok], normalised(score, step)))
                else:
                    kept.append((seqs[start + b] + [tok], score))
                if len(kept) == beam_size:
                    break
            done = not kept or step == limits[row]
            fin = sorted(finished[row], key=lambda h: h[1], reverse=True)[:beam_size]
            if not done and len(fin) == beam_size and normalised(kept[0][1], step) <= fin[-1][1]:
                done = True
            if done:  # beams alive at the end count as hypotheses (as in beam_search)
                if step == limits[row] or len(fin) < beam_size:
                    fin += [(s[1:], normalised(lp, step)) for s, lp in kept]
                finished[row] = sorted(fin, key=lambda h: h[1], reverse=True)[:beam_size]
            else:
                finished[row] = fin
                for s, lp in kept:
                    new_seqs.append(s)
                    new_logps.append(lp)
                    new_rows.append(row)
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
    device = next(model.parameters()).device
    for i in range(0, ids.size(0), batch_size):
        yield ids[i:i + batch_size].to(device)


def _default_max_len(model, src_ids: torch.Tensor, max_len: int | None) -> list[int]:
    """Per sentence: ``max_len``, else twice the source's length plus 10 (and never past the model's max_len)."""
    lengths = src_ids.ne(model.config.pad_id).sum(1).tolist()
    cap = model.config.max_len - 1  # the decoder input holds bos plus the generated tokens
    return [min(cap, max_len if max_len is not None else 2 * n + 10) for n in lengths]


@torch.no_grad()
def seq2seq_greedy(model, src, max_len: int | None = None, batch_size: int = 256) -> list[list[int]]:
    """Greedy decoding of an encoder-decoder model, batched: one list of target ids per source sentence.

    ``src``: a list of id lists (padded here) or a padded (B, S) tensor. The encoder runs once; each step
    decodes every unfinished sentence and appends its argmax. Ids stop at (and include) ``eos_id``, or
    after ``max_len`` tokens (default: 2 x the source's length + 10)."""
    model.eval()
    c = model.config
    out: list[list[int]] = []
    for ids in _src_batches(model, src, batch_size):
        mask = model.padding_mask(ids)
        memory = model.encode(ids, mask)  # (B, S, d): once per sentence
        limits = _default_max_len(model, ids, max_len)
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
def seq2seq_beam_search(model, src, beam_size: int = 4, length_penalty: float = 1.0, max_len: int | None = None,
                        batch_size: int = 128) -> list[list[tuple[list[int], float]]]:
    """Beam search for an encoder-decoder model, batched over sentences (``batched_beam_search``).

    ``src`` as in ``seq2seq_greedy``. The encoder runs once per sentence; every step gathers each live
    beam's sentence memory by index. Returns, per sentence, up to ``beam_size`` ``(ids, score)`` pairs,
    best first (ids end with ``eos_id`` unless cut at ``max_len``; score = log-prob / len ** length_penalty).
    """
    model.eval()
    c = model.config
    out: list[list[tuple[list[int], float]]] = []
    for ids in _src_batches(model, src, batch_size):
        mask = model.padding_mask(ids)
        memory = model.encode(ids, mask)  # (B, S, d): once per sentence

        def step_fn(prefixes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            logits = model.decode(prefixes, memory[rows], mask[rows], last_only=True)[:, -1]  # (N, V)
            return F.log_softmax(logits.float(), dim=-1)

        out.extend(batched_beam_search(step_fn, ids.size(0), c.bos_id, c.eos_id, beam_size,
                                       _default_max_len(model, ids, max_len), length_penalty, ids.device))
    return out
