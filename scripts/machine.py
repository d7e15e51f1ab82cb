"""Machine facts the benchmark scripts share: CPU model and features, and how busy the machine is.

The project's machines run other processes too; every script reports the share of the CPUs that
others used while it measured, so noisy numbers can be recognised.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Optional

CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def stat_sample() -> Optional[tuple[int, int]]:
    """(idle + iowait, total) jiffies of all CPUs from /proc/stat; None where unavailable."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return vals[3] + (vals[4] if len(vals) > 4 else 0), sum(vals)
    except (OSError, ValueError, IndexError):
        return None


def cpu_busy_fraction(seconds: float = 1.0) -> Optional[float]:
    """Fraction of all CPUs busy over ``seconds`` (other processes' load when we are idle)."""
    a = stat_sample()
    time.sleep(seconds)
    b = stat_sample()
    if a is None or b is None:
        return None
    return 1.0 - (b[0] - a[0]) / max(b[1] - a[1], 1)


def other_load(s0: Optional[tuple[int, int]], s1: Optional[tuple[int, int]],
               u0: resource.struct_rusage, u1: resource.struct_rusage) -> Optional[float]:
    """Share of the machine used by *other* processes between two ``stat_sample``s: all CPU time
    spent minus our children's (``RUSAGE_CHILDREN`` at both ends), over the capacity."""
    if s0 is None or s1 is None:
        return None
    tck = os.sysconf("SC_CLK_TCK")
    ours = sum(getattr(u1, k) - getattr(u0, k) for k in ("ru_utime", "ru_stime"))
    busy = ((s1[1] - s0[1]) - (s1[0] - s0[0])) / tck
    cap = (s1[1] - s0[1]) / tck
    return min(max((busy - ours) / max(cap, 1e-9), 0.0), 1.0)


def cpu_model_and_features() -> tuple[str, list[str]]:
    """The CPU's model name and which of ``CPU_FEATURES`` it lists."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or "unknown", sorted(f for f in CPU_FEATURES if f in flags)


def usable_cpus() -> Optional[int]:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
