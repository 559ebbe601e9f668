"""How many cores this process may use: what sizes the recognizer pools and the node's call cap.

``os.cpu_count()`` is the host's; a container sees the host's count too. Two things narrow it:
the CPUs the process may run on (its affinity, a cpuset) and a CPU quota (cgroup v2 ``cpu.max``,
v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), which a container limited with ``--cpus 2``
has on a 64-core host. A quota of 1.5 CPUs counts as 2 (rounded up: the half core is still there
to use), and the narrowest of every limit on the cgroup's path up to the root applies.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cores(*, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """Cores this process may keep busy: its affinity, narrowed by any CPU quota; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cpu_quota(cgroup_root=cgroup_root, proc_cgroup=proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 1e-9)))
    return max(1, cores)


def cpu_quota(*, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (1.5 = one and a half), or None (no quota,
    or no cgroup file to read)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2: one unified hierarchy
            quotas += [q for d in _up_from(cgroup_root, path) if (q := _v2_quota(d)) is not None]
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own mount
            mount = next((m for m in (cgroup_root / controllers, cgroup_root / "cpu", cgroup_root / "cpu,cpuacct")
                          if m.is_dir()), None)
            if mount is not None:
                quotas += [q for d in _up_from(mount, path) if (q := _v1_quota(d)) is not None]
    return min(quotas) if quotas else None


def _up_from(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and its parents up to the mount. In a container with its own cgroup
    namespace the path reads "/" and the mount is the container's own cgroup."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    dirs = [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")  # "max 100000" (none) or "200000 100000" (2 CPUs)
    if not text:
        return None
    quota, _, period = text.partition(" ")
    try:
        return None if quota == "max" else int(quota) / int(period or "100000")
    except (ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or "-1"), int(period or "0")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None
