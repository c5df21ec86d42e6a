"""Timing and memory helpers: synchronised wall-clock timers (warm-up excluded, and said so), rates, peak memory.

On CUDA, kernels run asynchronously: a timer that does not synchronise measures the launch, not the work. Every
timer here synchronises the device before reading the clock. The first `warmup` intervals of a `StepTimer` (allocator
and kernel-selection warm-up) are excluded from its rates; `as_dict` reports how many were excluded. `IntervalClock`
sums many short intervals with CUDA events (one synchronisation when read).

Compute is counted in FLOPs by ``torch.utils.flop_counter.FlopCounterMode`` (`count_flops`, `sample_flops`), beside
NFE: an energy model's evaluation (forward + input gradient) counts as one NFE but costs about twice the FLOPs.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


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


# many short intervals, timed without stalling the device ------------------------------------------------------

class IntervalClock:
    """Sums the durations of many short intervals (``with clock: ...``), e.g. every chain step apart from the
    readouts between them. On CUDA each interval is bracketed by CUDA events and the device is synchronised once,
    when `seconds` is read, so that timing does not serialise host and device; on CPU it is wall clock."""

    def __init__(self, device: torch.device | str | None = None):
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.device = device
        self.count = 0
        self._seconds = 0.0
        self._events: list[tuple[Any, Any]] = []

    def __enter__(self) -> IntervalClock:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.count += 1
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start, end))
        else:
            self._seconds += time.perf_counter() - self._t0

    @property
    def seconds(self) -> float:
        if self._events:
            synchronize(self.device)
            self._seconds += sum(a.elapsed_time(b) for a, b in self._events) / 1000.0
            self._events.clear()
        return self._seconds


# FLOPs ------------------------------------------------------------------------------------------------------

FLOPS_COUNTED = ("torch.utils.flop_counter.FlopCounterMode: matmuls, convolutions and attention, forward and "
                 "backward (input gradients of energy models included); elementwise operations are not counted")


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker, whose backward hooks make ``torch.autograd.grad`` with
    respect to a leaf input raise ("A leaf node was passed to _will_engine_execute_node", pytorch/pytorch#131753)
    — exactly what energy samplers do. Only the global total is needed here."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), floating-point operations it ran) counted by ``torch.utils.flop_counter.FlopCounterMode`` (no
    hand-written counts): every matmul, convolution and attention call, in the forward pass and in any backward
    pass run inside fn, including ``torch.autograd.grad`` with respect to inputs. A multiply-add counts 2."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        out = fn()
    return out, int(counter.get_total_flops())


SAMPLE_FLOPS_N = 2  # samples drawn under the counter
SAMPLE_FLOPS_MAX_NFE = 8  # the sampler is shortened to about this many evaluations where its length is a knob


def sample_flops(method, model: nn.Module, generator: torch.Generator, nfe_per_sample: int,
                 n: int = SAMPLE_FLOPS_N, max_nfe: int = SAMPLE_FLOPS_MAX_NFE) -> dict[str, Any]:
    """Sampling GFLOPs per sample, measured rather than assumed.

    The method's sampler draws `n` samples under `count_flops`, shortened by ``method.with_sampler_scaled(f)``,
    f = max_nfe / nfe_per_sample, where the method declares a sampler length (else at full length). The FLOPs of
    one evaluation for one sample are the count over the evaluations that ran (n × the NFE the shortened sampler
    reports, or ``info["total_nfe"]`` where a sampler states its whole cost, e.g. one long chain), so the value
    scales linearly back to the run's `nfe_per_sample`: exact when every evaluation of the sampler costs the same.
    Returns ``sample_gflops_per_sample`` (None when counting failed) and ``flops_method`` (how it was measured)."""
    factor, runner = 1.0, method
    scale = getattr(method, "with_sampler_scaled", None)
    if scale is not None and nfe_per_sample > max_nfe:
        scaled = scale(max_nfe / nfe_per_sample)
        if scaled is not None:
            factor, runner = max_nfe / nfe_per_sample, scaled
    try:
        res, flops = count_flops(lambda: runner.sample(model, n, generator))
    except Exception as exc:  # noqa: BLE001 - an op the counter cannot trace must not fail the run
        return {"sample_gflops_per_sample": None, "flops_method": f"FlopCounterMode failed: {type(exc).__name__}: "
                                                                  f"{exc}"}
    drawn = int(res.samples.shape[0])
    evals = int(res.info.get("total_nfe", drawn * res.nfe)) if isinstance(res.info, dict) else drawn * res.nfe
    per_eval = flops / evals if evals > 0 else float("nan")
    how = (f"{FLOPS_COUNTED}; {drawn} samples from the sampler scaled by {factor:.4g} ({res.nfe} NFE per sample, "
           f"{evals} evaluations, {flops} FLOPs), scaled linearly to the run's {nfe_per_sample} NFE per sample")
    return {"sample_gflops_per_sample": per_eval * nfe_per_sample / 1e9, "flops_method": how}


TRAIN_FLOPS_BATCH = 4  # examples under the counter; a training step's FLOPs are linear in the batch size


def train_flops(method, model: nn.Module, data: torch.Tensor, batch_size: int, generator: torch.Generator,
                n: int = TRAIN_FLOPS_BATCH) -> dict[str, Any]:
    """Training GFLOPs per optimiser step, measured rather than assumed: `method.loss` on `n` examples of `data`
    and its backward pass (the double backward of energy models' training included) run under `count_flops` on a
    copy of `model` (the run's weights, gradients and generators are untouched), scaled by batch_size / n. The
    optimiser's elementwise update is not counted (FlopCounterMode counts matmuls, convolutions and attention).
    Returns ``train_gflops_per_step`` (None when counting failed) and ``train_flops_method``."""
    import copy

    n = max(1, min(n, batch_size, data.shape[0]))
    idx = torch.randint(data.shape[0], (n,), generator=generator, device=generator.device)
    probe = copy.deepcopy(model)
    probe.train()

    def step():
        method.loss(probe, data[idx], generator).float().mean().backward()

    try:
        _, flops = count_flops(step)
    except Exception as exc:  # noqa: BLE001 - an op the counter cannot trace must not fail the run
        return {"train_gflops_per_step": None,
                "train_flops_method": f"FlopCounterMode failed: {type(exc).__name__}: {exc}"}
    how = (f"{FLOPS_COUNTED}; loss and backward on {n} examples ({flops} FLOPs), scaled linearly to the batch of "
           f"{batch_size}; the optimiser update is not counted")
    return {"train_gflops_per_step": flops / n * batch_size / 1e9, "train_flops_method": how}


# peak dense (no structured sparsity) tensor throughput in TFLOP/s by precision, from NVIDIA's data sheets:
# "NVIDIA H100 Tensor Core GPU" (H100 SXM5 and PCIe, 2023), "NVIDIA H200 Tensor Core GPU" (H200 SXM, 2024),
# "NVIDIA A100 Tensor Core GPU" (A100 SXM4 and PCIe, 2021). The data sheets print the sparse figures for bf16 and
# tf32; these are half of them. fp32 is the non-tensor-core peak.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200 SXM": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 SXM": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}
PEAK_SOURCE = "NVIDIA data sheets (H100 2023, H200 2024, A100 2021), dense peaks"


def device_peak_key(name: str) -> str | None:
    """The `PEAK_TFLOPS` entry of a CUDA device name (torch.cuda.get_device_name), or None when not in the table
    (H200 NVL and H100 NVL, whose peaks differ, are not guessed)."""
    up = name.upper()
    if "NVL" in up:
        return None
    if "H200" in up:
        return "H200 SXM"
    if "H100" in up:
        return "H100 PCIe" if "PCIE" in up else "H100 SXM"
    if "A100" in up:
        return "A100"
    return None


def training_compute(gflops_per_step: float | None, steps: int, steps_per_second: float | None,
                     device: torch.device | str, precision: str) -> dict[str, Any]:
    """Training compute of a run: total PFLOPs (hardware-independent), achieved TFLOP/s, and the model FLOPs
    utilisation (achieved / the device's peak for `precision`: bf16, tf32 or fp32) where the device's peak is known
    (`PEAK_TFLOPS`); else ``mfu`` is None and ``mfu_note`` says why."""
    out: dict[str, Any] = {"train_pflops": None, "train_tflops_per_second": None, "mfu": None, "mfu_note": ""}
    if gflops_per_step is None:
        out["mfu_note"] = "training FLOPs unknown"
        return out
    out["train_pflops"] = gflops_per_step * steps / 1e6
    if steps_per_second:
        out["train_tflops_per_second"] = gflops_per_step * steps_per_second / 1e3
    device = torch.device(device)
    if device.type != "cuda":
        out["mfu_note"] = f"no peak FLOP/s table for {device.type}"
        return out
    name = torch.cuda.get_device_name(device)
    key = device_peak_key(name)
    if key is None:
        out["mfu_note"] = f"no peak known for {name!r} (table: {', '.join(PEAK_TFLOPS)})"
        return out
    peak = PEAK_TFLOPS[key][precision]
    out["mfu_peak"] = {"device": name, "entry": key, "precision": precision, "tflops": peak, "source": PEAK_SOURCE}
    if out["train_tflops_per_second"] is not None:
        out["mfu"] = out["train_tflops_per_second"] / peak
    return out
