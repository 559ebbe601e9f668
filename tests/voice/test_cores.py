"""The cores a node sizes its recognizers and its call cap by: affinity narrowed by a CPU quota.

The cgroup trees are written as the kernel lays them out (``/proc/self/cgroup`` lines, cgroup v2
``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), as a container runtime leaves them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.voice.asr.closed import MAX_CLOSED_WORKERS, closed_workers_for
from gateway.voice.cores import cpu_quota, usable_cores
from gateway.voice.pipeline import CALLS_PER_CORE, node_call_limit

AFFINITY = len(os.sched_getaffinity(0))


def tree(tmp_path: Path, proc: str, files: dict[str, str]) -> dict[str, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    root.mkdir(exist_ok=True)
    (tmp_path / "self-cgroup").write_text(proc)
    return {"cgroup_root": root, "proc_cgroup": tmp_path / "self-cgroup"}


def test_a_v2_quota_narrows_the_cores_rounded_up(tmp_path):
    where = tree(tmp_path, "0::/system.slice/docker-abc.scope\n",
                 {"system.slice/docker-abc.scope/cpu.max": "150000 100000", "system.slice/cpu.max": "max 100000"})
    assert cpu_quota(**where) == 1.5
    assert usable_cores(**where) == min(AFFINITY, 2)


def test_the_narrowest_limit_up_the_path_applies(tmp_path):
    where = tree(tmp_path, "0::/kubepods/pod1/ctr\n",
                 {"kubepods/pod1/ctr/cpu.max": "max 100000", "kubepods/pod1/cpu.max": "100000 100000",
                  "kubepods/cpu.max": "800000 100000"})
    assert cpu_quota(**where) == 1.0
    assert usable_cores(**where) == 1


def test_a_container_with_its_own_cgroup_namespace_reads_its_root(tmp_path):
    where = tree(tmp_path, "0::/\n", {"cpu.max": "50000 100000"})
    assert cpu_quota(**where) == 0.5 and usable_cores(**where) == 1


def test_v1_quota_and_no_quota(tmp_path):
    v1 = tree(tmp_path / "v1", "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n",
              {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000",
               "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"})
    assert cpu_quota(**v1) == 1.0 and usable_cores(**v1) == 1
    unlimited = tree(tmp_path / "free", "12:cpu,cpuacct:/\n",
                     {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert cpu_quota(**unlimited) is None and usable_cores(**unlimited) == AFFINITY
    garbled = tree(tmp_path / "bad", "0::/\n", {"cpu.max": "lots 0"})
    assert cpu_quota(**garbled) is None and usable_cores(**garbled) == AFFINITY
    assert usable_cores(cgroup_root=tmp_path / "none", proc_cgroup=tmp_path / "none" / "cgroup") == AFFINITY


def test_this_machine_and_what_is_sized_by_it():
    """The process's own cgroup as the kernel shows it: the cap and the closed-set pool follow."""
    quota = cpu_quota()
    expected = AFFINITY if quota is None else min(AFFINITY, max(1, -(-quota // 1)))
    assert usable_cores() == expected
    assert node_call_limit(0) == CALLS_PER_CORE * usable_cores()
    assert closed_workers_for(0) == min(usable_cores(), MAX_CLOSED_WORKERS)


def quota_cgroup(tmp_name: str) -> Path | None:
    """A fresh cgroup limited to one CPU by the kernel's own files, where this host lets us make one."""
    for parent, files in ((Path("/sys/fs/cgroup/cpu"), {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"}),
                          (Path("/sys/fs/cgroup"), {"cpu.max": "100000 100000"})):
        if not (parent / "cgroup.procs").exists() or not os.access(parent, os.W_OK):
            continue
        if parent.name == "cgroup" and "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
            continue
        group = parent / tmp_name
        try:
            group.mkdir()
            for name, value in files.items():
                (group / name).write_text(value)
        except OSError:
            if group.exists():
                group.rmdir()
            continue
        return group
    return None


def test_a_process_in_a_cgroup_with_a_one_cpu_quota_sizes_itself_by_one_core():
    """A real cgroup (root on a host whose cgroup fs is writable): a gateway process put in it
    counts one core, so its node takes a dozen calls and starts one closed-set worker."""
    group = quota_cgroup(f"voicegw-test-{os.getpid()}")
    if group is None:
        pytest.skip("no writable cgroup with the cpu controller here (needs root)")
    code = ("from gateway.voice.cores import usable_cores; from gateway.voice.pipeline import node_call_limit; "
            "from gateway.voice.asr.closed import closed_workers_for; "
            "print(usable_cores(), node_call_limit(0), closed_workers_for(0))")
    try:
        out = subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" -c "$1"', sys.executable, code],
                             capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    finally:
        group.rmdir()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", str(CALLS_PER_CORE), "1"]
