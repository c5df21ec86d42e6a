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


# many short intervals ---------------------------------------------------------------------------------------

def test_interval_clock_sums_intervals_on_cpu(clock):
    c = TP.IntervalClock("cpu")
    for dt in (1.0, 2.5):
        with c:
            clock["t"] += dt
        clock["t"] += 100.0  # between intervals: not counted
    assert c.seconds == 3.5 and c.count == 2 and clock["syncs"] == []


def test_interval_clock_uses_cuda_events_and_synchronises_once(clock, monkeypatch):
    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.t = None

        def record(self):
            self.t = clock["t"]

        def elapsed_time(self, end):  # milliseconds, as CUDA reports
            return 1000.0 * (end.t - self.t)

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    c = TP.IntervalClock("cuda")
    for dt in (0.25, 0.5, 1.0):
        with c:
            clock["t"] += dt
        clock["t"] += 7.0
    assert clock["syncs"] == []  # nothing stalls the device while intervals are recorded
    assert c.seconds == pytest.approx(1.75) and len(clock["syncs"]) == 1
    assert c.seconds == pytest.approx(1.75) and len(clock["syncs"]) == 1  # read again: already folded in


# FLOPs ------------------------------------------------------------------------------------------------------

def mlp_energy(d: int, h: int) -> torch.nn.Module:
    """E(x) = w₂ᵀ tanh(W₁x + b₁) + b₂: matmuls [B, d]×[d, h] and [B, h]×[h, 1]."""
    from harness.runner import seeded_init

    with seeded_init(0):
        return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, 1))


B, D, H = 5, 3, 7


def test_count_flops_forward_of_an_mlp_is_2_per_multiply_add():
    net = mlp_energy(D, H)
    with torch.no_grad():
        out, flops = TP.count_flops(lambda: net(torch.randn(B, D)))
    assert out.shape == (B, 1) and flops == 2 * B * H * (D + 1)


def test_count_flops_counts_the_input_gradient_of_an_energy():
    """An energy sampler's score: autograd.grad of E w.r.t. a leaf input, inside no_grad + enable_grad as the
    samplers run it. Backward through the two matmuls w.r.t. the input only: [B, 1]×[1, h] and [B, h]×[h, d], the
    same multiply-adds as the forward, so 4·B·h·(d + 1) in all (parameter gradients are not computed)."""
    net = mlp_energy(D, H)

    def score():
        with torch.enable_grad():
            x = torch.randn(B, D).requires_grad_(True)
            (g,) = torch.autograd.grad(net(x).sum(), x)
        return -g

    with torch.no_grad():
        s, flops = TP.count_flops(score)
    assert s.shape == (B, D) and flops == 4 * B * H * (D + 1)


def test_count_flops_counts_a_training_backward():
    """loss.backward() through the parameters: forward 2Bh(d+1), then ∂W₂ (2Bh), ∂h (2Bh) and ∂W₁ (2Bdh); the input
    needs no gradient."""
    net = mlp_energy(D, H)
    _, flops = TP.count_flops(lambda: net(torch.randn(B, D)).square().sum().backward())
    assert flops == 2 * B * H * (D + 1) + 2 * B * H + 2 * B * H + 2 * B * D * H


def _linear_method():
    from dataclasses import dataclass

    from harness.method import Method, MethodConfig, SampleResult, randn

    @dataclass
    class Cfg(MethodConfig):
        steps: int = 100

    class LinearSampler(Method):
        """steps evaluations of a bias-free Linear(4, 4): 2·4·4 = 32 FLOPs per evaluation per sample."""

        name, Config, sampler_length = "linear", Cfg, ("steps",)
        lengths: list[int] = []

        def build_model(self, backbone):
            return torch.nn.Linear(4, 4, bias=False)

        def loss(self, model, batch, generator):
            return batch.sum(1)

        def sample(self, model, n, generator):
            x = randn((n, 4), generator)
            for _ in range(self.config.steps):
                x = model(x)
            LinearSampler.lengths.append(self.config.steps)
            return SampleResult(x, self.config.steps)

    return LinearSampler


def test_sample_flops_measures_a_shortened_sampler_and_scales_back():
    cls = _linear_method()
    method = cls(cls.Config(steps=100), None)
    with torch.no_grad():
        got = TP.sample_flops(method, torch.nn.Linear(4, 4, bias=False), torch.Generator().manual_seed(0), 100)
    assert cls.lengths == [TP.SAMPLE_FLOPS_MAX_NFE]  # ran 8 steps on 2 samples, not 100
    assert got["sample_gflops_per_sample"] == pytest.approx(100 * 32 / 1e9)
    assert "FlopCounterMode" in got["flops_method"] and "scaled by 0.08" in got["flops_method"]
    # a sampler already short runs at full length
    cls.lengths.clear()
    got = TP.sample_flops(cls(cls.Config(steps=5), None), torch.nn.Linear(4, 4, bias=False),
                          torch.Generator().manual_seed(0), 5)
    assert cls.lengths == [5] and got["sample_gflops_per_sample"] == pytest.approx(5 * 32 / 1e9)


def test_sample_flops_records_a_failure_instead_of_raising():
    cls = _linear_method()
    broken = cls(cls.Config(steps=3), None)
    broken.sample = lambda model, n, g: (_ for _ in ()).throw(RuntimeError("boom"))
    got = TP.sample_flops(broken, torch.nn.Linear(4, 4), torch.Generator(), 3)
    assert got["sample_gflops_per_sample"] is None and "RuntimeError: boom" in got["flops_method"]
