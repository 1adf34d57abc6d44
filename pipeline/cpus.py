"""How many CPUs this process may really use: affinity and the cgroup CPU quota, not just the core count."""

from __future__ import annotations

import math
import os
from pathlib import Path


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path | None = None) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us`` quota under ``root`` (default
    ``CGROUP_ROOT``); ``None`` when unlimited."""
    root = root or CGROUP_ROOT
    try:
        quota, period = (root / "cpu.max").read_text().split()
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> int:
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.floor(limit)))
    return max(1, count)


def threads_per_worker(workers: int, threads: int) -> int:
    """The explicit thread count, or an equal share of the usable CPUs (at least one)."""
    return threads if threads > 0 else max(1, usable_cpus() // workers)
