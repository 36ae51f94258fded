"""The CPUs this process can really use: its affinity, capped by its cgroup's CPU quota.

PyTorch sizes its intra-op thread pool from the CPUs the process may run on
(its affinity), not from the quota of its cgroup (cgroup v2 `cpu.max`, what
systemd's CPUQuota= writes; cgroup v1 `cpu.cfs_quota_us`). A unit limited to
one CPU's worth on a 4-core host then runs 4 threads that together use up the
quota early in each period and are throttled for the rest of it: every forward
pass waits for the next period. The budget here is what the service's thread
settings should be sized from, and cpu.stat's throttled periods say whether
they were.

Standard library only, no torch: it is read at start-up, before the torch import.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Iterator, Optional, Tuple

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"


def cpu_max_quota(text: Optional[str]) -> Optional[float]:
    """CPUs' worth of quota from cgroup v2 `cpu.max` ("50000 100000" -> 0.5), or
    None for no quota ("max 100000") and for a file that is missing (None) or
    unreadable: a limit that cannot be read is not applied."""
    if text is None:
        return None
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cfs_quota(quota_text: Optional[str], period_text: Optional[str]) -> Optional[float]:
    """The same from cgroup v1 (`cpu.cfs_quota_us`, `cpu.cfs_period_us`); -1 = no quota."""
    if quota_text is None or period_text is None:
        return None
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def budget_from_quota(affinity_count: int, quota_cpus: Optional[float]) -> int:
    """min(affinity, whole CPUs of quota), at least 1. Floor, not round: 1.5 CPUs
    of quota cannot keep 2 threads busy without throttling them."""
    budget = max(1, int(affinity_count))
    if quota_cpus is not None:
        budget = min(budget, math.floor(quota_cpus))
    return max(1, budget)


def cpu_budget(affinity_count: int, cpu_max_text: Optional[str]) -> int:
    """The CPU budget from the affinity count and cgroup v2 `cpu.max` text (None: no file)."""
    return budget_from_quota(affinity_count, cpu_max_quota(cpu_max_text))


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def own_cgroups(text: Optional[str]) -> Tuple[Optional[str], Dict[str, str]]:
    """From /proc/self/cgroup: (the cgroup v2 path or None, {v1 controller list: path}).

    Lines are "hierarchy-id:controllers:path"; v2's is "0::/system.slice/x.service",
    v1's are like "4:cpu,cpuacct:/system.slice/x.service". Both appear on a
    hybrid host, where the cpu controller is on v1."""
    v2, v1 = None, {}
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif controllers:
            v1[controllers] = path
    return v2, v1


def _up_to_root(root: str, path: str) -> Iterator[str]:
    """root/path, its parents, ..., root: every level whose limit applies to the process.
    Levels missing under root (a container that sees its own cgroup as the root while
    /proc/self/cgroup names the host's path) are skipped by the readers."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    for depth in range(len(parts), -1, -1):
        yield os.path.join(root, *parts[:depth])


def _tightest(levels, read_quota) -> Tuple[Optional[float], Optional[str]]:
    best, where = None, None
    for directory in levels:
        quota = read_quota(directory)
        if quota is not None and (best is None or quota < best):
            best, where = quota, directory
    return best, where


def read_budget(proc_self_cgroup: str = PROC_SELF_CGROUP, cgroup_root: str = CGROUP_ROOT,
                affinity: Optional[int] = None) -> dict:
    """This process's CPU budget and where it comes from:

    {"budget": int, "affinity": int, "quota_cpus": float or None (no quota found),
     "source": str (the file that set the quota, or why the affinity stands),
     "cpu_stat": the cpu.stat beside that quota (for throttled_share), or None}

    The tightest quota on the way from the process's cgroup up to the root counts:
    a parent's limit (a slice's CPUQuota=) applies to everything below it."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            affinity = os.cpu_count() or 1
    affinity = max(1, affinity)
    v2_path, v1_paths = own_cgroups(_read(proc_self_cgroup))
    found = []   # (quota, directory that set it, its quota file)
    if v2_path is not None:
        quota, where = _tightest(_up_to_root(cgroup_root, v2_path),
                                 lambda d: cpu_max_quota(_read(os.path.join(d, "cpu.max"))))
        if quota is not None:
            found.append((quota, where, "cpu.max"))
    for controllers, path in v1_paths.items():
        if "cpu" not in controllers.split(","):
            continue
        # Mounted under its controller list ("cpu,cpuacct"), usually with a "cpu" link too.
        mount = next((m for m in (os.path.join(cgroup_root, controllers),
                                  os.path.join(cgroup_root, "cpu")) if os.path.isdir(m)), None)
        if mount is None:
            continue
        quota, where = _tightest(_up_to_root(mount, path), lambda d: cfs_quota(
            _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))))
        if quota is not None:
            found.append((quota, where, "cpu.cfs_quota_us"))
    if not found:
        quota, source, cpu_stat = None, "affinity (no CPU quota in the process's cgroups)", None
    else:
        quota, where, name = min(found)
        # The throttling is counted where the quota is, not in the cgroups below it.
        source, cpu_stat = os.path.join(where, name), os.path.join(where, "cpu.stat")
    return {"budget": budget_from_quota(affinity, quota), "affinity": affinity,
            "quota_cpus": quota, "source": source, "cpu_stat": cpu_stat}


def _periods(text: Optional[str]) -> Optional[Tuple[int, int]]:
    values = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] in ("nr_periods", "nr_throttled"):
            try:
                values[fields[0]] = int(fields[1])
            except ValueError:
                return None
    if len(values) != 2:
        return None
    return values["nr_periods"], values["nr_throttled"]


def read_cpu_stat(path: Optional[str]) -> Optional[str]:
    """The text of read_budget()'s "cpu_stat" file, for throttled_share; None for no
    path (no quota) or a file that cannot be read."""
    return None if path is None else _read(path)


def throttled_share(cpu_stat_text_before: Optional[str],
                    cpu_stat_text_after: Optional[str]) -> Optional[float]:
    """Share of the quota periods between two reads of cpu.stat in which the cgroup was
    throttled (0.0 to 1.0), or None when it cannot tell: a read is missing or has no
    period counters (no quota set: the kernel counts no periods), no period passed,
    or the counters went backwards (not the same cgroup)."""
    before, after = _periods(cpu_stat_text_before), _periods(cpu_stat_text_after)
    if before is None or after is None:
        return None
    periods, throttled = after[0] - before[0], after[1] - before[1]
    if periods <= 0 or throttled < 0 or throttled > periods:
        return None
    return throttled / periods


def intra_op_threads(budget: int, workers: int, configured: int) -> int:
    """Intra-op threads per worker: a configured value (> 0) stands; otherwise the
    budget shared out, so that workers x threads <= budget (at least 1 each)."""
    if configured and configured > 0:
        return configured
    return max(1, budget // max(1, workers))
