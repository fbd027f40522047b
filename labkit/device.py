"""Devices, CPU threads, seeding, mixed precision and throughput figures.

``get_device()`` picks CUDA, then Apple's MPS, then the CPU; the environment
variable ``LABKIT_DEVICE`` (or the ``prefer`` argument) overrides the choice.

CPU threads. PyTorch starts one thread per core of the *host*, but Binder, Colab and Docker limit a
process with CPU affinity or a cgroup quota, and then the extra threads only wait for each other.
Importing this module sets PyTorch's intra-op threads to ``usable_cpus()``, what the process may
really use (affinity and the cgroup v1/v2 quota), unless ``OMP_NUM_THREADS`` or ``LABKIT_THREADS``
says otherwise. On a machine shared with another busy process (a browser, a second notebook, a test
suite), OpenMP threads that spin-wait for a descheduled partner make a 2-thread run several times
slower; ``ThreadGovernor`` (used by ``labkit.train``) measures how busy the other processes keep the
CPUs and gives PyTorch only the CPUs they leave free (see ``benchmarks/threads_cpu.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "available_devices", "get_device", "seed_everything", "autocast_dtype", "autocast",
    "describe", "memory_stats", "peak_flops", "measured_matmul_flops", "measured_bandwidth", "Throughput", "PeakMemory",
    "cgroup_cpu_limit", "usable_cpus", "configure_threads", "ThreadGovernor",
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


# --- CPU threads ---------------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(proc_self_cgroup: str | os.PathLike = "/proc/self/cgroup",
                     cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None if it has none.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") in the process's group or any parent;
    cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: no quota). The tightest one wins.
    """
    root, lines = Path(cgroup_root), _read(Path(proc_self_cgroup))
    if lines is None:
        return None
    limits = []
    for line in lines.splitlines():
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # v2: one unified hierarchy
            candidates = [(root / rel, "v2")]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            mount = next((root / d for d in ("cpu,cpuacct", "cpuacct,cpu", "cpu") if (root / d).is_dir()), root)
            candidates = [(mount / rel, "v1")]
        else:
            continue
        for group, kind in candidates:
            for folder in (group, *group.parents):  # a limit may sit on a parent group
                if kind == "v2":
                    text = _read(folder / "cpu.max")
                    if text and not text.startswith("max"):
                        quota, period = text.split()[:2]
                        limits.append(int(quota) / int(period))
                else:
                    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                    if quota and period and int(quota) > 0:
                        limits.append(int(quota) / int(period))
                if folder == root:
                    break
    return min(limits) if limits else None


def usable_cpus() -> int:
    """How many CPUs this process may really use: its affinity mask, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 0.05)))  # 1.5 CPUs of quota: 2 threads; 2.0: 2
    return max(1, n)


def _pinned_threads() -> int | None:
    for var in ("LABKIT_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def configure_threads() -> int:
    """Set PyTorch's intra-op threads to ``usable_cpus()`` (or to ``$LABKIT_THREADS``) and return it.

    Never raises the count above PyTorch's own choice (one per physical core): that is already the
    fastest on a machine of one's own. ``OMP_NUM_THREADS`` set by the user is left as it is.
    """
    pinned = _pinned_threads()
    if pinned is not None:
        if os.environ.get("LABKIT_THREADS"):
            torch.set_num_threads(pinned)
        return torch.get_num_threads()
    n = min(torch.get_num_threads(), usable_cpus())
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def _busy_cpu_seconds(cpus: set[int] | None) -> float | None:
    """CPU-seconds spent busy (user, nice, system, irq, softirq) so far by everything on ``cpus``."""
    text = _read(Path("/proc/stat"))
    if text is None:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[:7])
        total += user + nice + system + irq + softirq
    return total / tick


class ThreadGovernor:
    """Give PyTorch only the CPUs that other processes leave free, re-measured every ``interval`` s.

    ``update()`` is cheap (it reads /proc/stat at most once per ``interval``); call it once per
    training step. Over each interval it measures the CPU time the whole machine spent busy on this
    process's CPUs, subtracts this process's own, and so knows how many CPUs the *others* kept busy.
    Threads = CPUs available at the start, minus those, at least 1. Alone it changes nothing; beside
    a CPU-bound 2-thread process on a 2-core machine it drops to 1 thread, which avoids OpenMP's
    spin-waits for a descheduled partner (measured in ``benchmarks/threads_cpu.py``). It does
    nothing where threads were pinned (``LABKIT_THREADS``, ``OMP_NUM_THREADS``), where /proc/stat is
    missing (macOS, Windows), or when ``LABKIT_THREAD_POLICY=fixed``.
    """

    def __init__(self, interval: float = 2.0, enabled: bool | None = None):
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except AttributeError:
            self.cpus = None
        self.max_threads = torch.get_num_threads()
        self.interval = interval
        if enabled is None:
            enabled = (os.environ.get("LABKIT_THREAD_POLICY", "adaptive") != "fixed"
                       and _pinned_threads() is None and self.max_threads > 1)
        self.enabled = enabled and _busy_cpu_seconds(self.cpus) is not None
        self.changes: list[tuple[float, int]] = []  # (seconds since start, threads) at each change
        self._t_start = time.perf_counter()
        self._mark()

    def _mark(self) -> None:
        self._t, self._own, self._busy = time.perf_counter(), time.process_time(), _busy_cpu_seconds(self.cpus)

    def others_busy(self) -> float | None:
        """CPUs kept busy by other processes since the last measurement (None before ``interval`` s)."""
        wall = time.perf_counter() - self._t
        if not self.enabled or wall < self.interval:
            return None
        busy, own = _busy_cpu_seconds(self.cpus), time.process_time()
        others = max(0.0, (busy - self._busy) - (own - self._own)) / wall
        self._mark()
        return others

    def update(self) -> int:
        """Re-measure if ``interval`` has passed and set the thread count; returns the count."""
        others = self.others_busy()
        if others is not None:
            free = self.max_threads - int(others + 0.4)  # a CPU counts as taken once it is ~60% busy
            n = max(1, min(self.max_threads, free))
            if n != torch.get_num_threads():
                torch.set_num_threads(n)
                self.changes.append((round(time.perf_counter() - self._t_start, 1), n))
        return torch.get_num_threads()

    def close(self) -> None:
        """Give back the thread count the governor started with."""
        if self.enabled and torch.get_num_threads() != self.max_threads:
            torch.set_num_threads(self.max_threads)


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


configure_threads()  # on import: as many PyTorch threads as this process may really use
