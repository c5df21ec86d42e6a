"""Timing and memory helpers: synchronised wall-clock timers (warm-up excluded, and said so), rates, peak memory.

On CUDA, kernels run asynchronously: a timer that does not synchronise measures the launch, not the work. Every
timer here synchronises the device before reading the clock. The first `warmup` intervals of a `StepTimer` (allocator
and kernel-selection warm-up) are excluded from its rates; `as_dict` reports how many were excluded.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass

import torch


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """``with Timer(device) as t: ...`` then ``t.seconds``; synchronises CUDA on entry and exit."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


@dataclass
class StepTimer:
    """Accumulates per-interval times, excluding the first `warmup` intervals from `seconds` and `count`."""

    device: torch.device | str | None = None
    warmup: int = 5
    intervals: int = 0  # all intervals, warm-up included
    count: int = 0  # intervals counted (after warm-up)
    seconds: float = 0.0  # time of the counted intervals
    items: int = 0  # items (examples, samples) processed in the counted intervals

    def time(self, items: int = 1) -> _Interval:
        return _Interval(self, items)

    def add(self, seconds: float, items: int = 1) -> None:
        self.intervals += 1
        if self.intervals > self.warmup:
            self.count += 1
            self.seconds += seconds
            self.items += items

    def as_dict(self, unit: str = "steps", item_unit: str = "examples") -> dict[str, float | int | None]:
        return {f"{unit}_per_second": rate(self.count, self.seconds),
                f"{item_unit}_per_second": rate(self.items, self.seconds),
                "timed_seconds": self.seconds, f"timed_{unit}": self.count, "warmup_excluded": min(
                    self.warmup, self.intervals)}


class _Interval:
    def __init__(self, timer: StepTimer, items: int):
        self.timer, self.items = timer, items

    def __enter__(self):
        synchronize(self.timer.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.timer.device)
        self.timer.add(time.perf_counter() - self._t0, self.items)


def rate(count: float, seconds: float) -> float | None:
    """count / seconds, or None when nothing was timed."""
    return count / seconds if seconds > 0 else None


def sampling_rates(n_samples: int, nfe_per_sample: int, seconds: float) -> dict[str, float | None]:
    """samples/s and network evaluations per second (NFE/s = n · NFE per sample / seconds)."""
    return {"samples_per_second": rate(n_samples, seconds),
            "nfe_per_second": rate(n_samples * nfe_per_sample, seconds)}


def training_rates(steps: int, batch_size: int, seconds: float) -> dict[str, float | None]:
    return {"steps_per_second": rate(steps, seconds), "examples_per_second": rate(steps * batch_size, seconds)}


def reset_peak_memory(device: torch.device | str | None) -> None:
    """Reset CUDA's peak counter (CPU peak RSS cannot be reset: it is the process's peak so far)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str | None) -> dict[str, float | str]:
    """Peak memory in bytes and what was measured: CUDA ``max_memory_allocated`` on GPU (since the last
    `reset_peak_memory`), else the process's peak resident set size from ``getrusage`` (KiB on Linux, bytes on
    macOS)."""
    if device is not None and torch.device(device).type == "cuda":
        return {"peak_memory_bytes": float(torch.cuda.max_memory_allocated(device)),
                "peak_memory_kind": "cuda max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_bytes": float(rss if sys.platform == "darwin" else rss * 1024),
            "peak_memory_kind": "cpu peak RSS (process)"}
