"""FlashAttention's forward pass as a Triton kernel (notebook 16).

The same algorithm as ``labkit.flash`` (blocks of queries walking over blocks of keys with the online softmax),
written as one GPU kernel: each program instance owns ``BLOCK_M`` query rows of one (batch, head), keeps its
running max ``m``, denominator ``l`` and numerator ``acc`` in registers, and streams ``BLOCK_N`` keys and values
at a time through on-chip memory. The (T, T) scores never exist in the GPU's main memory: that, not fewer FLOPs,
is why the fused kernel is fast (attention's softmax is memory-bound, notebook 16's roofline).

Where there is no CUDA GPU, Triton's interpreter (``TRITON_INTERPRET=1``) runs the very same kernel on the CPU
with NumPy, one program instance at a time: slow, but exact enough to test. This module sets that variable when
it is imported on a machine without a GPU; it must be imported before anything else imports triton (Triton's
own kernels are decorated, for the interpreter or not, when it is first imported). ``TritonAttention`` pairs the kernel's forward (which also writes each row's log-sum-exp)
with ``labkit.flash``'s recomputing backward, so it trains like ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
import os
import sys

import torch
from torch import Tensor

from .flash import BlockwiseAttention

# Triton reads TRITON_INTERPRET when it is imported (its own library of kernels is decorated then), so the variable
# only takes effect if nothing imported triton before us: torch.profiler does, for one.
_IMPORTED_BEFORE = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
if not torch.cuda.is_available():  # kernels below then run in Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton
    import triton.language as tl
except ImportError:  # macOS, Windows, or a Linux without the package
    triton = tl = None

__all__ = ["HAVE_TRITON", "interpreted", "triton_attention", "TritonAttention"]

HAVE_TRITON = triton is not None


def interpreted() -> bool:
    """True when the kernels run in Triton's CPU interpreter rather than compiled for a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


if HAVE_TRITON:

    @triton.jit
    def _flash_forward(Q, K, V, O, LSE, T_q, T_k, D, scale,
                       stride_q, stride_k, stride_v, stride_o,  # elements between two (batch, head) slices
                       CAUSAL: tl.constexpr, IEEE: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        block = tl.program_id(0)  # which BLOCK_M query rows
        bh = tl.program_id(1)  # which (batch, head)
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        dims = tl.arange(0, BLOCK_D)  # the head size rounded up to a power of two; the extra lanes are masked
        row_ok, dim_ok = rows < T_q, dims < D
        q = tl.load(Q + bh * stride_q + rows[:, None] * D + dims[None, :],
                    mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        end = tl.minimum((block + 1) * BLOCK_M, T_k) if CAUSAL else T_k  # later key blocks are all masked
        for start in range(0, end, BLOCK_N):
            keys = start + cols
            key_ok = keys < T_k
            kv_mask = key_ok[:, None] & dim_ok[None, :]
            k = tl.load(K + bh * stride_k + keys[:, None] * D + dims[None, :], mask=kv_mask, other=0.0)
            v = tl.load(V + bh * stride_v + keys[:, None] * D + dims[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # (BLOCK_M, BLOCK_N)
            else:
                s = tl.dot(q, tl.trans(k)) * scale
            visible = key_ok[None, :]
            if CAUSAL:
                visible = visible & (keys[None, :] <= rows[:, None])
            s = tl.where(visible, s, float("-inf"))
            # the online softmax update (labkit.flash.online_softmax_update)
            m_new = tl.maximum(m, tl.max(s, 1))
            correction = tl.exp(m - m_new)
            p = tl.exp(s - m_new[:, None])
            l = correction * l + tl.sum(p, 1)
            if IEEE:
                acc = correction[:, None] * acc + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = correction[:, None] * acc + tl.dot(p.to(v.dtype), v)
            m = m_new
        out = acc / l[:, None]
        tl.store(O + bh * stride_o + rows[:, None] * D + dims[None, :], out.to(O.dtype.element_ty),
                 mask=row_ok[:, None] & dim_ok[None, :])
        tl.store(LSE + bh * T_q + rows, m + tl.log(l), mask=row_ok)


def _check(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> None:
    if not HAVE_TRITON:
        raise RuntimeError("Triton is not installed (it ships for Linux on x86-64 and with PyTorch's CUDA builds): "
                           "pip install triton, or use labkit.flash.blockwise_attention, the same algorithm")
    if q.dim() < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or k.shape[-1] != v.shape[-1]:
        raise ValueError(f"shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: q, k and v "
                         "need the same last dimension, k and v the same length")
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal attention needs as many queries as keys, got {q.shape[-2]} and {k.shape[-2]}")
    if interpreted() and _IMPORTED_BEFORE:
        raise RuntimeError("triton was imported (torch.profiler imports it, for one) before labkit.flash_triton could "
                           "select its CPU interpreter: import labkit.flash_triton first, or start Python with "
                           "TRITON_INTERPRET=1 set")
    if q.device.type != "cuda" and not interpreted():
        raise RuntimeError(f"the tensors are on {q.device} but Triton is compiling for a GPU: move them to cuda, or "
                           "set TRITON_INTERPRET=1 before labkit.flash_triton is first imported")


def _forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, block_m: int, block_n: int
             ) -> tuple[Tensor, Tensor]:
    lead, T_q, D = q.shape[:-2], q.shape[-2], q.shape[-1]
    T_k = k.shape[-2]
    q3, k3, v3 = (t.reshape(-1, t.shape[-2], D).contiguous() for t in (q, k, v))  # (B·H, T, D)
    out = torch.empty_like(q3)
    lse = torch.empty(q3.shape[:-1], dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(T_q, block_m), q3.shape[0])
    _flash_forward[grid](q3, k3, v3, out, lse, T_q, T_k, D, scale,
                         q3.stride(0), k3.stride(0), v3.stride(0), out.stride(0),
                         CAUSAL=causal, IEEE=q.dtype == torch.float32,
                         BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(D)))
    return out.view(*lead, T_q, D), lse.view(*lead, T_q)


class TritonAttention(BlockwiseAttention):
    """The Triton kernel's forward; the backward is ``labkit.flash.BlockwiseAttention``'s (blockwise, from the
    saved log-sum-exp)."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float, block_m: int, block_n: int):
        out, lse = _forward(q, k, v, causal, scale, block_m, block_n)
        ctx.save_for_backward(q, k, v, out, lse.to(q.dtype))
        ctx.settings = (causal, scale, block_m, block_n)
        return out


def triton_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, scale: float | None = None,
                     block_m: int = 64, block_n: int = 64) -> Tensor:
    """softmax(Q Kᵀ · scale [causal mask]) V for q (..., T_q, d), k and v (..., T_k, d) with the Triton kernel:
    the same result (and, through ``labkit.flash``'s backward, gradients) as ``F.scaled_dot_product_attention``.
    Block sizes are powers of two of at least 16 (``tl.dot``'s smallest tile)."""
    _check(q, k, v, causal)
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"{name} must be a power of two of at least 16, got {b}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return TritonAttention.apply(q, k, v, causal, scale, block_m, block_n)
