"""Devices, seeding, mixed precision and throughput figures.

``get_device()`` picks CUDA, then Apple's MPS, then the CPU; the environment
variable ``LABKIT_DEVICE`` (or the ``prefer`` argument) overrides the choice.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "available_devices", "get_device", "seed_everything", "autocast_dtype", "autocast",
    "describe", "memory_stats", "peak_flops", "Throughput",
]


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    """Names of the devices this machine can use, best first (e.g. ['cuda', 'cuda:0', 'cpu'])."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def get_device(prefer: str | None = None) -> torch.device:
    """The device to use: ``prefer``, else ``$LABKIT_DEVICE``, else cuda → mps → cpu."""
    name = prefer if prefer is not None else os.environ.get("LABKIT_DEVICE") or None
    available = available_devices()
    if name is None:
        return torch.device(available[0])
    name = str(name).strip().lower()
    source = "prefer" if prefer is not None else "LABKIT_DEVICE"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"Unknown device {name!r} (from {source}). Use one of: {', '.join(available)}."
        ) from None
    canonical = device.type if device.index is None else f"{device.type}:{device.index}"
    if canonical not in available:
        raise ValueError(
            f"Device {name!r} (from {source}) is not available on this machine. "
            f"Available: {', '.join(available)}. Unset LABKIT_DEVICE or pick one of these."
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run repeats exactly on the CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """bfloat16 where the GPU supports it, float16 on older GPUs and MPS, None (full precision) on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


def autocast(device: torch.device | str, enabled: bool = True):
    """A mixed-precision context for ``device``: bf16/fp16 on a GPU, a no-op on the CPU."""
    device = torch.device(device)
    dtype = autocast_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


def describe(device: torch.device | str | None = None) -> dict:
    """Print (and return) torch version, device, CPU threads, and the GPU's name and memory."""
    device = torch.device(device) if device is not None else get_device()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(terse=True),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["autocast_dtype"] = str(autocast_dtype(device)).replace("torch.", "")
    elif device.type == "mps":
        info["gpu"] = "Apple GPU (MPS)"
    for key, value in info.items():
        print(f"{key:>15}: {value}")
    return info


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
        """Achieved model FLOP/s over the GPU's peak; None on the CPU or an unknown GPU."""
        if self.flops_per_token is None or self.device is None:
            return None
        peak = peak_flops(self.device)
        return None if peak is None else self.tokens_per_s * self.flops_per_token / peak

    def __str__(self) -> str:
        text = f"{self.tokens_per_s:,.0f} {self.unit}/s over {self.seconds:.2f} s"
        return text + (f", MFU {self.mfu:.1%}" if self.mfu is not None else "")
