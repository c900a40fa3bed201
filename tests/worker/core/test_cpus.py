"""CPUs for torch threads come from the container's quota and the affinity mask, not the host's core count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.core.cpus import available_cpus, cgroup_cpu_limit


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a pod limited to 1.5 CPUs
    assert cgroup_cpu_limit(tmp_path) == pytest.approx(1.5)
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None and available_cpus(tmp_path) == _affinity()


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert cgroup_cpu_limit(tmp_path) is None
    (folder / "cpu.cfs_quota_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == pytest.approx(1.0) and available_cpus(tmp_path) == 1


def test_a_quota_above_the_affinity_mask_does_not_add_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text(f"{(_affinity() + 8) * 100000} 100000\n")
    assert available_cpus(tmp_path) == _affinity()
    assert available_cpus(tmp_path / "no-cgroup-here") == _affinity()  # no files: the affinity mask alone
