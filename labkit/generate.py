"""Turning a model's next-token scores into text: greedy, sampling, beam search.

The sampling step is split into pieces a notebook can plot one at a time::

    logits --apply_temperature--> --top_k_filter--> --top_p_filter--> softmax --> multinomial

``sample_next`` chains them (in that order, as Hugging Face does). ``greedy``
and ``beam_search`` are the deterministic decoders; ``beam_search`` only needs a
``step_fn`` from prefixes to next-token log-probabilities, so the same code
serves a decoder-only GPT and an encoder-decoder translation model.

Filtered-out logits are set to ``-inf`` so that ``softmax`` gives them
probability exactly 0.
"""

from __future__ import annotations

import numbers
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "greedy",
    "beam_search",
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
