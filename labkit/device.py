"""Which device to compute on, seeding, and mixed precision.

``get_device()`` picks CUDA, then Apple's MPS, then the CPU; the environment variable ``LABKIT_DEVICE`` (or the
``prefer`` argument) overrides the choice. ``seed_everything`` makes a run repeat exactly on the CPU;
``autocast(device)`` is bf16 (or fp16) mixed precision on a GPU and nothing on the CPU. ``module_device(model)``
and ``to_device(batch, device)`` keep a model and its inputs together: the zoo's recipes train on ``get_device()``
and every evaluation moves its inputs to the model's device. CPU threads are
``labkit.threads``'; FLOP rates, bandwidth, throughput and memory meters are ``labkit.perf``'s.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random

import numpy as np
import torch

from .threads import usable_cpus

__all__ = ["available_devices", "get_device", "module_device", "to_device", "seed_everything", "autocast_dtype",
           "autocast", "describe"]


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


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer): where its inputs must be. The CPU if it has none."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(obj, device: torch.device | str):
    """``obj`` with every tensor in it on ``device``: a tensor, or tuples, lists and dicts of them (nested); anything
    else unchanged. On the same device a tensor is returned as it is, so on the CPU nothing is copied."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)  # a NamedTuple takes fields
    return obj


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


def describe(device: torch.device | str | None = None) -> dict:
    """Print (and return) torch version, device, CPU threads, and the GPU's name and memory."""
    device = torch.device(device) if device is not None else get_device()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "usable_cpus": usable_cpus(),  # affinity and cgroup quota
        "cpu_count": os.cpu_count(),  # the host's, which a container may not get
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
