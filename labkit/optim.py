"""Optimizers and parameter grouping: AdamW's decay groups, Muon, and Muon+AdamW as one optimizer.

``decay_groups`` splits parameters as GPT-2 does (decay on matrices and embeddings,
none on biases and norm gains). ``split_params`` picks the transformer blocks'
weight matrices for Muon and leaves the rest to AdamW; ``MuonAdamW`` steps both
as one optimizer, so that ``labkit.train`` and its LR schedule drive them together::

    muon, rest = split_params(model, model.transformer.h)
    opt = MuonAdamW(muon, decay_groups(rest, 0.1), muon_lr=0.02, adamw_lr=3e-3)

``Muon`` is ``torch.optim.Muon`` with the Newton-Schulz iteration run in a dtype
of one's choice. PyTorch runs it in bfloat16, which is fast on a GPU and on CPUs
with bfloat16 instructions (AVX-512-BF16, AMX) but emulated, 40-100x slower, on
the others; ``ns_dtype="auto"`` measures which of bfloat16 and float32 multiplies
faster here (``fast_matmul_dtype``) and uses that one.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

__all__ = ["decay_groups", "split_params", "Muon", "MuonAdamW", "fast_matmul_dtype"]


# --- parameter groups ------------------------------------------------------------------

def decay_groups(params, weight_decay: float) -> list[dict]:
    """AdamW parameter groups as GPT-2 has them: weight decay on the weight matrices and embeddings
    (2-D and up), none on biases and norm gains (1-D)."""
    params = list(params)
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def split_params(model: nn.Module, blocks: nn.Module | None = None) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's, AdamW's): the 2-D weight matrices inside the transformer blocks go to Muon;
    the embeddings, the output layer, every norm gain and every bias go to AdamW. ``blocks`` is
    the stack of blocks (default: a GPT's ``model.transformer.h``; a BERT passes ``model.blocks``)."""
    blocks = model.transformer.h if blocks is None else blocks
    in_blocks = {id(p) for p in blocks.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]  # a tied matrix appears once
    muon = [p for p in params if id(p) in in_blocks and p.dim() == 2]
    chosen = {id(p) for p in muon}
    return muon, [p for p in params if id(p) not in chosen]


# --- which dtype multiplies fastest here -------------------------------------------------

_FAST_DTYPE: dict[str, torch.dtype] = {}  # device -> dtype, measured once per process


def _matmul_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    """Wall time of one ``a @ b`` (synchronised on a GPU)."""
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    a @ b
    sync()
    return time.perf_counter() - t0


def fast_matmul_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """``torch.bfloat16`` if a bfloat16 matrix product is at least as fast as a float32 one on
    ``device``, else ``torch.float32``. Measured once per process and device (a few ms) on a
    Muon-sized product, (512, 128) @ (128, 512); on CUDA it is bfloat16 without measuring.
    ``LABKIT_MUON_DTYPE=bfloat16`` (or ``float32``) skips the measurement and pins the choice."""
    pinned = os.environ.get("LABKIT_MUON_DTYPE", "").strip().lower()
    if pinned:
        if pinned not in ("bfloat16", "float32"):
            raise ValueError(f"LABKIT_MUON_DTYPE must be 'bfloat16' or 'float32', got {pinned!r}")
        return getattr(torch, pinned)
    device = torch.device(device)
    key = str(device)
    if key not in _FAST_DTYPE:
        if device.type == "cuda":
            _FAST_DTYPE[key] = torch.bfloat16
        else:
            g = torch.Generator().manual_seed(0)
            a32, b32 = torch.randn(512, 128, generator=g).to(device), torch.randn(128, 512, generator=g).to(device)
            a16, b16 = a32.bfloat16(), b32.bfloat16()
            _matmul_seconds(a32, b32), _matmul_seconds(a16, b16)  # warm-up: kernels chosen, memory touched
            t32 = t16 = float("inf")
            for _ in range(3):  # interleaved, the fastest of each: robust to a busy machine
                t32 = min(t32, _matmul_seconds(a32, b32))
                t16 = min(t16, _matmul_seconds(a16, b16))
                if t16 > 4 * t32:  # emulated bfloat16: clear at once, don't spend more time on it
                    break
            _FAST_DTYPE[key] = torch.bfloat16 if t16 <= t32 else torch.float32
    return _FAST_DTYPE[key]


# --- Muon ---------------------------------------------------------------------------------

def _newton_schulz(grad: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                   dtype: torch.dtype) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz iteration (``_zeropower_via_newtonschulz``) in ``dtype``:
    an approximately orthogonal matrix with ``grad``'s singular vectors (every singular value ~1)."""
    a, b, c = coefficients
    x = grad.to(dtype, copy=True)  # a copy even when dtype is grad's: the division below is in place
    if grad.size(0) > grad.size(1):
        x = x.T  # (small, large): the Gram matrix below is the small one
    x.div_(x.norm().clamp(min=eps))  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.T  # (m, m)
        update = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b G + c G^2
        x = torch.addmm(x, update, x, beta=a)  # a X + (b G + c G^2) X
    if grad.size(0) > grad.size(1):
        x = x.T
    return x


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` (momentum, Nesterov, the shape-adjusted lr, decoupled weight decay) with the
    Newton-Schulz iteration in ``ns_dtype``: ``"auto"`` (``fast_matmul_dtype`` of the parameters' device),
    or a dtype. With ``ns_dtype=torch.bfloat16`` it computes exactly what ``torch.optim.Muon`` does."""

    def __init__(self, params, *args, ns_dtype: torch.dtype | str = "auto", **kwargs):
        if ns_dtype != "auto" and not isinstance(ns_dtype, torch.dtype):
            raise ValueError(f"ns_dtype must be 'auto' or a torch dtype, got {ns_dtype!r}")
        super().__init__(params, *args, **kwargs)
        self.ns_dtype = ns_dtype

    def _dtype_for(self, p: torch.Tensor) -> torch.dtype:
        return fast_matmul_dtype(p.device) if self.ns_dtype == "auto" else self.ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        from torch.optim._muon import _adjust_lr

        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            lr = lr.item() if isinstance(lr, torch.Tensor) else lr
            for p, grad, buf in zip(params, grads, bufs):
                # the order of torch's _single_tensor_muon, so that bfloat16 gives its very numbers
                buf.lerp_(grad, 1 - momentum)  # momentum buffer: B = mu B + (1 - mu) g
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = _newton_schulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                        self._dtype_for(p))
                p.mul_(1 - lr * wd)  # decoupled weight decay
                p.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """``labkit.optim.Muon`` on some parameters and ``torch.optim.AdamW`` on the others, as one optimizer.

    ``param_groups`` is the AdamW groups then the Muon group, the very dicts the two inner
    optimizers use, so an LR scheduler (``LambdaLR``, ``labkit.train``) that scales every
    group's ``lr`` scales both with one schedule, each from its own peak. Newton-Schulz runs in
    ``ns_dtype`` (default ``"auto"``: bfloat16 where it is fast, float32 where it is emulated).
    """

    def __init__(self, muon_params, adamw_groups, muon_lr: float = 0.02, adamw_lr: float = 3e-3,
                 betas: tuple[float, float] = (0.9, 0.95), muon_momentum: float = 0.95,
                 muon_weight_decay: float = 0.0, ns_dtype: torch.dtype | str = "auto"):
        self.adamw = torch.optim.AdamW(adamw_groups, lr=adamw_lr, betas=betas)
        self.muon = Muon(muon_params, lr=muon_lr, momentum=muon_momentum, weight_decay=muon_weight_decay,
                         adjust_lr_fn="original", ns_dtype=ns_dtype)
        super().__init__(self.adamw.param_groups + self.muon.param_groups, defaults={})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.adamw.step()
        self.muon.step()
        return loss

    def state_dict(self) -> dict:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.adamw.load_state_dict(state_dict["adamw"])
        self.muon.load_state_dict(state_dict["muon"])
        self.param_groups = self.adamw.param_groups + self.muon.param_groups  # loading made new dicts


def ema_of(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights (``ema.update_parameters(model)`` after each step;
    ``ema.module`` is the averaged network), with the decay warmed up as diffusers' ``EMAModel`` does:
    min(decay, (1 + n) / (10 + n)) at the n-th update. Without the warm-up, the average of a short run keeps a
    share decay^steps of the initial weights (0.995^330: 19%), whose output layer predicts no noise: the EMA
    network then predicts noise ~20% too small at the highest noise levels, and DDIM, which divides by
    sqrt(abar_t) there, blows its samples up to +-70."""
    from torch.optim.swa_utils import AveragedModel

    if not 0 < decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")

    def update(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + int(n)) / (10 + int(n)))
        return averaged * d + current * (1 - d)

    return AveragedModel(model, avg_fn=update, use_buffers=True)
