"""CPU threads: as many PyTorch threads as this process may really use, and fewer while others keep the CPUs busy.

PyTorch starts one thread per core of the *host*, but Binder, Colab and Docker limit a process with CPU affinity or a
cgroup quota, and then the extra threads only wait for each other. Importing labkit sets PyTorch's intra-op threads
to ``usable_cpus()``, what the process may really use (affinity and the cgroup v1/v2 quota), unless
``OMP_NUM_THREADS`` or ``LABKIT_THREADS`` says otherwise. On a machine shared with another busy process (a browser,
a second notebook, a test suite), OpenMP threads that spin-wait for a descheduled partner make a 2-thread run several
times slower; ``ThreadGovernor`` (used by ``labkit.train``) measures how busy the other processes keep the CPUs and
gives PyTorch only the CPUs they leave free (see ``benchmarks/threads_cpu.py``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

__all__ = ["cgroup_cpu_limit", "usable_cpus", "configure_threads", "ThreadGovernor"]


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


configure_threads()  # on import: as many PyTorch threads as this process may really use
