"""Scaled dot-product attention and multi-head attention.

Two ways to compute the same thing: ``scaled_dot_product_attention`` spells out
every step and returns the attention weights (to teach and to plot), while
``MultiHeadAttention`` uses PyTorch's fused ``F.scaled_dot_product_attention``
unless it is asked for the weights.

One mask convention for all of labkit: a boolean mask is True where attention is **allowed** (a query may attend
to a key; a key is a real token, not padding), as in ``F.scaled_dot_product_attention`` and Hugging Face's
``attention_mask``. PyTorch's ``nn.MultiheadAttention`` and ``nn.Transformer*`` layers use the opposite (True =
blocked): their ``from_torch`` copies take the weights, and a caller comparing with them inverts its masks there.
A float mask is added to the scores (use ``-inf`` to block).
A query whose keys are all masked gets all-zero weights and an all-zero output,
as PyTorch's ``F.scaled_dot_product_attention`` gives on CPU (not NaN).

Getting the attention weights out of a whole model: one way for every model and
stack in labkit (``MultiHeadAttention`` and so ``EncoderBlock``, ``DecoderBlock``,
``Encoder``, ``Decoder``; GPT's and BERT's attention)::

    with torch.no_grad(), capture_attention(model) as attn:
        model(x)
    attn["layers.0.self_attn"]     # (B, n_heads, T_q, T_k), each row sums to 1
    attn.layers("*cross_attn")     # one tensor per layer, in call order: what bertviz takes

While capturing, every attention module computes explicitly (the fused kernel
never materialises the weights) and hands its weights, taken before dropout, to
the capture under its qualified name (``model.named_modules()``). A new attention
module joins in with a class attribute ``captures_attention = True``, computing
explicitly while ``is_capturing(self)`` and calling ``record_attention(self, weights)``.
"""

from __future__ import annotations

import fnmatch
import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["scaled_dot_product_attention", "causal_mask", "MultiHeadAttention", "capture_attention",
           "AttentionCapture", "is_capturing", "record_attention", "prefix_matching_score", "ablate_heads"]


def causal_mask(T_q: int, T_k: int | None = None, device=None) -> Tensor:
    """Boolean (T_q, T_k) mask, True where query i may attend to key j, i.e. j <= i.

    Aligned top-left, like ``is_causal=True`` in ``F.scaled_dot_product_attention``.
    """
    T_k = T_q if T_k is None else T_k
    return torch.ones(T_q, T_k, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(q @ k^T / sqrt(d_k) + mask) @ v, step by step; returns (out, weights).

    q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v) -> out (..., T_q, d_v),
    weights (..., T_q, T_k) (the softmax's probabilities, before dropout, as every labkit attention hands them out).
    Masks: bool True = may attend. As in ``F.scaled_dot_product_attention``, dropout applies whenever
    ``dropout_p > 0``, in train or eval mode.
    """
    _check_qkv(q, k, v)
    weights = _attention_weights(q, k, mask, is_causal, scale)  # (..., T_q, T_k)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    return dropped @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


def _attention_weights(q: Tensor, k: Tensor, mask: Tensor | None, is_causal: bool, scale: float | None) -> Tensor:
    """softmax(q @ k^T * scale + mask): (..., T_q, T_k), rows summing to 1 (or all 0 where every key is blocked)."""
    if is_causal and mask is not None:
        raise ValueError("pass either mask or is_causal=True, not both (as in F.scaled_dot_product_attention)")
    T_q, T_k = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale

    scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k)
    if is_causal:
        mask = causal_mask(T_q, T_k, device=q.device)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))  # blocked -> -inf
    elif mask is not None:
        scores = scores + mask  # float mask: added to the scores
    # A row with every key blocked would give softmax(-inf, ..., -inf) = NaN; give it zeros.
    blocked_row = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., T_q, 1)
    weights = scores.masked_fill(blocked_row, 0.0).softmax(dim=-1)  # (..., T_q, T_k)
    return weights.masked_fill(blocked_row, 0.0)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., T, d) with at least 2 dims, got {tuple(t.shape)}")
    if k.size(-1) != q.size(-1):
        raise ValueError(
            f"k must have shape (..., T_k, d_k) with d_k={q.size(-1)} like q {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    if v.size(-2) != k.size(-2):
        raise ValueError(
            f"v must have shape (..., T_k, d_v) with T_k={k.size(-2)} like k {tuple(k.shape)}, got {tuple(v.shape)}"
        )


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch-first: project q, k, v, attend in ``n_heads`` heads, concatenate, project.

    Masks: bool True = may attend (the labkit convention); see ``forward``. ``capture_attention`` collects its
    weights.
    """

    captures_attention = True  # capture_attention hands this module a sink; forward feeds it

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout  # dropout on the attention weights, in training mode only
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        key_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """query (B, T_q, d_model), key/value (B, T_k, d_model) -> (out (B, T_q, d_model), weights or None).

        ``attn_mask`` (T_q, T_k) or (B*n_heads, T_q, T_k) is True where a query may attend to a key, ``key_mask``
        (B, T_k) True at real keys (False at padding); float masks are added to the scores.
        ``is_causal=True`` adds a causal mask (combined with any other mask given).
        ``need_weights=True`` computes explicitly and returns per-head weights (B, n_heads, T_q, T_k),
        not averaged over heads (like ``average_attn_weights=False``); otherwise the fused kernel runs.
        """
        B, T_q, T_k = self._check_inputs(query, key, value)
        nh, hs = self.n_heads, self.head_dim
        q = self.q_proj(query).view(B, T_q, nh, hs).transpose(1, 2)  # (B, nh, T_q, hs)
        k = self.k_proj(key).view(B, T_k, nh, hs).transpose(1, 2)  # (B, nh, T_k, hs)
        v = self.v_proj(value).view(B, T_k, nh, hs).transpose(1, 2)  # (B, nh, T_k, hs)

        mask = self._sdpa_mask(attn_mask, key_mask, B, T_q, T_k, q.dtype)  # one mask, (B or 1, heads or 1, T_q, T_k)
        if is_causal and mask is not None:  # fold the causal mask into the others
            mask, is_causal = _combine(mask, causal_mask(T_q, T_k, device=q.device), q.dtype), False
        dropout_p = self.dropout if self.training else 0.0
        if need_weights or is_capturing(self):  # explicit: scores, mask, softmax, weights @ v
            weights = _attention_weights(q, k, mask, is_causal, None)  # (B, nh, T_q, T_k)
            record_attention(self, weights)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            y = weights @ v  # (B, nh, T_q, hs)
            weights = weights if need_weights else None
        else:  # fused kernel, weights never materialised
            y, weights = F.scaled_dot_product_attention(q, k, v, mask, dropout_p, is_causal), None
        y = y.transpose(1, 2).reshape(B, T_q, self.d_model)  # (B, T_q, d_model): heads side by side
        return self.out_proj(y), weights

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[int, int, int]:
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dim() != 3 or t.size(-1) != self.d_model:
                raise ValueError(
                    f"{name} must have shape (B, T, d_model={self.d_model}) (batch first), got {tuple(t.shape)}"
                )
        if key.shape[:2] != value.shape[:2] or key.size(0) != query.size(0):
            raise ValueError(
                f"key and value must have shape (B, T_k, d_model) with the same B={query.size(0)} as query "
                f"and the same T_k, got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        return query.size(0), query.size(1), key.size(1)

    def _sdpa_mask(self, attn_mask, key_mask, B, T_q, T_k, dtype) -> Tensor | None:
        """The attention mask and the key mask combined into one mask that F.scaled_dot_product_attention takes."""
        mask = None
        if attn_mask is not None:
            if attn_mask.shape == (T_q, T_k):
                pass
            elif attn_mask.shape == (B * self.n_heads, T_q, T_k):
                attn_mask = attn_mask.reshape(B, self.n_heads, T_q, T_k)
            else:
                raise ValueError(
                    f"attn_mask must have shape (T_q, T_k)=({T_q}, {T_k}) or "
                    f"(B*n_heads, T_q, T_k)=({B * self.n_heads}, {T_q}, {T_k}), got {tuple(attn_mask.shape)}"
                )
            mask = attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(dtype)
        if key_mask is not None:
            if key_mask.shape != (B, T_k):
                raise ValueError(f"key_mask must have shape (B, T_k)=({B}, {T_k}), got {tuple(key_mask.shape)}")
            km = key_mask[:, None, None, :]  # (B, 1, 1, T_k): same for every head and query
            mask = _combine(mask, km if km.dtype == torch.bool else km.to(dtype), dtype)
        return mask

    @classmethod
    def from_torch(cls, m: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy a batch-first ``nn.MultiheadAttention``: its in_proj is split into q_proj, k_proj, v_proj."""
        if not m.batch_first:
            raise ValueError("from_torch needs nn.MultiheadAttention(..., batch_first=True); got batch_first=False")
        if not m._qkv_same_embed_dim:
            raise ValueError(
                f"from_torch needs kdim == vdim == embed_dim={m.embed_dim}, got kdim={m.kdim}, vdim={m.vdim}"
            )
        if m.bias_k is not None or m.add_zero_attn:
            raise ValueError("from_torch does not support add_bias_kv=True or add_zero_attn=True")
        bias = m.in_proj_bias is not None
        new = cls(m.embed_dim, m.num_heads, dropout=m.dropout, bias=bias)
        new = new.to(device=m.in_proj_weight.device, dtype=m.in_proj_weight.dtype)
        with torch.no_grad():
            for proj, w in zip((new.q_proj, new.k_proj, new.v_proj), m.in_proj_weight.chunk(3)):
                proj.weight.copy_(w)
            if bias:
                for proj, b in zip((new.q_proj, new.k_proj, new.v_proj), m.in_proj_bias.chunk(3)):
                    proj.bias.copy_(b)
            new.out_proj.load_state_dict(m.out_proj.state_dict())
        return new.train(m.training)


def _combine(a: Tensor | None, b: Tensor, dtype: torch.dtype) -> Tensor:
    """Both masks must allow (SDPA convention): bool & bool, otherwise add as floats."""
    if a is None:
        return b
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    return _as_float(a, dtype) + _as_float(b, dtype)


def _as_float(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


# --- getting attention weights out of a model --------------------------------------------

_SINKS = "_attention_sinks"  # the instance attribute capture_attention sets on an attention module


def is_capturing(module: nn.Module) -> bool:
    """True while some ``capture_attention`` wants ``module``'s weights (it must then compute them)."""
    return bool(module.__dict__.get(_SINKS))


def record_attention(module: nn.Module, weights: Tensor) -> None:
    """Hand ``weights`` (B, n_heads, T_q, T_k) to every capture that watches ``module``."""
    for sink in module.__dict__.get(_SINKS, ()):
        sink(weights)


class AttentionCapture(dict):
    """Attention weights by module name, from ``capture_attention``.

    ``capture[name]`` is the (B, n_heads, T_q, T_k) weights of that module's latest call; names
    are in the order of their first call. ``calls`` lists every call as ``(name, weights)``
    (a module called again, e.g. once per generated token, appears each time).
    """

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, Tensor]] = []

    def _add(self, name: str, weights: Tensor) -> None:
        self.calls.append((name, weights))
        self[name] = weights

    def layers(self, pattern: str = "*") -> list[Tensor]:
        """The weights of the modules whose name matches ``pattern`` (fnmatch: ``"encoder.*self_attn"``),
        one tensor per module in call order: bertviz's per-layer list."""
        return [w for name, w in self.items() if fnmatch.fnmatchcase(name, pattern)]


@contextmanager
def capture_attention(model: nn.Module, detach: bool = False) -> Iterator[AttentionCapture]:
    """Collect the attention weights of every attention module inside ``model`` while the block runs.

    ``with capture_attention(model) as attn: model(x)`` fills ``attn`` (an ``AttentionCapture``):
    name -> (B, n_heads, T_q, T_k) weights, rows summing to 1, taken before dropout.
    ``detach=True`` keeps no autograd graph (the default keeps it, as ``model(x, return_attention=True)`` does).
    """
    capture = AttentionCapture()
    watched: list[tuple[nn.Module, Callable]] = []
    try:
        for name, module in model.named_modules():
            if getattr(type(module), "captures_attention", False):
                def sink(weights: Tensor, name: str = name) -> None:
                    capture._add(name, weights.detach() if detach else weights)

                module.__dict__.setdefault(_SINKS, []).append(sink)
                watched.append((module, sink))
        yield capture
    finally:
        for module, sink in watched:
            sinks = module.__dict__[_SINKS]
            sinks.remove(sink)
            if not sinks:
                del module.__dict__[_SINKS]


# --- reading heads: induction (prefix matching) and ablation -------------------------------------


def prefix_matching_score(attn: Tensor, tokens: Tensor, query_mask: Tensor | None = None) -> Tensor:
    """How much each head attends like an induction head: (B, n_heads, T, T) weights, (B, T) tokens -> (n_heads,).

    For a query at position i whose token appeared before, at positions p < i, the *matching* keys are
    the positions p + 1 right after those earlier occurrences: an induction head looks there, to copy what
    followed last time ("... A B ... A" -> attend to B). The score is the attention weight a head puts on
    the matching keys, summed over them, averaged over every query that has one (Olsson et al., 2022,
    *In-context learning and induction heads*). 1 for a perfect induction head; about 1/i on average for
    uniform causal attention. ``query_mask`` (B, T) bool limits the queries (e.g. to the inputs of
    in-context examples). A batch with no repeated token has no query to score: that is an error.
    """
    if attn.dim() != 4:
        raise ValueError(f"attn must be (B, n_heads, T, T), got shape {tuple(attn.shape)}: pass one layer's weights")
    B, H, T, T_k = attn.shape
    if T != T_k or tokens.shape != (B, T):
        raise ValueError(f"tokens must be (B, T) = ({B}, {T}) for attention of shape {tuple(attn.shape)}, "
                         f"got {tuple(tokens.shape)}")
    same = tokens.unsqueeze(2) == tokens.unsqueeze(1)  # (B, T, T): same[b, i, p] = tokens[i] == tokens[p]
    earlier = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril(-1)  # p < i
    occurrence = same & earlier  # (B, i, p): an earlier occurrence of query i's token at p
    matching = torch.zeros_like(occurrence)
    matching[:, :, 1:] = occurrence[:, :, :-1]  # key p + 1 follows an earlier occurrence at p (p + 1 <= i)
    has_match = matching.any(-1)  # (B, T)
    if query_mask is not None:
        has_match = has_match & query_mask.to(torch.bool)
    if not has_match.any():
        raise ValueError("no query has an earlier occurrence of its token: a prefix-matching score needs "
                         "repeated tokens (e.g. a random sequence repeated twice)")
    on_match = (attn.float() * matching.unsqueeze(1)).sum(-1)  # (B, H, T): weight on the matching keys
    return (on_match * has_match.unsqueeze(1)).sum((0, 2)) / has_match.sum()


def _output_projection(module: nn.Module) -> nn.Linear:
    for name in ("c_proj", "out_proj", "out"):  # labkit's GPT, MultiHeadAttention, BERT
        proj = getattr(module, name, None)
        if isinstance(proj, nn.Linear):
            return proj
    raise TypeError(f"{type(module).__name__} has no output projection (c_proj, out_proj or out) to ablate heads at")


@contextmanager
def ablate_heads(model: nn.Module, heads: dict[str, list[int]]) -> Iterator[None]:
    """Zero some heads' outputs while the block runs: ``heads`` maps an attention module's name to head indices.

    ``with ablate_heads(gpt, {"transformer.h.1.attn": [2]}): gpt(x)`` runs as if head 2 of layer 1 wrote
    nothing: its slice of the concatenated head outputs is zeroed before the output projection (the
    projection's bias, shared by all heads, stays). Every other head is untouched.
    """
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, idx in heads.items():
            if name not in modules:
                attn = [n for n, m in modules.items() if getattr(type(m), "captures_attention", False)]
                raise KeyError(f"no module {name!r} in the model; its attention modules are {attn}")
            module = modules[name]
            n_heads = getattr(module, "n_heads", None) or getattr(module, "n_heads", None)
            if n_heads is None:
                raise TypeError(f"{name!r} ({type(module).__name__}) is not a multi-head attention module")
            bad = [h for h in idx if not 0 <= h < n_heads]
            if bad:
                raise ValueError(f"{name!r} has heads 0..{n_heads - 1}, got {bad}")
            proj = _output_projection(module)
            hs = proj.in_features // n_heads
            keep = torch.ones(proj.in_features)
            for h in idx:
                keep[h * hs:(h + 1) * hs] = 0.0

            def zero_heads(_, args, keep=keep):
                return (args[0] * keep.to(args[0]),) + tuple(args[1:])

            handles.append(proj.register_forward_pre_hook(zero_heads))
        yield
    finally:
        for h in handles:
            h.remove()
