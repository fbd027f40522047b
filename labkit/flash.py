"""FlashAttention's algorithm in plain PyTorch, blockwise (notebook 16).

Attention softmax(Q Kᵀ · scale) V, computed without ever holding the (T, T) matrix of scores: the queries are
cut into blocks of ``block_q`` rows and the keys and values into blocks of ``block_k``; each query block walks
over the key blocks keeping three running numbers per row (the **online softmax**, Milakov & Gimelshein 2018):

    m   the largest score seen so far          (the softmax's shift, for stability)
    l   the sum of exp(score - m) so far       (the softmax's denominator)
    acc the sum of exp(score - m) · v so far   (the numerator, a d-vector)

and a new block of scores s with values V_j updates them (``online_softmax_update``)::

    m' = max(m, max_j s)
    l' = exp(m - m') · l + sum_j exp(s - m')
    acc' = exp(m - m') · acc + exp(s - m') @ V_j

At the end a row's output is acc / l, and its log-sum-exp m + log l is all the backward pass needs: it
recomputes each block's probabilities exp(s - lse) instead of storing them (FlashAttention-2's backward, Dao
2023). Memory is O(T · d) instead of O(T²), at the price of computing the scores twice. The result equals
``F.scaled_dot_product_attention`` in forward and backward (``tests/test_flash.py``); the point here is the
algorithm, which a fused GPU kernel (Triton, CUDA) runs with each block in fast on-chip memory.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["online_softmax_update", "blockwise_attention", "BlockwiseAttention"]


def online_softmax_update(m: Tensor, l: Tensor, acc: Tensor, scores: Tensor, v: Tensor
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the online softmax: the running max ``m`` (..., R), denominator ``l`` (..., R) and numerator
    ``acc`` (..., R, d) after a new block of ``scores`` (..., R, C) with its values ``v`` (..., C, d). Scores of
    -inf (masked keys) contribute nothing; a row that has seen only -inf keeps m = -inf, l = 0, acc = 0."""
    m_new = torch.maximum(m, scores.amax(-1))
    safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # rows with nothing seen yet
    p = torch.exp(scores - safe.unsqueeze(-1))
    correction = torch.exp(m - safe)
    return m_new, correction * l + p.sum(-1), correction.unsqueeze(-1) * acc + p @ v


def _key_blocks(qi: Tensor, q0: int, k: Tensor, v: Tensor, causal: bool, scale: float, block_k: int):
    """For the query block ``qi`` (rows q0, q0+1, ...): each key block's start, keys, values and the block of
    scores qi kjᵀ · scale, -inf where a key comes after its query (causal); key blocks entirely after the
    query block are skipped."""
    rows, T_k = qi.shape[-2], k.shape[-2]
    k_end = min(T_k, q0 + rows) if causal else T_k
    for k0 in range(0, k_end, block_k):
        kj, vj = k[..., k0:k0 + block_k, :], v[..., k0:k0 + block_k, :]
        s = (qi @ kj.transpose(-2, -1)) * scale
        if causal and k0 + kj.shape[-2] - 1 > q0:  # the block reaches past the first query: mask it
            later = torch.arange(k0, k0 + kj.shape[-2], device=qi.device)[None, :] > \
                torch.arange(q0, q0 + rows, device=qi.device)[:, None]
            s = s.masked_fill(later, -math.inf)
        yield k0, kj, vj, s


def _forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, block_q: int, block_k: int
             ) -> tuple[Tensor, Tensor]:
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=q.dtype, device=q.device)
    for q0 in range(0, q.shape[-2], block_q):
        qi = q[..., q0:q0 + block_q, :]
        rows = qi.shape[-2]
        m = torch.full(qi.shape[:-1], -math.inf, dtype=q.dtype, device=q.device)
        l = torch.zeros_like(m)
        acc = torch.zeros_like(qi)
        for _, _, vj, s in _key_blocks(qi, q0, k, v, causal, scale, block_k):
            m, l, acc = online_softmax_update(m, l, acc, s, vj)
        out[..., q0:q0 + rows, :] = acc / l.unsqueeze(-1)
        lse[..., q0:q0 + rows] = m + torch.log(l)
    return out, lse


def _backward(q, k, v, out, lse, dout, causal, scale, block_q, block_k):
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = (dout * out).sum(-1)  # D_i = rowsum(dO ∘ O) = sum_j P_ij dP_ij
    for q0 in range(0, q.shape[-2], block_q):
        qi, doi = q[..., q0:q0 + block_q, :], dout[..., q0:q0 + block_q, :]
        rows = qi.shape[-2]
        lse_i, delta_i = lse[..., q0:q0 + rows, None], delta[..., q0:q0 + rows, None]
        for k0, kj, vj, s in _key_blocks(qi, q0, k, v, causal, scale, block_k):
            p = torch.exp(s - lse_i)  # the softmax probabilities, recomputed
            dv[..., k0:k0 + block_k, :] += p.transpose(-2, -1) @ doi
            ds = p * (doi @ vj.transpose(-2, -1) - delta_i)  # softmax's backward: P ∘ (dP - D)
            dq[..., q0:q0 + rows, :] += (ds @ kj) * scale
            dk[..., k0:k0 + block_k, :] += (ds.transpose(-2, -1) @ qi) * scale
    return dq, dk, dv


class BlockwiseAttention(torch.autograd.Function):
    """Autograd for ``blockwise_attention``: saves Q, K, V, the output and the log-sum-exp per row (O(T·d)),
    never the (T, T) probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float, block_q: int, block_k: int):
        out, lse = _forward(q, k, v, causal, scale, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.settings = (causal, scale, block_q, block_k)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, out, lse, dout.contiguous(), *ctx.settings)
        return dq, dk, dv, None, None, None, None


def blockwise_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, scale: float | None = None,
                        block_q: int = 64, block_k: int = 64) -> Tensor:
    """softmax(Q Kᵀ · scale [causal mask]) V for q (..., T_q, d), k and v (..., T_k, d), in blocks, with
    FlashAttention's memory: the same result and gradients as ``F.scaled_dot_product_attention(q, k, v,
    is_causal=causal, scale=scale)``. ``causal`` needs T_q == T_k (query i sees keys 0..i)."""
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: q and k "
                         "need the same last dimension, k and v the same length")
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal attention needs as many queries as keys, got {q.shape[-2]} and {k.shape[-2]}")
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block sizes must be positive, got block_q={block_q}, block_k={block_k}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return BlockwiseAttention.apply(q, k, v, causal, scale, block_q, block_k)
