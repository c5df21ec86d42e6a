"""Throughput helpers: timers on a fake clock (no wall-clock assertions), CUDA synchronisation, warm-up exclusion,
rates, and peak memory against an independent source (/proc/self/status)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from harness.metrics import throughput as TP


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter that advances by the queued amounts; records CUDA synchronisations."""
    state = {"t": 0.0, "syncs": []}

    def perf_counter():
        return state["t"]

    monkeypatch.setattr(TP.time, "perf_counter", perf_counter)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: state["syncs"].append(device))
    return state


def test_timer_measures_and_synchronises_cuda(clock):
    with TP.Timer("cuda") as t:
        clock["t"] += 1.25
    assert t.seconds == 1.25 and len(clock["syncs"]) == 2  # before starting and before stopping the clock
    with TP.Timer("cpu") as t:
        clock["t"] += 0.5
    assert t.seconds == 0.5 and len(clock["syncs"]) == 2  # no synchronisation on CPU


def test_step_timer_excludes_warmup(clock):
    st = TP.StepTimer(device="cpu", warmup=2)
    for dt in (10.0, 5.0, 1.0, 2.0, 3.0):  # first two are warm-up
        with st.time(items=4):
            clock["t"] += dt
    assert st.intervals == 5 and st.count == 3 and st.seconds == 6.0 and st.items == 12
    d = st.as_dict()
    assert d["steps_per_second"] == 0.5 and d["examples_per_second"] == 2.0 and d["warmup_excluded"] == 2
    assert TP.StepTimer(warmup=3).as_dict()["steps_per_second"] is None  # nothing timed yet


def test_rates():
    assert TP.rate(10, 4.0) == 2.5 and TP.rate(10, 0.0) is None
    assert TP.sampling_rates(100, 10, 2.0) == {"samples_per_second": 50.0, "nfe_per_second": 500.0}
    assert TP.training_rates(20, 64, 4.0) == {"steps_per_second": 5.0, "examples_per_second": 320.0}


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="needs Linux /proc")
def test_peak_rss_agrees_with_proc_status():
    got = TP.peak_memory("cpu")
    hwm_kib = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
    assert got["peak_memory_kind"].startswith("cpu peak RSS")
    assert abs(got["peak_memory_bytes"] - hwm_kib * 1024) <= 16 * 1024 * 1024  # same quantity, read a moment apart


def test_peak_memory_on_cuda_reads_max_allocated(monkeypatch):
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 123456)
    got = TP.peak_memory(torch.device("cuda"))
    assert got == {"peak_memory_bytes": 123456.0, "peak_memory_kind": "cuda max_memory_allocated"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_memory_on_a_real_gpu():
    dev = torch.device("cuda")
    TP.reset_peak_memory(dev)
    x = torch.empty(64 * 1024 * 1024, dtype=torch.uint8, device=dev)
    assert TP.peak_memory(dev)["peak_memory_bytes"] >= 64 * 1024 * 1024
    del x
