"""How fast, and how much: FLOP counts, a device's measured peak and bandwidth, throughput and MFU, memory.

``matmul_params`` and ``training_flops`` count a model's FLOPs (6 per matmul weight per token for a training step,
``FlopCounterMode`` for the exact count); ``measured_matmul_flops`` and ``measured_bandwidth`` measure the device's
peak and memory bandwidth, ``peak_flops`` gives a GPU's data-sheet bf16 peak; ``Throughput`` turns tokens and seconds
into tokens/s and model FLOPs utilisation; ``memory_stats`` and ``PeakMemory`` measure memory.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

import torch
from torch import nn

from .device import get_device

__all__ = ["peak_flops", "mfu_peak", "measured_matmul_flops", "measured_bandwidth", "Throughput", "memory_stats", "PeakMemory",
           "matmul_params", "training_flops", "analytic_training_flops", "local_bytes"]


# Dense (no sparsity) bf16/fp16 tensor-core peaks in FLOP/s, from the vendors' data sheets.
_PEAK_FLOPS = {
    "H200": 989e12, "H100": 989e12, "A100": 312e12, "A10G": 125e12, "A10": 125e12,
    "L40S": 362e12, "L4": 121e12, "V100": 125e12, "T4": 65e12, "RTX 4090": 165e12, "RTX 3090": 71e12,
}


def peak_flops(device: torch.device | str | None = None) -> float | None:
    """The GPU's dense bf16/fp16 peak in FLOP/s if it is a known model, else None."""
    device = torch.device(device) if device is not None else get_device()
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in _PEAK_FLOPS.items():  # longest names first would matter only for 'A10' vs 'A100'
        if key in name and not (key == "A10" and "A100" in name):
            return value
    return None


def mfu_peak(device: torch.device | str, dtype: torch.dtype, measured: float) -> tuple[float, str]:
    """The FLOP/s an MFU in ``dtype`` is measured against, and where that figure comes from: a known CUDA GPU's
    data-sheet dense peak for bf16/fp16 work (its tensor cores); otherwise ``measured``, the rate of one large
    matmul in the same dtype on the same device (``measured_matmul_flops``). A float32 step is never divided by
    a bf16 peak: on a GPU that would understate its MFU several times over."""
    device = torch.device(device)
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        sheet = peak_flops(device)
        if sheet is not None:
            return sheet, "data-sheet bf16/fp16 peak"
    return measured, f"measured {str(dtype).removeprefix('torch.')} matmul rate"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: kernels chosen, memory allocated
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measured_matmul_flops(device: torch.device | str | None = None, n: int = 2048,
                          dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """FLOP/s of one large (n, n) @ (n, n) matmul on ``device`` (2n³ FLOPs), best of ``repeats``: the practical
    peak a model's FLOP/s is measured against where there is no data-sheet figure (a CPU: notebook 16's MFU)."""
    device = torch.device(device) if device is not None else get_device()
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _best_seconds(lambda: a @ b, device, repeats)


def measured_bandwidth(device: torch.device | str | None = None, mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s of copying a ``mib`` MiB float32 tensor into another on ``device`` (read + write counted), best of
    ``repeats``: the memory bandwidth a roofline needs."""
    device = torch.device(device) if device is not None else get_device()
    src = torch.randn(mib * 2**18, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_seconds(lambda: dst.copy_(src), device, repeats)


def memory_stats(device: torch.device | str | None = None) -> dict:
    """Memory figures in GiB: allocated and peak on a GPU; the process's resident size on the CPU."""
    device = torch.device(device) if device is not None else get_device()
    gib = 2**30
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return {"allocated_gib": torch.cuda.memory_allocated(device) / gib,
                "peak_gib": torch.cuda.max_memory_allocated(device) / gib,
                "free_gib": free / gib, "total_gib": total / gib}
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib
        if platform.system() == "Darwin":
            rss /= 1024
        return {"peak_rss_gib": rss}
    except ImportError:  # Windows
        return {}


class PeakMemory:
    """How much memory a block of code needed at its peak, above what was in use when it began::

        with PeakMemory() as mem:
            train(...)
        mem.peak_mib                      # measured

    On a CUDA device: ``torch.cuda.max_memory_allocated`` (exact, the tensors only). On the CPU: the
    process's resident set size, sampled every ``interval`` seconds in a background thread (tensors,
    the allocator's caches and Python objects alike; a peak shorter than the interval can be missed).
    """

    def __init__(self, device: torch.device | str | None = None, interval: float = 0.002):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.interval = interval
        self.peak_bytes = 0

    def _rss(self) -> int:
        import psutil

        return psutil.Process().memory_info().rss

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        import threading

        self._start = self._rss()
        self._max = self._start
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, self._rss())
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._max, self._rss()) - self._start

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


@dataclass
class Throughput:
    """Measure tokens per second (and, on CUDA, model FLOPs utilisation) over a span of work.

    >>> meter = Throughput(flops_per_token=6 * n_params, device=device)
    >>> with meter: ...train some steps...; meter.add(tokens)
    >>> meter.tokens_per_s, meter.mfu
    """

    flops_per_token: float | None = None  # ~6 × parameters for a transformer's forward+backward
    device: torch.device | str | None = None
    tokens: int = 0
    seconds: float = 0.0
    unit: str = "tokens"  # what add() counts, for printing (tokens, samples, images)
    peak: float | None = None  # FLOP/s to measure against; None: the GPU's data-sheet peak (peak_flops)

    def _sync(self):
        if self.device is not None and torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self):
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds += time.perf_counter() - self._start
        return False

    def add(self, tokens: int) -> None:
        self.tokens += int(tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def mfu(self) -> float | None:
        """Achieved model FLOP/s over ``peak`` (if given) or the GPU's data-sheet peak; None without either (a CPU
        without ``peak``: pass ``peak=measured_matmul_flops(device)``) or without ``flops_per_token``."""
        if self.flops_per_token is None:
            return None
        peak = self.peak if self.peak is not None else (peak_flops(self.device) if self.device is not None else None)
        return None if peak is None else self.tokens_per_s * self.flops_per_token / peak

    def __str__(self) -> str:
        text = f"{self.tokens_per_s:,.0f} {self.unit}/s over {self.seconds:.2f} s"
        return text + (f", MFU {self.mfu:.1%}" if self.mfu is not None else "")


# --- FLOPs of a training step ----------------------------------------------------------------------------

def matmul_params(model: nn.Module, trainable_only: bool = False) -> int:
    """N of the 6·N·tokens rule: the weights of the model's ``nn.Linear`` layers (a matmul each per token; an
    embedding lookup and a norm are not matmuls), and LoRA's A and B beside them."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    weights += [p for m in model.modules() if hasattr(m, "lora_A") for p in (m.lora_A, m.lora_B)]
    return sum(w.numel() for w in weights if w.requires_grad or not trainable_only)


def training_flops(step, *args, **kwargs) -> int:
    """The floating-point operations ``step(*args, **kwargs)`` runs (a forward and backward pass, say), counted
    by ``torch.utils.flop_counter.FlopCounterMode``: every matmul, convolution and attention kernel that has a
    FLOP formula (a multiply-add is 2). PyTorch's CPU fused attention has none: on the CPU, run the model's
    explicit attention (``fused_attention=False``) to count the attention scores as well."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(*args, **kwargs)
    return int(counter.get_total_flops())


def analytic_training_flops(n_params: int, n_tokens: int, n_trainable: int | None = None) -> int:
    """6·N·tokens: per token, a forward pass costs 2N (a multiply and an add per weight), the backward pass 2N
    for the gradient of the activations and 2N for the gradient of the weights. With frozen weights
    (``n_trainable`` < N, as in LoRA) the weight gradients cost only 2·n_trainable: 4N + 2·n_trainable."""
    if n_trainable is None:
        n_trainable = n_params
    return int((4 * n_params + 2 * n_trainable) * n_tokens)


def local_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The bytes this process holds of parameters, gradients and optimizer state (a sharded tensor counts its
    local shard only: FSDP's DTensors)."""
    def nbytes(t):
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    return {"parameters": sum(nbytes(p) for p in params),
            "gradients": sum(nbytes(p.grad) for p in params if p.grad is not None),
            "optimizer": sum(nbytes(v) for v in state)}
