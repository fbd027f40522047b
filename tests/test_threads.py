"""labkit.threads: the cgroup CPU quota, the usable CPUs, thread settings and the governor that shares cores."""

import pytest
import torch

from labkit import threads


def _fake_cgroup(tmp_path, self_cgroup: str, files: dict[str, str]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc_self_cgroup").write_text(self_cgroup)
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    return dict(proc_self_cgroup=tmp_path / "proc_self_cgroup", cgroup_root=root)


class _Clock:
    def __init__(self):
        self.wall, self.own, self.busy = 0.0, 0.0, 0.0


def _governed(monkeypatch, clock, max_threads=2):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LABKIT_THREADS", raising=False)
    monkeypatch.delenv("LABKIT_THREAD_POLICY", raising=False)
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock.wall)
    monkeypatch.setattr(threads.time, "process_time", lambda: clock.own)
    monkeypatch.setattr(threads, "_busy_cpu_seconds", lambda cpus: clock.busy)
    torch.set_num_threads(max_threads)
    return threads.ThreadGovernor(interval=2.0)


def test_cgroup_v2_quota_in_own_group_and_parent(tmp_path):
    paths = _fake_cgroup(tmp_path, "0::/user.slice/lab\n",
                         {"user.slice/lab/cpu.max": "150000 100000\n", "user.slice/cpu.max": "max 100000\n"})
    assert threads.cgroup_cpu_limit(**paths) == pytest.approx(1.5)
    paths = _fake_cgroup(tmp_path / "b", "0::/user.slice/lab\n",
                         {"user.slice/lab/cpu.max": "max 100000\n", "user.slice/cpu.max": "100000 100000\n"})
    assert threads.cgroup_cpu_limit(**paths) == pytest.approx(1.0)  # the parent's limit binds


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    paths = _fake_cgroup(tmp_path, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
                         {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
                          "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpu_limit(**paths) == pytest.approx(2.0)
    paths = _fake_cgroup(tmp_path / "b", "3:cpu,cpuacct:/\n",
                         {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpu_limit(**paths) is None
    paths = _fake_cgroup(tmp_path / "c", "0::/\n", {"cpu.max": "max 100000\n"})
    assert threads.cgroup_cpu_limit(**paths) is None
    assert threads.cgroup_cpu_limit(proc_self_cgroup=tmp_path / "missing") is None


def test_usable_cpus_takes_the_tighter_of_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    assert threads.usable_cpus() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.usable_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert threads.usable_cpus() == 1


def test_configure_threads_caps_at_usable_cpus_and_respects_pins(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LABKIT_THREADS", raising=False)
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "usable_cpus", lambda: 1)
        assert threads.configure_threads() == 1 == torch.get_num_threads()
        monkeypatch.setattr(threads, "usable_cpus", lambda: 64)
        assert threads.configure_threads() == 1  # never more than PyTorch's own choice
        monkeypatch.setenv("LABKIT_THREADS", "2")
        assert threads.configure_threads() == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


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
        assert not threads.ThreadGovernor().enabled
        monkeypatch.delenv("LABKIT_THREAD_POLICY")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        gov = threads.ThreadGovernor()
        clock.wall, clock.own, clock.busy = 5.0, 2.0, 10.0
        assert not gov.enabled and gov.update() == 2
    finally:
        torch.set_num_threads(before)
