"""What every benchmark reports about the machine it ran on, and timing fences."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch

CPU = torch.device("cpu")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, p90) milliseconds of `fn` on the CPU after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def paired_ms(first: Callable[[], object], second: Callable[[], object], repeats: int,
              device: torch.device = CPU, warmup: int = 2
              ) -> tuple[list[float], list[float]]:
    """Milliseconds of `first` and of `second`, called in turn `repeats` times (which goes
    first swapped every round) after `warmup` rounds, so that a host slowing down or speeding
    up meanwhile weighs on both alike: compare them by the median of the paired differences."""
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(repeats):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            sync(device)
            t0 = time.perf_counter()
            (first, second)[i]()
            sync(device)
            times[i].append(1e3 * (time.perf_counter() - t0))
    return times
