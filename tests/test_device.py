import contextlib

import pytest
import torch

from labkit import device as dev


def test_default_is_best_available(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    assert str(dev.get_device()) == dev.available_devices()[0]
    if not torch.cuda.is_available() and not dev._mps_available():
        assert dev.get_device().type == "cpu"


def test_env_override_and_prefer(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert dev.get_device() == torch.device("cpu")
    monkeypatch.setenv("LABKIT_DEVICE", " CPU ")
    assert dev.get_device() == torch.device("cpu")
    assert dev.get_device("cpu") == torch.device("cpu")


def test_unknown_name_is_clear_error(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"Unknown device 'tpu' \(from LABKIT_DEVICE\).*cpu"):
        dev.get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_device_lists_available(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    with pytest.raises(ValueError, match=r"'cuda:1'.*not available.*Available: .*cpu"):
        dev.get_device("cuda:1")
    with pytest.raises(ValueError, match="not available"):
        dev.get_device("cuda")


def test_seed_everything_repeats():
    import random

    import numpy as np

    dev.seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3))
    dev.seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_autocast_is_noop_on_cpu():
    assert dev.autocast_dtype("cpu") is None
    ctx = dev.autocast("cpu")
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_describe_prints_versions(capsys):
    info = dev.describe("cpu")
    out = capsys.readouterr().out
    assert info["torch"] == torch.__version__ and torch.__version__ in out and "cpu_threads" in out


def test_throughput_counts_tokens():
    meter = dev.Throughput(flops_per_token=6 * 1000, device="cpu")
    with meter:
        torch.randn(200, 200) @ torch.randn(200, 200)
        meter.add(5000)
    assert meter.tokens == 5000 and meter.seconds > 0
    assert meter.tokens_per_s == pytest.approx(5000 / meter.seconds)
    assert meter.mfu is None  # no peak figure for a CPU
    assert "tokens/s" in str(meter)


# --- CPU threads: affinity, cgroup quotas, and the governor on a shared machine -----------------

def _fake_cgroup(tmp_path, self_cgroup: str, files: dict[str, str]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc_self_cgroup").write_text(self_cgroup)
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    return dict(proc_self_cgroup=tmp_path / "proc_self_cgroup", cgroup_root=root)


def test_cgroup_v2_quota_in_own_group_and_parent(tmp_path):
    paths = _fake_cgroup(tmp_path, "0::/user.slice/lab\n",
                         {"user.slice/lab/cpu.max": "150000 100000\n", "user.slice/cpu.max": "max 100000\n"})
    assert dev.cgroup_cpu_limit(**paths) == pytest.approx(1.5)
    paths = _fake_cgroup(tmp_path / "b", "0::/user.slice/lab\n",
                         {"user.slice/lab/cpu.max": "max 100000\n", "user.slice/cpu.max": "100000 100000\n"})
    assert dev.cgroup_cpu_limit(**paths) == pytest.approx(1.0)  # the parent's limit binds


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    paths = _fake_cgroup(tmp_path, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
                         {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
                          "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert dev.cgroup_cpu_limit(**paths) == pytest.approx(2.0)
    paths = _fake_cgroup(tmp_path / "b", "3:cpu,cpuacct:/\n",
                         {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert dev.cgroup_cpu_limit(**paths) is None
    paths = _fake_cgroup(tmp_path / "c", "0::/\n", {"cpu.max": "max 100000\n"})
    assert dev.cgroup_cpu_limit(**paths) is None
    assert dev.cgroup_cpu_limit(proc_self_cgroup=tmp_path / "missing") is None


def test_usable_cpus_takes_the_tighter_of_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(dev.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    monkeypatch.setattr(dev, "cgroup_cpu_limit", lambda: 1.5)
    assert dev.usable_cpus() == 2
    monkeypatch.setattr(dev, "cgroup_cpu_limit", lambda: 0.5)
    assert dev.usable_cpus() == 1
    monkeypatch.setattr(dev, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(dev.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert dev.usable_cpus() == 1


def test_configure_threads_caps_at_usable_cpus_and_respects_pins(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LABKIT_THREADS", raising=False)
        torch.set_num_threads(2)
        monkeypatch.setattr(dev, "usable_cpus", lambda: 1)
        assert dev.configure_threads() == 1 == torch.get_num_threads()
        monkeypatch.setattr(dev, "usable_cpus", lambda: 64)
        assert dev.configure_threads() == 1  # never more than PyTorch's own choice
        monkeypatch.setenv("LABKIT_THREADS", "2")
        assert dev.configure_threads() == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_describe_reports_usable_cpus(capsys):
    info = dev.describe("cpu")
    assert info["usable_cpus"] == dev.usable_cpus() and "usable_cpus" in capsys.readouterr().out


class _Clock:
    def __init__(self):
        self.wall, self.own, self.busy = 0.0, 0.0, 0.0


def _governed(monkeypatch, clock, max_threads=2):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LABKIT_THREADS", raising=False)
    monkeypatch.delenv("LABKIT_THREAD_POLICY", raising=False)
    monkeypatch.setattr(dev.time, "perf_counter", lambda: clock.wall)
    monkeypatch.setattr(dev.time, "process_time", lambda: clock.own)
    monkeypatch.setattr(dev, "_busy_cpu_seconds", lambda cpus: clock.busy)
    torch.set_num_threads(max_threads)
    return dev.ThreadGovernor(interval=2.0)


def test_governor_yields_a_cpu_to_a_busy_neighbour_and_takes_it_back(monkeypatch):
    before, clock = torch.get_num_threads(), _Clock()
    try:
        gov = _governed(monkeypatch, clock)
        assert gov.enabled and gov.max_threads == 2
        clock.wall, clock.own, clock.busy = 2.0, 4.0, 4.0  # alone: all the busy time is ours
        assert gov.update() == 2
        clock.wall, clock.own, clock.busy = 4.0, 6.0, 8.0  # another process kept one CPU busy
        assert gov.update() == 1
        clock.wall, clock.own, clock.busy = 4.5, 6.5, 9.5  # under the interval: no new measurement
        assert gov.update() == 1
        clock.wall, clock.own, clock.busy = 6.0, 8.0, 10.0  # the neighbour has gone quiet
        assert gov.update() == 2
        assert [n for _, n in gov.changes] == [1, 2]
        clock.wall, clock.own, clock.busy = 8.0, 9.0, 12.6  # 0.8 CPUs of others: counts as one
        assert gov.update() == 1
        gov.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_governor_is_off_when_threads_are_pinned_or_policy_fixed(monkeypatch):
    before, clock = torch.get_num_threads(), _Clock()
    try:
        _governed(monkeypatch, clock)
        monkeypatch.setenv("LABKIT_THREAD_POLICY", "fixed")
        assert not dev.ThreadGovernor().enabled
        monkeypatch.delenv("LABKIT_THREAD_POLICY")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        gov = dev.ThreadGovernor()
        clock.wall, clock.own, clock.busy = 5.0, 2.0, 10.0
        assert not gov.enabled and gov.update() == 2
    finally:
        torch.set_num_threads(before)


def test_peak_memory_sees_a_large_temporary_tensor():
    from labkit.perf import PeakMemory

    with PeakMemory() as small:
        torch.ones(10)
    with PeakMemory() as big:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x.add_(1)
        import time

        time.sleep(0.02)  # several samples while it lives
        del x
    assert big.peak_mib > 48 and big.peak_mib > small.peak_mib + 40


def test_measured_peaks_and_mfu_against_a_given_peak():
    flops = dev.measured_matmul_flops("cpu", n=256, repeats=2)
    bandwidth = dev.measured_bandwidth("cpu", mib=8, repeats=2)
    assert 1e8 < flops < 1e14 and 1e8 < bandwidth < 1e13
    meter = dev.Throughput(flops_per_token=6.0, device="cpu", peak=100.0)
    meter.tokens, meter.seconds = 10, 2.0  # 5 tokens/s x 6 FLOPs = 30 FLOP/s of a 100 FLOP/s peak
    assert meter.mfu == pytest.approx(0.3)
    assert dev.Throughput(flops_per_token=6.0, device="cpu").mfu is None  # a CPU has no data-sheet peak
